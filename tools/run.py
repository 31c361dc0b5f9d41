"""A finished training run (a main.py --save_dir): its flags and its model with trained weights.

The flags come from ``RUN_DIR/args.txt``, which main.py writes as a --config file, so main.py's own
parser reads them (data-set defaults included) exactly as the run saw them.
"""
import os

from utils.errors import OneLineParser, UserError, first_line


def run_args(run_dir):
    """main.py's argparse Namespace of the run in run_dir."""
    path = os.path.join(run_dir, 'args.txt')
    if not os.path.isfile(path):
        raise UserError('%s is not a run folder of main.py (no %s)' % (run_dir, path))
    from runner.options import check_args, parse_args
    args = parse_args(['--config', path])
    try:        # the same checks as main.py: a hand-edited args.txt must not reach the model
        check_args(args, 1)
    except UserError as exc:
        raise UserError('%s: %s' % (path, exc)) from exc
    return args


def load_model(run_dir, params=None, ctx=None):
    """(args, net): the run's EmbeddingNet, hybridised, with weights ``params`` (default
    RUN_DIR/model_final.params) on ``ctx`` (a list of contexts, default [cpu]).

    net maps (B, 3, S, S) normalised images (data.transforms.test_transform(args.image_size)) to
    (B, embed_dim) unit embeddings.  The backbone is built without ImageNet weights: the
    parameter file supplies every weight.
    """
    import mxnet as mx
    from model import get_model
    from model.params_file import check_params_file
    args = run_args(run_dir)
    params = params or os.path.join(run_dir, 'model_final.params')
    if not os.path.isfile(params):
        raise UserError('--params: no such file: %s' % params)
    try:        # before MXNet reads it, and before the model is built
        check_params_file(params)
    except (OSError, ValueError) as exc:
        raise UserError('--params %s: %s' % (params, first_line(exc))) from exc
    ctx = list(ctx or [mx.cpu()])
    net = get_model(args.backbone, args.embed_dim, False, None, ctx, pooling=args.pooling,
                    bn_freeze=args.bn_freeze)
    try:
        net.load_parameters(params, ctx=ctx)
    except (mx.base.MXNetError, AssertionError, ValueError) as exc:
        raise UserError('cannot load %s into the model of %s (%s)'
                        % (params, run_dir, first_line(exc)))
    return args, net


def run_parser(prog, doc, positional=()):
    """The argparse parser of a run tool: RUN_DIR, then ``positional`` (name, help) pairs, then
    --params and --debug; the tool adds its own flags."""
    import argparse
    p = OneLineParser(prog=prog, description=doc,
                      formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('run_dir', help='a main.py --save_dir (args.txt, model_final.params)')
    for name, text in positional:
        p.add_argument(name, help=text)
    p.add_argument('--params', default=None, help='weights to use (default RUN_DIR/model_final.params)')
    p.add_argument('--debug', action='store_true', help='show the traceback of input errors')
    return p
