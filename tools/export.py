"""Export a trained run's model to ONNX and to MXNet's own deployment format.

    python3 -m tools.export RUN_DIR OUT_PREFIX [--format both|onnx|mxnet] [--params FILE]

onnx: OUT_PREFIX.onnx (tools.onnx_export), opset 13, input ``data`` (batch, 3, S, S), output
``embedding`` (batch, embed_dim) unit rows; its metadata states the preprocessing. onnxruntime runs
it without MXNet or this repository's model code (python3 -m tools.embed_onnx).
mxnet: OUT_PREFIX-symbol.json and OUT_PREFIX-0000.params (HybridBlock.export), same input and
output; load it anywhere MXNet is installed, without this repository:

    net = mx.gluon.SymbolBlock.imports('OUT_PREFIX-symbol.json', ['data'], 'OUT_PREFIX-0000.params')

The input: images resized to S x S (S = the run's --image_size) with OpenCV's bilinear
(cv2.INTER_LINEAR), RGB scaled to [0, 1], normalised with the ImageNet mean (0.485, 0.456, 0.406)
and std (0.229, 0.224, 0.225), channels first. Each file is written under a temporary name,
fsynced and renamed, so a failure (a full disk) leaves nothing under its final name. A backbone
whose graph does not translate (vit_small_patch16) still gets its MXNet export with --format both.
"""
import os
import sys

import utils.mxnet_compat  # noqa: F401  (first: MXNet 1.9.1's numpy names on Python 3.12+, the CUDA wheels' libraries)
from tools.run import load_model, run_parser
from utils.atomic import atomic_paths, temporary_name
from utils.errors import UserError, first_line, run_command

FORMATS = ('both', 'onnx', 'mxnet')


def build_parser():
    p = run_parser('python3 -m tools.export', __doc__,
                   [('out_prefix', 'writes OUT_PREFIX.onnx, OUT_PREFIX-symbol.json, OUT_PREFIX-0000.params')])
    p.add_argument('--format', default='both', choices=FORMATS, help='which export(s) to write')
    return p


def _write(finals, write):
    """write(temporary names) writes the files, then they are published under ``finals`` together
    (utils/atomic.py). A failure (OSError, or MXNetError: MXNet's file streams raise it on a full
    disk) leaves no temporary file and no final file that was not complete."""
    import mxnet as mx
    try:
        with atomic_paths(*finals) as tmps:
            write(tmps if len(finals) > 1 else [tmps])
    except (OSError, mx.base.MXNetError) as exc:
        raise UserError('cannot write %s (%s)' % (' and '.join(finals), getattr(exc, 'strerror', None)
                                                  or first_line(exc)))
    return finals


def export_mxnet(net, image_size, out_prefix):
    """Trace net once on a (1, 3, S, S) batch and write OUT_PREFIX-symbol.json and -0000.params."""
    import mxnet as mx
    net(mx.nd.zeros((1, 3, image_size, image_size)))   # export needs one forward pass of the graph
    return _write([out_prefix + '-symbol.json', out_prefix + '-0000.params'],
                  lambda tmps: net.export(temporary_name(out_prefix), epoch=0))


def export_onnx(net, run_args, path):
    """Write net as the ONNX model ``path`` with the run's preprocessing in its metadata.
    Raises tools.onnx_export.UnsupportedOperator when the graph does not translate."""
    import importlib.util

    from tools.onnx_export import preprocessing_metadata, to_onnx
    if importlib.util.find_spec('onnx') is None:
        raise UserError('the ONNX export needs the onnx package (pip install onnx==1.17.0); '
                        'or pass --format mxnet')
    metadata = dict(preprocessing_metadata(run_args.image_size, run_args.embed_dim),
                    backbone=run_args.backbone, pooling=run_args.pooling)
    model = to_onnx(net, run_args.image_size, metadata)

    def write(tmps):
        with open(tmps[0], 'wb') as f:
            f.write(model.SerializeToString())
    return _write([path], write)


def _check_folder(out_prefix):
    folder = os.path.dirname(out_prefix) or '.'
    if not os.path.isdir(folder):
        raise UserError('OUT_PREFIX %s: no such folder: %s' % (out_prefix, folder))
    if not os.access(folder, os.W_OK):
        raise UserError('OUT_PREFIX %s: folder %s is not writable' % (out_prefix, folder))


def run(argv=None):
    args = build_parser().parse_args(argv)
    _check_folder(args.out_prefix)
    run_args, net = load_model(args.run_dir, args.params)
    files = []
    if args.format in ('both', 'mxnet'):
        files += export_mxnet(net, run_args.image_size, args.out_prefix)
    if args.format in ('both', 'onnx'):
        from tools.onnx_export import UnsupportedOperator
        try:
            files += export_onnx(net, run_args, args.out_prefix + '.onnx')
        except UnsupportedOperator as exc:
            raise UserError('backbone %s does not convert to ONNX: MXNet\'s exporter cannot translate '
                            'its operator %s (%s)%s' % (run_args.backbone, exc.op, exc.reason,
                                                        '; wrote the MXNet export %s' % ' and '.join(files)
                                                        if files else ''))
    print('wrote %s: input data (batch, 3, %d, %d) -> (batch, %d)'
          % (', '.join(files), run_args.image_size, run_args.image_size, run_args.embed_dim))
    return files


if __name__ == '__main__':
    # run() returns its results (for tests and callers), not an exit status: drop them.
    sys.exit(run_command(lambda argv: run(argv) and 0))
