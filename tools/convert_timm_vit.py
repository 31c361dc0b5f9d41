"""Convert a timm ViT/DeiT checkpoint (.pth / .bin, a PyTorch state dict) into .params for model/vit.py.

    python3 -m tools.convert_timm_vit deit_small_patch16_224-cd65a155.pth vit_small_patch16.params
    python3 main.py --backbone vit_small_patch16 --pretrained_path vit_small_patch16.params ...

Only this script needs PyTorch (to read the file). The layers carry timm's names, so the mapping
(timm -> ours, i = 0..depth-1) only renames LayerNorm parameters and drops the classifier:

    cls_token, pos_embed                        -> the same        (1, 1, 384), (1, 197, 384)
    patch_embed.proj.{weight,bias}              -> the same        (384, 3, 16, 16) Conv2D, (384,)
    blocks.i.norm1.{weight,bias}                -> blocks.i.norm1.{gamma,beta}
    blocks.i.attn.qkv.{weight,bias}             -> the same        (1152, 384): Dense weights are (out, in)
    blocks.i.attn.proj.{weight,bias}            -> the same        as in torch.nn.Linear
    blocks.i.norm2.{weight,bias}                -> blocks.i.norm2.{gamma,beta}
    blocks.i.mlp.fc1.{weight,bias}              -> the same        (1536, 384)
    blocks.i.mlp.fc2.{weight,bias}              -> the same        (384, 1536)
    norm.{weight,bias}                          -> norm.{gamma,beta}
    head.{weight,bias}                          -> dropped (the ImageNet classifier)

Any other name (e.g. DeiT-distilled's dist_token) stops the conversion with its name.
"""
import os
import pickle
import re
import sys

import utils.mxnet_compat  # noqa: F401  (first: MXNet 1.9.1's numpy names on Python 3.12+, the CUDA wheels' libraries)
from utils.atomic import atomic_paths
from utils.errors import OneLineParser, UserError, first_line, run_command

# A LayerNorm of timm: the final norm or a block's norm1 / norm2.
LAYER_NORM = re.compile(r'^(norm|blocks\.\d+\.norm[12])\.(weight|bias)$')
SAME = re.compile(r'^(cls_token|pos_embed|patch_embed\.proj\.(weight|bias)|'
                  r'blocks\.\d+\.(attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2)\.(weight|bias))$')


def convert(state):
    """timm state dict {name: array} -> {our structural name: the same array}; raises ValueError."""
    out, unknown = {}, []
    for name, value in state.items():
        norm = LAYER_NORM.match(name)
        if norm:
            out['%s.%s' % (norm.group(1), {'weight': 'gamma', 'bias': 'beta'}[norm.group(2)])] = value
        elif SAME.match(name):
            out[name] = value
        elif not name.startswith('head.'):
            unknown.append(name)
    if unknown:
        raise ValueError('not a plain ViT/DeiT state dict: no counterpart for %s' % ', '.join(sorted(unknown)))
    return out


def load_state_dict(path):
    """The state dict of a timm .pth / .bin file as {name: float32 numpy array}."""
    try:
        import torch  # only here: the rest of the project runs without PyTorch
    except ImportError:
        raise OSError('reading a PyTorch checkpoint needs PyTorch: pip install torch (CPU build is enough)')
    # weights_only: tensors and containers only; a full unpickle of a downloaded file could run code
    try:
        state = torch.load(path, map_location='cpu', weights_only=True)
    except TypeError as exc:        # PyTorch < 1.13 has no weights_only
        raise OSError('reading a checkpoint safely needs PyTorch >= 1.13 (torch.load weights_only)') from exc
    except pickle.UnpicklingError as exc:
        raise ValueError('not a plain state dict of tensors (refused unread: %s)'
                         % str(exc).strip().splitlines()[0][:200]) from exc
    if not isinstance(state, dict):
        raise ValueError('not a state dict (a %s)' % type(state).__name__)
    for key in ('model', 'state_dict'):          # DeiT's release wraps the weights in {'model': ...}
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    return {name: tensor.detach().float().numpy() for name, tensor in state.items()}


def run(argv):
    p = OneLineParser(prog='python3 -m tools.convert_timm_vit', description=__doc__.splitlines()[0])
    p.add_argument('source', help='timm / DeiT checkpoint, .pth or .bin')
    p.add_argument('target', help='.params file to write')
    p.add_argument('--debug', action='store_true', help='show the traceback of input errors')
    args = p.parse_args(argv)
    import mxnet as mx
    try:
        params = convert(load_state_dict(args.source))
    except (OSError, ValueError) as exc:
        raise UserError('%s: %s' % (args.source, exc)) from exc
    try:        # a crash or a full disk leaves no truncated file under the target's name
        with atomic_paths(args.target) as tmp:
            mx.nd.save(tmp, {name: mx.nd.array(value) for name, value in params.items()})
    except (OSError, mx.base.MXNetError) as exc:
        raise UserError('cannot write %s: %s' % (args.target, getattr(exc, 'strerror', None) or first_line(exc))) \
            from exc
    print('wrote %d arrays to %s' % (len(params), args.target))


def main(argv=None):
    """0 when written; 2 with one line ``error: ...`` for a bad argument or file."""
    return run_command(run, argv)


if __name__ == '__main__':
    sys.exit(main())
