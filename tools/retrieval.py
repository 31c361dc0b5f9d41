"""A picture of retrieval: a few test queries (rows) and their K nearest neighbours.

    python3 -m tools.retrieval RUN_DIR --out grid.png [--queries 6] [--k 5] [--seed 0]

Reads the run's saved test embeddings (main.py --save_embeddings: RUN_DIR/embeddings) and the
data set's own images (the run's --data_name and --data_dir; digits are bundled).  Each row is one
query (grey frame) followed by its K nearest test items by Euclidean distance, the query itself
left out, each framed green when it has the query's class and red when not.  In-Shop: queries
from the query split, neighbours from the gallery.
"""
import argparse
import os
import sys

import numpy as np

import utils.mxnet_compat  # noqa: F401  (first: MXNet 1.9.1's numpy names on Python 3.12+, the CUDA wheels' libraries)
from utils.errors import OneLineParser, UserError, run_command

GREEN, RED, GREY = (40, 170, 40), (210, 30, 30), (150, 150, 150)


def build_parser():
    p = OneLineParser(prog='python3 -m tools.retrieval', description=__doc__,
                      formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('run_dir', help='a main.py --save_dir run with --save_embeddings')
    p.add_argument('--out', required=True, help='the picture to write (.png or .jpg)')
    p.add_argument('--queries', type=int, default=6, help='rows: queries drawn at random')
    p.add_argument('--k', type=int, default=5, help='neighbours per query')
    p.add_argument('--seed', type=int, default=0, help='seed of the choice of queries')
    p.add_argument('--tile', type=int, default=96, help='side of each image in pixels')
    p.add_argument('--data_dir', default=None, help='where the data set is now (default: the run\'s)')
    p.add_argument('--debug', action='store_true', help='show the traceback of input errors')
    return p


def nearest(queries, database, k, self_cols=None):
    """(m, k) indices of the k nearest database rows (squared Euclidean) of each query row,
    nearest first (ties: lower index first).

    queries (m, d), database (n, d); self_cols: (m,) database row of each query to leave out."""
    from metrics.query_expansion import top_k_rows
    score = (2.0 * np.dot(queries, database.T)
             - np.einsum('ij,ij->i', database, database)[None, :]).astype(np.float32)
    top = top_k_rows(score, k, self_cols)
    # top_k_rows returns each row's k in no particular order: sort them for the picture.
    order = np.lexsort((top, -np.take_along_axis(score, top, axis=1)), axis=1)
    return np.take_along_axis(top, order, axis=1)


def tile(image, side, colour, border):
    """HxWx3 uint8 -> side x side x 3 with a ``border``-pixel frame of ``colour``."""
    import cv2
    inner = side - 2 * border
    # Nearest for tiny images (digits are 8x8) keeps their pixels sharp; area for photographs.
    small = max(image.shape[:2]) < inner
    image = cv2.resize(image, (inner, inner), interpolation=cv2.INTER_NEAREST if small else cv2.INTER_AREA)
    out = np.empty((side, side, 3), dtype=np.uint8)
    out[:] = colour
    out[border:side - border, border:side - border] = image
    return out


def grid(rows, side):
    """rows of [(image, colour)] -> one uint8 RGB picture, 4-pixel gaps, query column set apart."""
    gap, border = 4, max(2, side // 24)
    n_cols = max(len(r) for r in rows)
    h = len(rows) * (side + gap) + gap
    w = n_cols * (side + gap) + 3 * gap
    canvas = np.full((h, w, 3), 255, dtype=np.uint8)
    for i, row in enumerate(rows):
        for j, (image, colour) in enumerate(row):
            y = gap + i * (side + gap)
            x = gap + j * (side + gap) + (2 * gap if j else 0)
            canvas[y:y + side, x:x + side] = tile(image, side, colour, border)
    return canvas


def _load_saved(folder, name):
    from tools.evaluate import _load
    emb = _load(os.path.join(folder, '%s_embeddings.npy' % name), 'embeddings', 2)
    labels = _load(os.path.join(folder, '%s_labels.npy' % name), 'labels', 1)
    return emb.astype(np.float32), labels


def _image(source):
    from data.image_file import read_rgb
    return source if isinstance(source, np.ndarray) else read_rgb(source)


def run(argv=None):
    args = build_parser().parse_args(argv)
    from data import get_dataset
    from tools.run import run_args
    if args.queries < 1 or args.k < 1 or not 8 <= args.tile <= 1024:
        raise UserError('--queries and --k must be positive and --tile in [8, 1024]')
    if not 0 <= args.seed < 2 ** 32:
        raise UserError('--seed must be in [0, 2^32), got %d' % args.seed)
    if os.path.splitext(args.out)[1].lower() not in ('.png', '.jpg', '.jpeg'):
        raise UserError('--out %s: expected a .png or .jpg file name' % args.out)
    conf = run_args(args.run_dir)
    from data.image_file import set_max_pixels
    set_max_pixels(conf.max_image_pixels)
    folder = os.path.join(args.run_dir, 'embeddings')
    query_gallery = os.path.isfile(os.path.join(folder, 'query_embeddings.npy'))
    if not query_gallery and not os.path.isfile(os.path.join(folder, 'test_embeddings.npy')):
        raise UserError('%s has no saved test embeddings (train with --save_embeddings)' % folder)
    splits = get_dataset(conf.data_name, args.data_dir or conf.data_dir,
                         train_class_ratio=conf.train_class_ratio)
    if query_gallery:
        (q, ql), (g, gl) = _load_saved(folder, 'query'), _load_saved(folder, 'gallery')
        q_items, g_items = splits.query, splits.gallery
    else:
        q, ql = g, gl = _load_saved(folder, 'test')
        q_items = g_items = splits.test
    for items, labels, name in ((q_items, ql, 'query'), (g_items, gl, 'gallery')):
        # Labels are compared up to a relabelling: the order of items must be the run's.
        if len(items) != len(labels) or not _same_partition([l for _, l in items], labels):
            raise UserError('the saved %s embeddings (%d) do not match the data set\'s %d images in '
                            '%s (images skipped at training, or another data set?)'
                            % (name, len(labels), len(items), args.data_dir or conf.data_dir))
    rng = np.random.RandomState(args.seed)
    picks = np.sort(rng.choice(len(q), min(args.queries, len(q)), replace=False))
    k = min(args.k, len(g) - (0 if query_gallery else 1))
    nn = nearest(q[picks], g, k, None if query_gallery else picks)
    rows = []
    for i, row in zip(picks, nn):
        rows.append([(_image(q_items[i][0]), GREY)] +
                    [(_image(g_items[j][0]), GREEN if gl[j] == ql[i] else RED) for j in row])
    picture = grid(rows, args.tile)
    import cv2
    if not cv2.imwrite(args.out, picture[:, :, ::-1].copy()):
        raise UserError('--out: cannot write %s (a .png or .jpg path in a writable folder)' % args.out)
    hits = sum(c == GREEN for r in rows for _, c in r[1:])
    print('wrote %s: %d queries x %d neighbours, %d of the same class' % (args.out, len(rows), k, hits))
    return picture, picks, nn


def _same_partition(a, b):
    """Whether two label sequences group the items alike (labels may differ by a relabelling)."""
    a, b = np.asarray(a), np.asarray(b)
    pairs = np.unique(np.stack([a, b], axis=1), axis=0)
    return len(pairs) == len(np.unique(a)) == len(np.unique(b))


if __name__ == '__main__':
    # run() returns its results (for tests and callers), not an exit status: drop them.
    sys.exit(run_command(lambda argv: run(argv) and 0))
