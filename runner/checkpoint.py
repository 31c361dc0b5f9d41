"""Checkpoints that survive crashes and run no code when read.

A checkpoint is a folder ``SAVE_DIR/checkpoints/epoch_NNNNN/`` (or ``epoch_NNNNN_iter_IIIII/``
when a signal stopped the run after IIIII iterations of epoch NNNNN + 1) holding only data:

    model.params       the embedding network (MXNet's NDArray format: arrays, nothing else)
    loss.params        the loss's parameters (proxies), when it has any
    optimizer.params   the optimiser's states (Adam moments, ...), keyed by parameter position
    state.json         epoch, iteration, global step, best metrics, the run's flags, the Python
                       and NumPy random states, the optimiser's update counts
    manifest.json      format version, and the size and SHA-256 of every file above

Nothing is unpickled: MXNet's own ``Trainer.save_states``/``load_states`` pickle the optimiser,
so a crafted file could run code; here the optimiser's state arrays are written with
``mx.nd.save`` and its counters as JSON. Checkpoints of the old format (``state.pkl``) are refused.

Writing: every file goes into ``.tmp-NAME-PID/``, is fsynced, the manifest last, then the folder
is renamed in one step and the parent fsynced, so a kill at any moment leaves every earlier
checkpoint intact and never a half-written one under a final name. Reading: the manifest is
checked first; a checkpoint with a missing, changed or truncated file is corrupt, and
``Checkpointer.newest_valid`` falls back to the previous one.
"""
import hashlib
import json
import os
import random
import re
import shutil

import mxnet as mx
import numpy as np

from model.params_file import check_params_file, read_header
from utils.atomic import atomic_paths, fsync_path
from utils.errors import UserError, first_line

FORMAT = 2
_NAME = re.compile(r'^epoch_(\d{5,})(?:_iter_(\d{5,}))?$')
MANIFEST = 'manifest.json'
# state.json holds the run's flags, best metrics and random states: about 40 KB
MAX_JSON = 16 << 20


class CorruptCheckpoint(Exception):
    """A checkpoint folder whose files do not match its manifest (or that has none)."""


def _sha256(path):
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            h.update(chunk)
    return h.hexdigest()


def write_error(path, exc):
    """The UserError of a failed write (disk full, permissions), one line naming the path. MXNet's
    savers raise MXNetError, not OSError, saying only "FileStream.Write incomplete"."""
    reason = getattr(exc, 'strerror', None) or first_line(exc)
    if 'Write incomplete' in reason:
        reason = 'the write was cut short (is the disk full?)'
    return UserError('cannot write %s: %s' % (path, reason))


def save_parameters_atomic(net, path):
    """net.save_parameters(path) such that a crash at any moment leaves the old file (or none)."""
    try:
        with atomic_paths(path) as tmp:
            net.save_parameters(tmp)
    except (OSError, mx.base.MXNetError) as exc:
        raise write_error(path, exc) from exc


BEST_NAME = 'model_epoch_%05d.params'
BEST_PATTERN = re.compile(r'model_epoch_(\d+)\.params$')


def save_best(net, save_dir, epoch, keep):
    """Write the parameters of a new best epoch as SAVE_DIR/model_epoch_NNNNN.params, then remove
    the older best files beyond the ``keep`` newest (0: keep every one, as the release).

    The older files go only once the new one is complete on disk (written, fsynced, renamed, the
    folder fsynced), so a crash at any moment leaves at least one whole best file. "Newest" is by
    modification time, so that files of an abandoned run resumed from an earlier checkpoint go
    first. Returns the new file's path.
    """
    path = os.path.join(save_dir, BEST_NAME % epoch)
    save_parameters_atomic(net, path)      # the folder fsynced too
    if keep:
        older = [os.path.join(save_dir, name) for name in os.listdir(save_dir)
                 if BEST_PATTERN.match(name) and name != os.path.basename(path)]
        older.sort(key=lambda p: (os.path.getmtime(p), p), reverse=True)
        for stale in older[keep - 1:]:
            os.remove(stale)
    return path


def _flatten(state, key, arrays):
    """An optimiser state (None, an NDArray, or nested tuples of them) as a JSON structure; its
    arrays go into ``arrays`` under ``key``, ``key/0``, ``key/0/1``, ..."""
    if state is None:
        return None
    if isinstance(state, mx.nd.NDArray):
        arrays[key] = state.as_in_context(mx.cpu())
        return 'array'
    if isinstance(state, (tuple, list)):
        return [_flatten(s, '%s/%d' % (key, j), arrays) for j, s in enumerate(state)]
    raise TypeError('cannot checkpoint an optimiser state of type %s' % type(state).__name__)


def _unflatten(structure, key, arrays, shape):
    """The state _flatten wrote; every array must have its parameter's ``shape`` (an Adam moment,
    an SGD momentum: all are shaped like the weight)."""
    if structure is None:
        return None
    if structure == 'array':
        if key not in arrays:
            raise ValueError('optimizer.params lacks %s' % key)
        if list(arrays[key].shape) != shape:
            raise ValueError('optimizer.params: %s has shape %s, its parameter %s'
                             % (key, list(arrays[key].shape), shape))
        return arrays[key]
    if not isinstance(structure, list):
        raise ValueError('the optimiser state %s is %r, expected "array", null or a list' % (key, structure))
    return tuple(_unflatten(s, '%s/%d' % (key, j), arrays, shape) for j, s in enumerate(structure))


def optimizer_state(trainer):
    """(arrays {key: NDArray}, JSON-able dict) of a gluon Trainer's optimiser states and counters.

    Parameters are keyed by their position in the trainer (the network's, then the loss's, as
    main.py builds it; block names carry process-wide counters), with their shapes to check on load.
    """
    arrays, structure = {}, {}
    for index, state in sorted(trainer._updaters[0].states.items()):
        structure[str(index)] = _flatten(state, 'state/%d' % index, arrays)
    opt = trainer._optimizer
    counts = {str(device): {str(i): int(c) for i, c in per_index.items()}
              for device, per_index in opt._all_index_update_counts.items()}
    return arrays, {'structure': structure, 'update_counts': counts, 'num_update': int(opt.num_update),
                    'shapes': [list(p.shape) for p in trainer._params]}


def restore_optimizer_state(trainer, arrays, info):
    """Put states and counters saved by optimizer_state into every device's updater of ``trainer``.
    Flags such as the learning rate and weight decay stay the trainer's own (the new run's)."""
    shapes = [list(p.shape) for p in trainer._params]
    if info['shapes'] != shapes:
        raise ValueError('its optimiser states are for %d parameters of other shapes than this model\'s %d'
                         % (len(info['shapes']), len(shapes)))
    if any(not (i.isdigit() and int(i) < len(shapes)) for i in info['structure']):
        raise ValueError('its optimiser states name parameters %s of a model of %d'
                         % (sorted(info['structure']), len(shapes)))
    states = {int(i): _unflatten(s, 'state/%s' % i, arrays, shapes[int(i)]) for i, s in info['structure'].items()}
    for updater in trainer._updaters:
        # each device's updater moves its copy to its own context on first use
        updater.states = dict(states)
        updater.states_synced = dict.fromkeys(states, False)
    opt = trainer._optimizer
    opt._all_index_update_counts = {int(device): {int(i): c for i, c in per.items()}
                                    for device, per in info['update_counts'].items()}
    opt._all_index_update_counts.setdefault(0, {})
    opt._index_update_count = opt._all_index_update_counts[0]
    opt.num_update = info['num_update']


def random_state():
    """Python's and NumPy's global random states as JSON-able lists."""
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {'python': [version, list(internal), gauss],
            'numpy': [name, keys.tolist(), int(pos), int(has_gauss), float(cached)]}


def set_random_state(state):
    version, internal, gauss = state['python']
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state['numpy']
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))


def _is_int(value, low=0):
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value)


def _is_random_state(state):
    """Whether ``state`` has the shape random_state() gives (what set_random_state accepts)."""
    try:
        (version, internal, gauss), (name, keys, pos, has_gauss, cached) = state['python'], state['numpy']
    except (KeyError, TypeError, ValueError):
        return False
    return (_is_int(version) and isinstance(internal, list) and len(internal) == 625
            and all(_is_int(v) for v in internal) and (gauss is None or _is_number(gauss))
            and name == 'MT19937' and isinstance(keys, list) and len(keys) == 624
            and all(_is_int(k) and k < 2 ** 32 for k in keys) and _is_int(pos) and _is_int(has_gauss)
            and _is_number(cached))


def check_state(state, name=None):
    """ValueError naming the first field of a state.json (as Checkpointer.save writes it) of the wrong type
    or out of range. ``name``: the match of the folder's name (epoch_NNNNN[_iter_IIIII]), which the
    epoch and iteration must repeat; a rewritten manifest must not make a run skip or redo training."""
    def bad(field, expected):
        value = state.get(field) if isinstance(state, dict) else state
        return ValueError('state.json: %s is %s, expected %s' % (field, json.dumps(value)[:60], expected))
    if not isinstance(state, dict):
        raise bad('the file', 'an object')
    args = state.get('args')
    if not isinstance(args, dict) or not _is_int(args.get('epochs'), 1):
        raise ValueError('state.json: "args" does not hold the run\'s flags')
    if not _is_int(state.get('epoch')) or state['epoch'] > args['epochs']:
        raise bad('epoch', 'an integer in [0, --epochs (%d)] of the run that wrote it' % args['epochs'])
    if not _is_int(state.get('iteration')) or (state['iteration'] and state['epoch'] == args['epochs']):
        raise bad('iteration', 'an integer >= 0 (0 at the end of the run)')
    if not _is_int(state.get('global_step')):
        raise bad('global_step', 'an integer >= 0')
    best = state.get('best')
    if not isinstance(best, dict) or not all(_is_number(v) for v in best.values()):
        raise bad('best', 'an object of finite metric values')
    if state.get('best_chosen') is not None and not _is_number(state['best_chosen']):
        raise bad('best_chosen', 'null or a finite number')
    if not _is_random_state(state.get('random')):
        raise bad('random', 'the random states random_state() writes')
    if state['iteration'] and not _is_random_state(state.get('epoch_random')):
        raise bad('epoch_random', 'the random states of the epoch stopped mid-way')
    opt = state.get('optimizer')
    if opt is not None and not (isinstance(opt, dict) and isinstance(opt.get('structure'), dict)
                                and isinstance(opt.get('shapes'), list) and _is_int(opt.get('num_update'))
                                and isinstance(opt.get('update_counts'), dict)
                                and all(isinstance(c, dict) and all(_is_int(n) for n in c.values())
                                        for c in opt['update_counts'].values())):
        raise bad('optimizer', 'null or the optimiser\'s structure, shapes and update counts')
    if name and (int(name.group(1)), int(name.group(2) or 0)) != (state['epoch'], state['iteration']):
        raise ValueError('state.json: epoch %d, iteration %d disagree with the folder\'s name %s'
                         % (state['epoch'], state['iteration'], name.group(0)))


def checkpoint_name(epoch, iteration=0):
    return 'epoch_%05d' % epoch + ('_iter_%05d' % iteration if iteration else '')


def _read_json(path):
    """The JSON value in ``path``; ValueError when the file exceeds MAX_JSON bytes (Python's parser
    holds several times a file's size: a planted 4 GB state.json would cost far more)."""
    if os.path.getsize(path) > MAX_JSON:
        raise ValueError('%s holds %d bytes, more than a checkpoint writes (%d at most)'
                         % (os.path.basename(path), os.path.getsize(path), MAX_JSON))
    with open(path) as f:
        return json.load(f)


def verify(path):
    """Check a checkpoint folder against its manifest; raises CorruptCheckpoint, or UserError for
    the old pickle format. Returns the manifest's file list."""
    if not os.path.isfile(os.path.join(path, MANIFEST)):
        if os.path.exists(os.path.join(path, 'state.pkl')):
            raise UserError('%s is a checkpoint of an older version (state.pkl, a pickle, which can run code '
                            'when read): it is not read; resume it with the version that wrote it, or start afresh'
                            % path)
        raise CorruptCheckpoint('no %s' % MANIFEST)
    try:
        manifest = _read_json(os.path.join(path, MANIFEST))
        files = manifest['files']
        if manifest.get('format') != FORMAT:
            raise CorruptCheckpoint('format %r, expected %d' % (manifest.get('format'), FORMAT))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CorruptCheckpoint('unreadable %s (%s)' % (MANIFEST, first_line(exc))) from exc
    if not isinstance(files, dict) or not all(isinstance(e, dict) for e in files.values()):
        raise CorruptCheckpoint('%s: "files" is not a mapping of file names to their size and sha256' % MANIFEST)
    for name, entry in sorted(files.items()):
        file = os.path.join(path, name)
        if os.path.basename(name) != name or not os.path.isfile(file):
            raise CorruptCheckpoint('%s is missing' % name)
        if os.path.getsize(file) != entry.get('size') or _sha256(file) != entry.get('sha256'):
            raise CorruptCheckpoint('%s does not match its checksum' % name)
    return files


class Checkpointer:
    """Save, list, verify and load the checkpoints under ``save_dir/checkpoints``, keeping the newest ``keep``."""

    def __init__(self, save_dir, keep=2):
        self.root = os.path.join(save_dir, 'checkpoints')
        self.keep = keep

    def paths(self):
        """Checkpoint folders by name (complete or not: see verify), oldest first."""
        if not os.path.isdir(self.root):
            return []
        names = sorted((int(m.group(1)), int(m.group(2) or 0), n)
                       for n in os.listdir(self.root) for m in [_NAME.match(n)] if m)
        return [os.path.join(self.root, n) for _, _, n in names]

    def latest(self):
        paths = self.paths()
        return paths[-1] if paths else None

    def newest_valid(self, warn):
        """The newest checkpoint that passes verify, or None when there are none at all; each corrupt
        one newer than it is reported through ``warn(line)``. UserError when all are corrupt."""
        paths = self.paths()
        bad = []
        for path in reversed(paths):
            try:
                verify(path)
            except CorruptCheckpoint as exc:
                warn('checkpoint %s is corrupt (%s): using the one before it' % (path, exc))
                bad.append(path)
                continue
            return path
        if bad:
            raise UserError('no usable checkpoint to resume: %s are corrupt; start afresh with a new --save_dir'
                            % ', '.join(bad))
        return None

    def save(self, epoch, net, trainer, loss, state, iteration=0):
        """Write checkpoint ``epoch`` (finished epochs), plus ``iteration`` steps of the next one when
        a signal stopped the run mid-epoch; ``state`` a JSON-able dict. UserError when the disk fails."""
        final = os.path.join(self.root, checkpoint_name(epoch, iteration))
        tmp = os.path.join(self.root, '.tmp-%s-%d' % (os.path.basename(final), os.getpid()))
        try:
            os.makedirs(self.root, exist_ok=True)
            for name in os.listdir(self.root):      # left behind by a killed run
                if name.startswith(('.tmp-', '.trash-')):
                    shutil.rmtree(os.path.join(self.root, name), ignore_errors=True)
            os.makedirs(tmp)
            self._write(tmp, net, trainer, loss, dict(state, epoch=epoch, iteration=iteration))
            if os.path.isdir(final):        # the same epoch saved again (a resumed run): replace it
                self._discard(final)
            os.rename(tmp, final)
            fsync_path(self.root)
        except (OSError, mx.base.MXNetError) as exc:
            raise write_error(final, exc) from exc
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        for old in self.paths()[:-self.keep]:
            self._discard(old)
        return final

    @staticmethod
    def _write(folder, net, trainer, loss, state):
        net.save_parameters(os.path.join(folder, 'model.params'))
        if list(loss.collect_params().values()):
            loss.save_parameters(os.path.join(folder, 'loss.params'))
        if trainer._update_on_kvstore:      # dist_async: the states live on the servers
            state['optimizer'] = None
        else:
            arrays, state['optimizer'] = optimizer_state(trainer)
            mx.nd.save(os.path.join(folder, 'optimizer.params'), arrays)
        state['random'] = random_state()
        with open(os.path.join(folder, 'state.json'), 'w') as f:
            json.dump(state, f)
        files = {}
        for name in sorted(os.listdir(folder)):
            path = os.path.join(folder, name)
            fsync_path(path)
            files[name] = {'size': os.path.getsize(path), 'sha256': _sha256(path)}
        with open(os.path.join(folder, MANIFEST), 'w') as f:
            json.dump({'format': FORMAT, 'files': files}, f, indent=1)
        fsync_path(os.path.join(folder, MANIFEST))

    def _discard(self, path):
        """Remove a checkpoint: renamed out of the listing first, so a kill mid-removal leaves no
        half-deleted folder under a checkpoint's name."""
        trash = os.path.join(self.root, '.trash-%s-%d' % (os.path.basename(path), os.getpid()))
        os.rename(path, trash)
        shutil.rmtree(trash, ignore_errors=True)

    @staticmethod
    def read_state(path, verified=False):
        """The state.json of a checkpoint folder, verified against its manifest unless ``verified``
        (newest_valid just did); UserError naming it when it is corrupt."""
        try:
            if not verified:
                verify(path)
            state = _read_json(os.path.join(path, 'state.json'))
            check_state(state, _NAME.match(os.path.basename(os.path.normpath(path))))
            return state
        except CorruptCheckpoint as exc:
            raise UserError('cannot resume from %s (--resume): corrupt checkpoint (%s)' % (path, exc)) from exc
        except (OSError, ValueError) as exc:
            raise UserError('cannot resume from %s (--resume): %s' % (path, first_line(exc))) from exc

    @staticmethod
    def load(path, net, trainer, loss, ctx, state=None):
        """Verify a checkpoint folder and restore it into net, trainer and loss; returns its state.
        ``state``: its read_state, when the caller has it (the folder is then not verified again).

        The random states are restored too, so the resumed run draws what the uninterrupted one would.
        UserError (one line naming the folder) when it is corrupt or does not fit the model.
        """
        try:
            state = dict(state) if state is not None else Checkpointer.read_state(path)
            # every file's header is bounded before MXNet reads it: a rewritten manifest vouches for anything
            net.load_parameters(_checked(path, 'model.params'), ctx=ctx)
            if os.path.exists(os.path.join(path, 'loss.params')):
                loss.load_parameters(_checked(path, 'loss.params'), ctx=ctx)
            if state.get('optimizer'):
                arrays = mx.nd.load(_checked(path, 'optimizer.params', names=None))
                # an empty dict comes back as an empty list
                restore_optimizer_state(trainer, arrays or {}, state['optimizer'])
            set_random_state(state.pop('random'))
        except (OSError, KeyError, TypeError, AssertionError, ValueError, mx.base.MXNetError) as exc:
            raise UserError('cannot resume from %s (--resume): %s' % (path, first_line(exc))) from exc
        return state


def _checked(folder, name, names=True):
    """folder/name after model.params_file checked it (names None: any array list, even empty);
    ValueError naming the file otherwise."""
    file = os.path.join(folder, name)
    try:
        if names is None:
            read_header(file)
        else:
            check_params_file(file, names)
    except ValueError as exc:
        raise ValueError('%s: %s' % (name, exc)) from exc
    return file


def init_file(path):
    """The parameter file ``--init_from PATH`` names: PATH itself, or PATH/model_final.params when
    PATH is a run's --save_dir. UserError (one line, naming the flag) when there is none, or it is
    not a file of named float32 arrays that fit in its size (model.params_file)."""
    if os.path.isdir(path):
        final = os.path.join(path, 'model_final.params')
        if not os.path.isfile(final):
            raise UserError('--init_from %s is a folder without model_final.params (did that run finish? '
                            'name one of its model_epoch_*.params instead)' % path)
        path = final
    elif not os.path.isfile(path):
        raise UserError('--init_from %s does not exist (expected a .params file main.py wrote, or its run folder)'
                        % path)
    try:        # its header bounded before MXNet reads it (model.params_file)
        check_params_file(path)
    except (OSError, ValueError) as exc:
        raise UserError('--init_from %s: %s' % (path, first_line(exc))) from exc
    return path


def init_from(net, path, ctx, flags=''):
    """Load every parameter of ``net`` (trunk and embedding layer) from ``path`` (see init_file).

    Strict: a parameter missing from the file, an extra one or another shape (a file of another
    backbone or --embed_dim) is a one-line UserError naming the file and ``flags`` (the run's
    --backbone/--embed_dim, to say what did not fit). Returns the file loaded.
    """
    path = init_file(path)
    try:
        net.load_parameters(path, ctx=ctx)
    except (AssertionError, mx.base.MXNetError, ValueError, KeyError, TypeError) as exc:
        # MXNet says "does not fit" as AssertionError, MXNetError or ValueError (a signal's Stopped passes)
        first = first_line(exc).split(', which contains parameters')[0]     # MXNet then lists every name
        raise UserError('--init_from %s does not fit this network (%s): %s' % (path, flags, first)) from exc
    return path
