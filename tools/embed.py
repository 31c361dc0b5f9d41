"""Embed new images with a trained run's own model.

    python3 -m tools.embed RUN_DIR IMAGE_DIR --out OUT.npy [--params FILE] [--skip_bad_images]

Every image under IMAGE_DIR (recursively, symbolic links followed, hidden files skipped) goes through
the run's test transform (resize to --image_size, ImageNet normalisation) and model.  Images are
ordered folder by folder, file names sorted within a folder: the order in which ``--data_name
folder`` lists them, so the test classes of a folder run come out as its --save_embeddings.
Writes OUT.npy, (N, embed_dim) float32 unit rows, and OUT.txt, the N image paths in the same order.
A bad image stops with one line ``error: ...`` naming it, unless --skip_bad_images.
"""
import os
import sys

import numpy as np

import utils.mxnet_compat  # noqa: F401  (first: MXNet 1.9.1's numpy names on Python 3.12+, the CUDA wheels' libraries)
from tools.run import load_model, run_parser
from utils.atomic import atomic_file
from utils.errors import UserError, run_command, warn


def build_parser():
    p = run_parser('python3 -m tools.embed', __doc__,
                   [('image_dir', 'folder of images, searched recursively')])
    p.add_argument('--out', required=True, help='embeddings .npy to write; the paths go to .txt beside it')
    p.add_argument('--batch_size', type=int, default=64, help='images per forward pass')
    p.add_argument('--ctx', default=None, help='cpu (default) | gpu:0')
    p.add_argument('--skip_bad_images', action='store_true',
                   help='leave out images that cannot be decoded (with a warning) instead of stopping')
    p.add_argument('--max_image_pixels', type=int, default=None,
                   help='refuse images of more pixels by their header (default: the run\'s)')
    return p


def list_images(image_dir, skip_bad_images=False):
    """Image paths under image_dir in data.folder's order (folder by folder, names sorted)."""
    from data.folder import find_class_folders
    if not os.path.isdir(image_dir):
        raise UserError('IMAGE_DIR %s is not a folder' % image_dir)
    paths = [path for _, images in find_class_folders(image_dir, skip_bad_images) for path in images]
    if not paths:
        raise UserError('no images under %s' % image_dir)
    broken = next((path for path in paths if '\n' in path or '\r' in path), None)
    if broken is not None:      # OUT.txt holds one path per line
        raise UserError('%r: a file name with a line break cannot be listed in --out\'s .txt (one path a line); '
                        'rename it' % broken)
    return paths


def embed_images(paths, load, forward, batch_size=64, skip_bad_images=False):
    """(embeddings (N, d) float32, the N paths kept) of image files, in batches, with a progress bar.

    load(path) -> (3, S, S) float32 model input, raising UserError naming a bad image;
    forward((B, 3, S, S) float32) -> (B, d) numpy embeddings. Shared by tools.embed (MXNet) and
    tools.embed_onnx (onnxruntime), so that both skip, warn and fail alike.
    """
    feats, kept, bad, batch = [], [], [], []

    def flush():
        if batch:
            feats.append(forward(np.stack(batch)))
            del batch[:]

    for path in _progress(paths):
        try:
            batch.append(load(path))
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


def _progress(items):
    try:
        from tqdm import tqdm
    except ImportError:     # tools.embed_onnx needs only onnxruntime, opencv-python and numpy
        return items
    # The bar goes to stdout, as main.py's: stderr keeps only warnings and the one error line.
    return tqdm(items, desc='embedding', unit='img', file=sys.stdout, dynamic_ncols=True)


def check_out(out):
    """--out names a .npy file in an existing, writable folder; returns OUT.txt, the listing's name."""
    if not out.endswith('.npy'):
        raise UserError('--out must name a .npy file, got %s' % out)
    folder = os.path.dirname(out) or '.'
    if not os.path.isdir(folder):
        raise UserError('--out: no such folder: %s' % folder)
    if not os.access(folder, os.W_OK):
        raise UserError('--out: folder %s is not writable' % folder)
    return out[:-len('.npy')] + '.txt'


def write_outputs(out, emb, kept):
    """OUT.npy (the embeddings) and OUT.txt (one path a line), each written atomically."""
    listing = out[:-len('.npy')] + '.txt'
    for path, write in ((out, lambda f: np.save(f, emb)),
                        # a name that is not valid UTF-8 is listed as its bytes on disk, so it opens as listed
                        (listing, lambda f: f.write(b''.join(os.fsencode(p) + b'\n' for p in kept)))):
        try:
            with atomic_file(path) as f:
                write(f)
        except OSError as exc:
            raise UserError('--out: cannot write %s (%s)' % (path, exc.strerror)) from exc
    print('%d images -> %s %s, %s' % (len(kept), out, emb.shape, listing))


def run(argv=None):
    args = build_parser().parse_args(argv)
    import mxnet as mx

    from data.image_file import read_rgb, set_max_pixels
    from data.transforms import test_transform
    from runner.devices import parse_contexts
    if args.batch_size < 1 or (args.max_image_pixels is not None and args.max_image_pixels < 1):
        raise UserError('--batch_size and --max_image_pixels must be positive, got %d and %s'
                        % (args.batch_size, args.max_image_pixels))
    check_out(args.out)
    ctx = parse_contexts(args.ctx)
    run_args, net = load_model(args.run_dir, args.params, ctx)
    set_max_pixels(args.max_image_pixels or run_args.max_image_pixels)
    transform = test_transform(run_args.image_size)
    paths = list_images(args.image_dir, args.skip_bad_images)
    emb, kept = embed_images(paths, lambda path: transform(read_rgb(path)),
                             lambda x: net(mx.nd.array(x, ctx=ctx[0])).asnumpy(), args.batch_size,
                             args.skip_bad_images)
    write_outputs(args.out, emb, kept)
    return emb, kept


if __name__ == '__main__':
    # run() returns its results (for tests and callers), not an exit status: drop them.
    sys.exit(run_command(lambda argv: run(argv) and 0))
