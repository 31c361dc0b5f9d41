"""Where pretrained ImageNet weights come from: a file the user names, or gluoncv's model store."""
import os

from utils.errors import UserError, first_line


def store_file(name):
    """The path gluoncv's store uses for model ``name``: $MXNET_HOME/models/<name>-<hash>.params."""
    from gluoncv.model_zoo.model_store import short_hash
    root = os.path.join(os.environ.get('MXNET_HOME', os.path.join('~', '.mxnet')), 'models')
    return os.path.expanduser(os.path.join(root, '%s-%s.params' % (name, short_hash(name))))


def pretrained_file(name, pretrained_path=None):
    """Path of a weight file for gluoncv model ``name``, downloading it into the store if need be.

    Raises UserError, one line naming the file and the flags, when the file is missing and cannot
    be downloaded (offline machines), instead of a DNS traceback.
    """
    if pretrained_path:
        if not os.path.isfile(pretrained_path):
            raise UserError('pretrained weight file %s does not exist (--pretrained_path)' % pretrained_path)
        return pretrained_path
    expected = store_file(name)
    if os.path.isfile(expected):
        return expected
    from gluoncv.model_zoo.model_store import get_model_file
    try:
        return get_model_file(name)
    except Exception as exc:  # network errors come in many types (socket, requests, HTTP, zip)
        raise UserError('no ImageNet weights for %s: expected %s (download failed: %s); put the file there, '
                        'pass --pretrained_path FILE, or train from scratch with --pretrained false'
                        % (name, expected, type(exc).__name__)) from exc


def load_into(net, path, backbone, ctx):
    """Load ``path`` into ``net`` (a full gluoncv classifier), naming the file when it does not fit."""
    from .params_file import check_params_file
    try:
        check_params_file(path)
    except (OSError, ValueError) as exc:
        raise UserError('pretrained file %s (--pretrained_path): %s' % (path, first_line(exc))) from exc
    try:
        net.load_parameters(path, ctx=ctx)
    except Exception as exc:  # MXNet reports missing/extra/mis-shaped parameters as AssertionError etc.
        raise UserError('pretrained file %s does not match backbone %s (--pretrained_path): %s'
                        % (path, backbone, first_line(exc))) from exc
