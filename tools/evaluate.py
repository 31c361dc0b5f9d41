"""Evaluate saved embeddings from the command line.

Self-retrieval (every item queries all others) plus clustering:
    python3 -m tools.evaluate --embeddings E.npy --labels L.npy --recallk 1,10,100,1000 \\
        --metrics recall,map_at_r,r_precision,nmi,f1 --json OUT.json
Queries against a separate gallery (In-Shop):
    python3 -m tools.evaluate --query_embeddings QE.npy --query_labels QL.npy \\
        --gallery_embeddings GE.npy --gallery_labels GL.npy --recallk 1,10,20,30,40,50

With ``--qe K`` and/or ``--dba K`` (metrics.query_expansion) the retrieval metrics are computed again
on the expanded embeddings and printed under their own names, e.g. ``R@1_qe_dba``.

Prints one metric per line (percent) and optionally writes the raw fractions as JSON.  Bad input
is reported as one line ``error: ...`` on stderr with exit status 2. Flags are spelled with
underscores, as every command's; the hyphen spellings are accepted too.
"""
import argparse
import json
import os
import sys

import numpy as np

import utils.mxnet_compat  # noqa: F401  (first: MXNet 1.9.1's numpy names on Python 3.12+, the CUDA wheels' libraries)
from metrics.evaluation import METRICS, evaluate, evaluate_query_gallery
from metrics.query_expansion import evaluate_expanded
from utils.errors import OneLineParser, UserError, run_command


def _parse_recallk(text):
    try:
        ks = [int(k) for k in text.split(',')]
    except ValueError:
        ks = []
    if not ks or any(k < 1 for k in ks):
        raise UserError('--recallk must be a comma-separated list of positive integers, got %r'
                        % text)
    return ks


def _parse_metrics(text, allowed, flag_context):
    metrics = [m for m in text.split(',') if m]
    bad = [m for m in metrics if m not in allowed]
    if bad or not metrics:
        raise UserError('--metrics: %s; choose from %s%s'
                        % ('unknown %s' % ','.join(bad) if bad else 'empty list',
                           ','.join(allowed), flag_context))
    return metrics


def _check_npy_header(path):
    """ValueError unless ``path`` is a .npy file whose header's shape and dtype fit in the bytes it
    holds: np.load would allocate what a 200-byte header claims (10^12 rows) before reading."""
    from numpy.lib import format as npy
    with open(path, 'rb') as f:
        if f.read(6) != npy.MAGIC_PREFIX:
            raise ValueError('not a .npy file%s' % (' (a .npz archive: give each array as a .npy file)'
                                                   if path.endswith('.npz') else ''))
        f.seek(0)
        version = npy.read_magic(f)
        if version not in ((1, 0), (2, 0)):
            raise ValueError('.npy format version %d.%d is not read' % version)
        read = npy.read_array_header_1_0 if version == (1, 0) else npy.read_array_header_2_0
        shape, _, dtype = read(f)
        if dtype.hasobject:
            raise ValueError('it holds Python objects, not numbers')
        claimed = int(np.prod(shape, dtype=object)) * dtype.itemsize
        if claimed != os.path.getsize(path) - f.tell():
            raise ValueError('its header claims %s %s values (%d bytes) but it holds %d bytes'
                             % (shape, dtype, claimed, os.path.getsize(path) - f.tell()))


def _load(path, flag, ndim):
    """Load an .npy file given with ``flag`` and check its number of dimensions."""
    if not os.path.isfile(path):
        raise UserError('%s: no such file: %s' % (flag, path))
    try:
        _check_npy_header(path)
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise UserError('%s: cannot read %s as a .npy array (%s)' % (flag, path, exc))
    if arr.ndim != ndim:
        raise UserError('%s: %s must be a %d-d array, got shape %s'
                        % (flag, path, ndim, arr.shape))
    if ndim == 1 and not np.issubdtype(arr.dtype, np.integer):
        raise UserError('%s: %s must hold integer labels, got dtype %s' % (flag, path, arr.dtype))
    if ndim == 2 and not np.issubdtype(arr.dtype, np.number):
        raise UserError('%s: %s must hold numbers, got dtype %s' % (flag, path, arr.dtype))
    return arr


def _same_rows(emb, emb_flag, labels, labels_flag):
    if emb.shape[0] != labels.shape[0]:
        raise UserError('%s has %d rows but %s has %d labels'
                        % (emb_flag, emb.shape[0], labels_flag, labels.shape[0]))


def build_parser():
    parser = OneLineParser(prog='python3 -m tools.evaluate', description=__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--embeddings', help='(n, d) .npy embeddings for self-retrieval')
    parser.add_argument('--labels', help='(n,) .npy integer labels')
    parser.add_argument('--query_embeddings', help='(m, d) .npy query embeddings')
    parser.add_argument('--query_labels', help='(m,) .npy query labels')
    parser.add_argument('--gallery_embeddings', help='(n, d) .npy gallery embeddings')
    parser.add_argument('--gallery_labels', help='(n,) .npy gallery labels')
    parser.add_argument('--recallk', default='1,2,4,8', help='comma-separated K for Recall@K')
    parser.add_argument('--metrics', default=None,
                        help='comma-separated subset of %s (default: recall,nmi; query/gallery: '
                             'recall)' % ','.join(METRICS))
    parser.add_argument('--seed', type=int, default=0, help='k-means seed')
    parser.add_argument('--block_size', type=int, default=None,
                        help='query rows per block (default: about 64 MB of scores)')
    parser.add_argument('--qe', type=int, default=0,
                        help='also evaluate with average query expansion over K neighbours')
    parser.add_argument('--dba', type=int, default=0,
                        help='also evaluate with database augmentation over K neighbours')
    parser.add_argument('--json', help='write the metrics (fractions) to this JSON file')
    return parser


def run(argv=None):
    """Parse ``argv``, evaluate, print the table; returns the metrics dict."""
    args = build_parser().parse_args(argv)
    recallk = _parse_recallk(args.recallk)
    if args.block_size is not None and args.block_size < 1:
        raise UserError('--block_size must be a positive integer, got %d' % args.block_size)
    if not 0 <= args.seed < 2 ** 32:
        raise UserError('--seed must be in [0, 2^32), got %d' % args.seed)
    if args.qe < 0 or args.dba < 0:
        raise UserError('--qe and --dba must be >= 0 (0: off), got %d and %d' % (args.qe, args.dba))
    expand = dict(qe=args.qe, dba=args.dba, recallk=recallk, block_size=args.block_size)
    qg_flags = [args.query_embeddings, args.query_labels, args.gallery_embeddings,
                args.gallery_labels]
    if any(f is not None for f in qg_flags):
        if args.embeddings is not None or args.labels is not None:
            raise UserError('give either --embeddings/--labels or the four --query_*/--gallery_* '
                            'flags, not both')
        if any(f is None for f in qg_flags):
            raise UserError('query/gallery mode needs all of --query_embeddings, --query_labels, '
                            '--gallery_embeddings, --gallery_labels')
        metrics = _parse_metrics(args.metrics or 'recall', METRICS[:3],
                                 ' (clustering metrics need --embeddings/--labels)')
        qe = _load(args.query_embeddings, '--query_embeddings', 2)
        ql = _load(args.query_labels, '--query_labels', 1)
        ge = _load(args.gallery_embeddings, '--gallery_embeddings', 2)
        gl = _load(args.gallery_labels, '--gallery_labels', 1)
        _same_rows(qe, '--query_embeddings', ql, '--query_labels')
        _same_rows(ge, '--gallery_embeddings', gl, '--gallery_labels')
        if qe.shape[1] != ge.shape[1]:
            raise UserError('--query_embeddings are %d-d but --gallery_embeddings are %d-d'
                            % (qe.shape[1], ge.shape[1]))
        try:
            result = evaluate_query_gallery(qe, ql, ge, gl, recallk, metrics=metrics,
                                            block_size=args.block_size)
            if args.qe or args.dba:
                result.update(evaluate_expanded(ge, gl, metrics=metrics, query_emb=qe,
                                                query_labels=ql, **expand))
        except ValueError as exc:  # e.g. NaN embeddings
            raise UserError('--query_embeddings %s / --gallery_embeddings %s: %s'
                            % (args.query_embeddings, args.gallery_embeddings, exc))
    else:
        if args.embeddings is None or args.labels is None:
            raise UserError('give --embeddings and --labels (or the --query_*/--gallery_* flags)')
        metrics = _parse_metrics(args.metrics or 'recall,nmi', METRICS, '')
        emb = _load(args.embeddings, '--embeddings', 2)
        labels = _load(args.labels, '--labels', 1)
        _same_rows(emb, '--embeddings', labels, '--labels')
        try:
            result = evaluate(emb, labels, metrics=metrics, recallk=recallk, seed=args.seed,
                              block_size=args.block_size)
            if args.qe or args.dba:
                result.update(evaluate_expanded(emb, labels, metrics=metrics, **expand))
        except ValueError as exc:  # e.g. NaN embeddings
            raise UserError('--embeddings %s: %s' % (args.embeddings, exc))
    for key, value in result.items():
        print('%-14s %7.2f' % (key, 100.0 * value))
    if args.json:
        try:
            with open(args.json, 'w') as f:
                json.dump(result, f, indent=2)
        except OSError as exc:
            raise UserError('--json: cannot write %s (%s)' % (args.json, exc.strerror))
    return result


def main(argv=None):
    def command(argv):
        run(argv)
    return run_command(command, argv)


if __name__ == '__main__':
    sys.exit(main())
