"""Export a trained run's model to MXNet's own deployment format (HybridBlock.export).

    python3 -m tools.export RUN_DIR OUT_PREFIX [--params FILE]

Writes OUT_PREFIX-symbol.json and OUT_PREFIX-0000.params: one input ``data``, (B, 3, S, S) images
resized to S = the run's --image_size, RGB scaled to [0, 1] then normalised with the ImageNet mean
(0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225); output (B, embed_dim) unit embeddings.  Load
it anywhere MXNet is installed, without this repository:

    net = mx.gluon.SymbolBlock.imports('OUT_PREFIX-symbol.json', ['data'], 'OUT_PREFIX-0000.params')
"""
import sys

from tools.run import load_model, run_parser
from utils.errors import UserError, run_command


def build_parser():
    return run_parser('python3 -m tools.export', __doc__,
                      [('out_prefix', 'writes OUT_PREFIX-symbol.json and OUT_PREFIX-0000.params')])


def export(net, image_size, out_prefix):
    """Trace net once on a (1, 3, S, S) batch and write the symbol and parameter files."""
    import mxnet as mx
    net(mx.nd.zeros((1, 3, image_size, image_size)))   # export needs one forward pass of the graph
    try:
        net.export(out_prefix, epoch=0)
    except OSError as exc:
        raise UserError('cannot write %s-symbol.json (%s)' % (out_prefix, exc.strerror))
    return out_prefix + '-symbol.json', out_prefix + '-0000.params'


def run(argv=None):
    args = build_parser().parse_args(argv)
    run_args, net = load_model(args.run_dir, args.params)
    files = export(net, run_args.image_size, args.out_prefix)
    print('wrote %s and %s: input data (B, 3, %d, %d) -> (B, %d)'
          % (files + (run_args.image_size, run_args.image_size, run_args.embed_dim)))
    return files


if __name__ == '__main__':
    # run() returns its results (for tests and callers), not an exit status: drop them.
    sys.exit(run_command(lambda argv: run(argv) and 0))
