"""Embed images with an exported ONNX model (python3 -m tools.export) and onnxruntime alone.

    python3 -m tools.embed_onnx MODEL.onnx IMAGE_DIR --out OUT.npy [--batch_size 64] [--skip_bad_images]

Needs only onnxruntime, opencv-python and numpy (tqdm, when installed, draws a progress bar); it
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

from utils.errors import OneLineParser, UserError, first_line, run_command

# data.folder's (which imports MXNet through the data package); the tests check that they agree.
IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.ppm', '.pgm', '.tif', '.tiff', '.webp')
UNSUPPORTED_EXTENSIONS = ('.gif', '.svg', '.heic', '.heif', '.avif', '.jxl', '.jp2', '.ico', '.psd')
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


def warn(message):
    print('warning: %s' % message, file=sys.stderr, flush=True)


def list_images(image_dir, skip_bad_images=False):
    """Image paths under image_dir in tools.embed's order (data.folder's: folder by folder, by the
    folder's path components, file names sorted)."""
    if not os.path.isdir(image_dir):
        raise UserError('IMAGE_DIR %s is not a folder' % image_dir)
    folders, unsupported, seen = [], [], set()
    for folder, subdirs, files in os.walk(image_dir, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:    # a link back up the tree would otherwise walk forever
            subdirs[:] = []
            continue
        seen.add(real)
        subdirs[:] = [d for d in subdirs if not d.startswith('.')]
        names = sorted(f for f in files if not f.startswith('.'))
        images = [os.path.join(folder, n) for n in names if os.path.splitext(n)[1].lower() in IMAGE_EXTENSIONS]
        unsupported += [os.path.join(folder, n) for n in names
                        if os.path.splitext(n)[1].lower() in UNSUPPORTED_EXTENSIONS]
        rel = os.path.relpath(folder, image_dir)
        if images:
            folders.append((() if rel == os.curdir else tuple(rel.split(os.sep)), images))
    if unsupported:
        if not skip_bad_images:
            raise UserError('%s: image format not supported (supported: %s); convert or remove it, '
                            'or pass --skip_bad_images'
                            % (unsupported[0], ', '.join(e[1:] for e in IMAGE_EXTENSIONS)))
        warn('skipped %d image(s) of unsupported formats: %s%s'
             % (len(unsupported), ', '.join(unsupported[:3]), ', ...' if len(unsupported) > 3 else ''))
    paths = [path for _, images in sorted(folders) for path in images]
    if not paths:
        raise UserError('no images under %s' % image_dir)
    return paths


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
        image = cv2.imread(path, cv2.IMREAD_COLOR)
        if image is None:
            reason = 'file does not exist' if not os.path.isfile(path) else \
                'not a readable image file (corrupt or unsupported format)'
            raise UserError('cannot decode image %s: %s' % (path, reason))
        if self.rgb:
            image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
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


def progress(items):
    try:
        from tqdm import tqdm
    except ImportError:
        return items
    # The bar goes to stdout, as tools.embed's: stderr keeps only warnings and the one error line.
    return tqdm(items, desc='embedding', unit='img', file=sys.stdout, dynamic_ncols=True)


def embed_paths(session, preprocess, paths, batch_size=64, skip_bad_images=False):
    """(embeddings (N, d) float32, the N paths kept) of image files through the model."""
    name = session.get_inputs()[0].name
    feats, kept, bad, batch = [], [], [], []

    def flush():
        if batch:
            feats.append(session.run(None, {name: np.stack(batch)})[0])
            del batch[:]

    for path in progress(paths):
        try:
            batch.append(preprocess(path))
        except UserError as exc:
            if not skip_bad_images:
                raise UserError('%s; pass --skip_bad_images to leave such images out' % exc)
            bad.append(path)
            continue
        kept.append(path)
        if len(batch) == batch_size:
            flush()
    flush()
    if bad:
        warn('skipped %d image(s) that cannot be decoded: %s%s'
             % (len(bad), ', '.join(bad[:3]), ', ...' if len(bad) > 3 else ''))
    if not kept:
        raise UserError('none of the %d images could be decoded' % len(paths))
    return np.concatenate(feats).astype(np.float32), kept


def write_atomic(path, write):
    """write(file object) into a temporary file beside path, fsynced, then renamed to path."""
    tmp = os.path.join(os.path.dirname(path) or '.', '.tmp-%s-%d' % (os.path.basename(path), os.getpid()))
    try:
        with open(tmp, 'wb') as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        raise UserError('--out: cannot write %s (%s)' % (path, exc.strerror or exc))
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def run(argv=None):
    args = build_parser().parse_args(argv)
    if args.batch_size < 1:
        raise UserError('--batch_size must be positive, got %d' % args.batch_size)
    if not args.out.endswith('.npy'):
        raise UserError('--out must name a .npy file, got %s' % args.out)
    folder = os.path.dirname(args.out) or '.'
    if not os.path.isdir(folder):
        raise UserError('--out: no such folder: %s' % folder)
    if not os.access(folder, os.W_OK):
        raise UserError('--out: folder %s is not writable' % folder)
    session, preprocess = load_session(args.model)
    paths = list_images(args.image_dir, args.skip_bad_images)
    emb, kept = embed_paths(session, preprocess, paths, args.batch_size, args.skip_bad_images)
    listing = args.out[:-len('.npy')] + '.txt'
    write_atomic(args.out, lambda f: np.save(f, emb))
    write_atomic(listing, lambda f: f.write(b''.join(os.fsencode(path) + b'\n' for path in kept)))
    print('%d images -> %s %s, %s' % (len(kept), args.out, emb.shape, listing))
    return emb, kept


if __name__ == '__main__':
    # run() returns its results (for tests and callers), not an exit status: drop them.
    sys.exit(run_command(lambda argv: run(argv) and 0))
