"""One run per --save_dir: a lock while the run lives, and no silent reuse of an earlier run's folder.

A run holds an exclusive ``fcntl`` lock on ``SAVE_DIR/.lock`` (its PID written inside) from start
to exit; the kernel drops it when the process dies, however it dies, so a stale file never blocks.
A folder that holds what an earlier run leaves behind (checkpoints, ``.params`` files, TensorBoard
events) is refused unless the run resumes it (--resume) or moves it aside (--overwrite: renamed to
``SAVE_DIR.old-N``, never deleted; N is one more than any number used so far, so a name is never
reused). --resume needs a checkpoint of that run in ``SAVE_DIR/checkpoints``: a folder that holds
an earlier run without one is refused, rather than started afresh over its files. A folder holding
only the ``args.txt`` of a run that failed at start-up is not "used"; a folder this run created
and left holding no more than that is removed when the run ends (a failed start-up leaves no empty
result folders behind).
"""
import fcntl
import glob
import os
import re

from utils.errors import UserError

LOCK = '.lock'
STARTUP_FILES = ('args.txt', LOCK)  # what a run writes before it has results


def earlier_run(path):
    """What in folder ``path`` shows an earlier run (a short list of names), or [] for none."""
    found = []
    if _checkpoints(path):
        found.append('checkpoints/')
    # glob.escape: a folder named like a pattern ('run[1]') must not hide the run inside it
    params = sorted(os.path.basename(p) for p in glob.glob(os.path.join(glob.escape(path), '*.params')))
    found += params[:2] + (['...'] if len(params) > 2 else [])
    if glob.glob(os.path.join(glob.escape(path), 'tensorboard_log', '**', 'events.out.tfevents.*'), recursive=True):
        found.append('tensorboard_log/')
    return found


def _checkpoints(path):
    return glob.glob(os.path.join(glob.escape(path), 'checkpoints', 'epoch_*'))


def _aside(path):
    """The sibling SAVE_DIR.old-N for --overwrite, N one more than the largest taken (a deleted
    .old-2 beside .old-3 is not reused: its number may be quoted somewhere)."""
    taken = [int(m.group(1)) for name in glob.glob(glob.escape(path) + '.old-*')
             for m in [re.fullmatch(r'\.old-(\d+)', name[len(path):])] if m]
    return '%s.old-%d' % (path, max(taken, default=0) + 1)


def _own_checkpoint(resume, path):
    """Whether --resume (``'auto'`` or a checkpoint folder) continues the run in folder ``path``.
    A folder given that is no checkpoint at all passes here: runner.resume refuses it by name,
    before anything is written."""
    if resume == 'auto':
        return bool(_checkpoints(path))
    if not any(os.path.isfile(os.path.join(resume, name)) for name in ('manifest.json', 'state.pkl')):
        return True
    return os.path.realpath(os.path.dirname(os.path.normpath(resume))) == \
        os.path.realpath(os.path.join(path, 'checkpoints'))


class RunDir:
    """The run's --save_dir, locked while the object lives (``close`` or process exit releases it).

    resume: the --resume flag (None, 'auto' or a checkpoint folder); overwrite: --overwrite.
    """

    def __init__(self, path, resume=None, overwrite=False):
        # 'X/' and 'X' are one folder: its .old-N is a sibling, never a folder inside it
        self.path = os.path.abspath(path)
        self._flag = path
        self._fd = None
        self._created = _missing_folders(self.path)
        try:
            os.makedirs(self.path, exist_ok=True)
            self._lock()
            used = earlier_run(self.path)
            if used and resume and not _own_checkpoint(resume, self.path):
                raise UserError('--resume%s: --save_dir %s holds an earlier run (%s) with no checkpoint to continue '
                                'it from in %s; --overwrite moves that run aside and starts afresh, or choose a new '
                                '--save_dir' % ('' if resume == 'auto' else ' ' + resume, path, ', '.join(used),
                                                os.path.join(path, 'checkpoints')))
            if used and not resume:
                if not overwrite:
                    raise UserError('--save_dir %s holds an earlier run (%s): pass --resume to continue it, '
                                    'choose a new --save_dir, or --overwrite to move the old run aside'
                                    % (path, ', '.join(used)))
                self._move_aside()
        except OSError as exc:
            self.close()
            raise UserError('cannot use --save_dir %s: %s' % (path, exc.strerror or exc)) from exc
        except UserError:
            self.close()
            raise

    def _lock(self):
        lock = os.path.join(self.path, LOCK)
        # O_NOFOLLOW: a .lock planted as a link must not make the run truncate the file it points to
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            with os.fdopen(fd) as f:
                pid = f.read().strip() or 'unknown'
            raise UserError('--save_dir %s is in use by a live run (PID %s); wait for it or choose another '
                            '--save_dir' % (self._flag, pid)) from None
        os.ftruncate(fd, 0)
        os.write(fd, b'%d\n' % os.getpid())
        self._fd = fd

    def _move_aside(self):
        """--overwrite: the old run's files go to SAVE_DIR.old-N, the lock stays here; a failed
        move puts back what it moved, so the old run is never left split over two folders."""
        old = _aside(self.path)
        os.makedirs(old)
        moved = []
        try:
            for name in sorted(os.listdir(self.path)):
                if name != LOCK:
                    os.rename(os.path.join(self.path, name), os.path.join(old, name))
                    moved.append(name)
        except OSError:
            for name in moved:
                os.rename(os.path.join(old, name), os.path.join(self.path, name))
            os.rmdir(old)
            raise
        print('--overwrite: moved the earlier run in %s to %s' % (self.path, old))

    def close(self):
        """Release the lock; remove the folders this run created if they hold no result."""
        if self._fd is not None and self._created and not earlier_run(self.path):
            _remove_startup_files(self.path)
        if self._fd is not None:
            os.close(self._fd)      # releases the lock
            self._fd = None
        for folder in self._created:        # deepest first; a folder that is not empty stays
            try:
                os.rmdir(folder)
            except OSError:
                break
        self._created = []


def _missing_folders(path):
    """The folders os.makedirs(path) would create, deepest first."""
    missing, folder = [], os.path.abspath(path)
    while not os.path.exists(folder):
        missing.append(folder)
        parent = os.path.dirname(folder)
        if parent == folder:
            break
        folder = parent
    return missing


def _remove_startup_files(path):
    """The files and empty folders of a run without results (args.txt, the lock, an empty checkpoints/)."""
    for name in os.listdir(path):
        full = os.path.join(path, name)
        try:
            if name in STARTUP_FILES:
                os.remove(full)
            elif os.path.isdir(full) and not os.listdir(full):
                os.rmdir(full)
        except OSError:
            pass
