"""Embed images with an exported ONNX model (python3 -m tools.export) and onnxruntime alone.

    python3 -m tools.embed_onnx MODEL.onnx IMAGE_DIR --out OUT.npy [--batch_size 64] [--skip_bad_images]

Needs only onnxruntime, opencv-python, numpy and Pillow (tqdm, when installed, draws a progress bar); it
imports neither MXNet nor anything of the project that does. The preprocessing is read from the
model's metadata (input size, channel order, OpenCV bilinear resize, scale, mean, std), the test
transform's. Images are listed as tools.embed lists them (recursively, symbolic links followed,
hidden files skipped, folder by folder, names sorted), and the outputs are the same: OUT.npy,
(N, embedding_size) float32 unit rows, and OUT.txt, the N image paths in the same order.
A bad image stops with one line ``error: ...`` naming it, unless --skip_bad_images.
"""
import argparse
import os
import sys
from fractions import Fraction

import cv2
import numpy as np

from data.image_file import read_rgb
from tools.embed import check_out, embed_images, list_images, write_outputs
from utils.errors import OneLineParser, UserError, first_line, run_command

METADATA = ('input_size', 'channel_order', 'resize', 'scale', 'mean', 'std', 'embedding_size')


def build_parser():
    p = OneLineParser(prog='python3 -m tools.embed_onnx', description=__doc__,
                      formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('model', help='an ONNX model written by python3 -m tools.export')
    p.add_argument('image_dir', help='folder of images, searched recursively')
    p.add_argument('--out', required=True, help='embeddings .npy to write; the paths go to .txt beside it')
    p.add_argument('--batch_size', type=int, default=64, help='images per forward pass')
    p.add_argument('--skip_bad_images', action='store_true',
                   help='leave out images that cannot be decoded (with a warning) instead of stopping')
    p.add_argument('--debug', action='store_true', help='show the traceback of input errors')
    return p


class Preprocess:
    """An image file -> (3, S, S) float32 model input, as the model's metadata says (the test
    transform: decode, to RGB, resize with OpenCV's bilinear, x * scale, (x - mean) / std)."""

    def __init__(self, metadata, model):
        missing = [key for key in METADATA if key not in metadata]
        if missing:
            raise UserError('%s has no preprocessing metadata (%s): export it with python3 -m tools.export'
                            % (model, ', '.join(missing)))
        try:
            self.size = int(metadata['input_size'])
            scale = Fraction(metadata['scale'])
            mean = np.array(metadata['mean'].split(','), dtype=np.float32)
            std = np.array(metadata['std'].split(','), dtype=np.float32)
        except ValueError as exc:
            raise UserError('%s: unreadable preprocessing metadata (%s)' % (model, exc))
        if metadata['resize'] != 'cv2.INTER_LINEAR' or metadata['channel_order'] not in ('RGB', 'BGR'):
            raise UserError('%s: unsupported preprocessing resize=%s channel_order=%s'
                            % (model, metadata['resize'], metadata['channel_order']))
        self.rgb = metadata['channel_order'] == 'RGB'
        # A look-up table per channel of the float32 formula's value for every uint8 level: the
        # same operations in the same order as data.transforms, so the same bits.
        levels = (np.arange(256, dtype=np.float32) * np.float32(scale.numerator)
                  / np.float32(scale.denominator))
        self.levels = np.ascontiguousarray(((levels[:, None] - mean) / std).T)

    def __call__(self, path):
        image = read_rgb(path)      # as training reads it: header checks first, any file name
        if not self.rgb:
            image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
        image = cv2.resize(image, (self.size, self.size), interpolation=cv2.INTER_LINEAR)
        return np.stack([cv2.LUT(plane, self.levels[c]) for c, plane in enumerate(cv2.split(image))])


def load_session(model):
    """(onnxruntime InferenceSession, Preprocess) of the model file."""
    import onnxruntime
    if not os.path.isfile(model):
        raise UserError('MODEL: no such file: %s' % model)
    try:
        session = onnxruntime.InferenceSession(model, providers=['CPUExecutionProvider'])
    except Exception as exc:    # onnxruntime's errors have no common base but Exception
        raise UserError('%s is not an ONNX model onnxruntime can load (%s)' % (model, first_line(exc)))
    return session, Preprocess(session.get_modelmeta().custom_metadata_map, model)


def run(argv=None):
    args = build_parser().parse_args(argv)
    if args.batch_size < 1:
        raise UserError('--batch_size must be positive, got %d' % args.batch_size)
    check_out(args.out)
    session, preprocess = load_session(args.model)
    name = session.get_inputs()[0].name
    paths = list_images(args.image_dir, args.skip_bad_images)
    emb, kept = embed_images(paths, preprocess, lambda x: session.run(None, {name: x})[0], args.batch_size,
                             args.skip_bad_images)
    write_outputs(args.out, emb, kept)
    return emb, kept


if __name__ == '__main__':
    # run() returns its results (for tests and callers), not an exit status: drop them.
    sys.exit(run_command(lambda argv: run(argv) and 0))
