"""Checkpoints that survive crashes: written whole under a temporary name, then renamed.

A checkpoint is a folder ``SAVE_DIR/checkpoints/epoch_NNNNN/`` holding ``model.params``,
``trainer.states`` (optimiser moments and update counts), ``loss.params`` when the loss has
parameters (proxies), and ``state.pkl``: epoch, global step, best metrics and the Python and NumPy
random states. It is written as ``.tmp-epoch_NNNNN-PID/`` and renamed in one step, so a kill at any
moment leaves every earlier checkpoint intact and never a half-written one under a final name;
old checkpoints are likewise renamed away before they are deleted.
"""
import os
import pickle
import random
import re
import shutil

import numpy as np
from mxnet.base import MXNetError

from .errors import UserError

_NAME = re.compile(r'^epoch_(\d{5,})$')


def _fsync_dir(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_parameters_atomic(net, path):
    """net.save_parameters(path) such that a crash at any moment leaves the old file (or none)."""
    tmp = '%s.tmp-%d' % (path, os.getpid())
    try:
        net.save_parameters(tmp)
        with open(tmp, 'rb') as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


class Checkpointer:
    """Save, list and load the checkpoints under ``save_dir/checkpoints``, keeping the newest ``keep``."""

    def __init__(self, save_dir, keep=2):
        self.root = os.path.join(save_dir, 'checkpoints')
        self.keep = keep

    def paths(self):
        """Complete checkpoints, oldest first."""
        if not os.path.isdir(self.root):
            return []
        names = sorted((int(m.group(1)), n) for n in os.listdir(self.root) for m in [_NAME.match(n)] if m)
        return [os.path.join(self.root, n) for _, n in names]

    def latest(self):
        paths = self.paths()
        return paths[-1] if paths else None

    def save(self, epoch, net, trainer, loss, state):
        """Write checkpoint ``epoch`` (the number of finished epochs); ``state`` is a picklable dict."""
        os.makedirs(self.root, exist_ok=True)
        for name in os.listdir(self.root):      # left behind by a killed run
            if name.startswith(('.tmp-', '.trash-')):
                shutil.rmtree(os.path.join(self.root, name), ignore_errors=True)
        final = os.path.join(self.root, 'epoch_%05d' % epoch)
        tmp = os.path.join(self.root, '.tmp-epoch_%05d-%d' % (epoch, os.getpid()))
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
        try:
            net.save_parameters(os.path.join(tmp, 'model.params'))
            trainer.save_states(os.path.join(tmp, 'trainer.states'))
            if list(loss.collect_params().values()):
                loss.save_parameters(os.path.join(tmp, 'loss.params'))
            state = dict(state, epoch=epoch, python_random=random.getstate(), numpy_random=np.random.get_state())
            with open(os.path.join(tmp, 'state.pkl'), 'wb') as f:
                pickle.dump(state, f)
            for name in os.listdir(tmp):
                with open(os.path.join(tmp, name), 'rb') as f:
                    os.fsync(f.fileno())
            if os.path.isdir(final):        # the same epoch saved again (a resumed run): replace it
                self._discard(final)
            os.rename(tmp, final)
            _fsync_dir(self.root)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        for old in self.paths()[:-self.keep]:
            self._discard(old)
        return final

    def _discard(self, path):
        """Remove a checkpoint: renamed out of the listing first, so a kill mid-removal leaves no
        half-deleted folder under a checkpoint's name."""
        trash = os.path.join(self.root, '.trash-%s-%d' % (os.path.basename(path), os.getpid()))
        os.rename(path, trash)
        shutil.rmtree(trash, ignore_errors=True)

    @staticmethod
    def load(path, net, trainer, loss, ctx):
        """Restore a checkpoint folder into net, trainer and loss; returns its state dict.

        The random states are restored too, so the resumed run draws what the uninterrupted one would.
        """
        try:
            with open(os.path.join(path, 'state.pkl'), 'rb') as f:
                state = pickle.load(f)
            net.load_parameters(os.path.join(path, 'model.params'), ctx=ctx)
            if os.path.exists(os.path.join(path, 'loss.params')):
                loss.load_parameters(os.path.join(path, 'loss.params'), ctx=ctx)
            trainer.load_states(os.path.join(path, 'trainer.states'))
        except (OSError, EOFError, pickle.UnpicklingError, AssertionError, ValueError, MXNetError) as exc:
            raise UserError('cannot resume from %s (--resume): %s' % (path, str(exc).splitlines()[0] if str(exc)
                                                                       else type(exc).__name__)) from exc
        random.setstate(state.pop('python_random'))
        np.random.set_state(state.pop('numpy_random'))
        return state


def init_file(path):
    """The parameter file ``--init_from PATH`` names: PATH itself, or PATH/model_final.params when
    PATH is a run's --save_dir. UserError (one line, naming the flag) when there is none."""
    if os.path.isdir(path):
        final = os.path.join(path, 'model_final.params')
        if not os.path.isfile(final):
            raise UserError('--init_from %s is a folder without model_final.params (did that run finish? '
                            'name one of its model_epoch_*.params instead)' % path)
        return final
    if not os.path.isfile(path):
        raise UserError('--init_from %s does not exist (expected a .params file main.py wrote, or its run folder)'
                        % path)
    return path


def init_from(net, path, ctx, flags=''):
    """Load every parameter of ``net`` (trunk and embedding layer) from ``path`` (see init_file).

    Strict: a parameter missing from the file, an extra one or another shape (a file of another
    backbone or --embed_dim) is a one-line UserError naming the file and ``flags`` (the run's
    --backbone/--embed_dim, to say what did not fit). Returns the file loaded.
    """
    path = init_file(path)
    try:
        net.load_parameters(path, ctx=ctx, cast_dtype=True)
    except Exception as exc:  # MXNet says "does not fit" as AssertionError, MXNetError or ValueError
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        first = first.split(', which contains parameters')[0]     # MXNet then lists every name in the file
        raise UserError('--init_from %s does not fit this network (%s): %s' % (path, flags, first[:300])) from exc
    return path
