"""One run per --save_dir: a lock while the run lives, and no silent reuse of an earlier run's folder.

A run holds an exclusive ``fcntl`` lock on ``SAVE_DIR/.lock`` (its PID written inside) from start
to exit; the kernel drops it when the process dies, however it dies, so a stale file never blocks.
A folder that holds what an earlier run leaves behind (checkpoints, ``.params`` files, TensorBoard
events) is refused unless the run resumes it (--resume) or moves it aside (--overwrite: renamed to
``SAVE_DIR.old-N``, never deleted). A folder holding only the ``args.txt`` of a run that failed
at start-up is not "used".
"""
import fcntl
import glob
import os

from utils.errors import UserError

LOCK = '.lock'


def earlier_run(path):
    """What in folder ``path`` shows an earlier run (a short list of names), or [] for none."""
    found = []
    if glob.glob(os.path.join(path, 'checkpoints', 'epoch_*')):
        found.append('checkpoints/')
    params = sorted(os.path.basename(p) for p in glob.glob(os.path.join(path, '*.params')))
    found += params[:2] + (['...'] if len(params) > 2 else [])
    if glob.glob(os.path.join(path, 'tensorboard_log', '**', 'events.out.tfevents.*'), recursive=True):
        found.append('tensorboard_log/')
    return found


def _aside(path):
    """A free sibling name SAVE_DIR.old-N for --overwrite."""
    n = 1
    while os.path.exists('%s.old-%d' % (path, n)):
        n += 1
    return '%s.old-%d' % (path, n)


class RunDir:
    """The run's --save_dir, locked while the object lives (``close`` or process exit releases it)."""

    def __init__(self, path, resume=False, overwrite=False):
        self.path = path
        self._fd = None
        try:
            os.makedirs(path, exist_ok=True)
            self._lock()
            used = earlier_run(path)
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
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            with os.fdopen(fd) as f:
                pid = f.read().strip() or 'unknown'
            raise UserError('--save_dir %s is in use by a live run (PID %s); wait for it or choose another '
                            '--save_dir' % (self.path, pid)) from None
        os.ftruncate(fd, 0)
        os.write(fd, b'%d\n' % os.getpid())
        self._fd = fd

    def _move_aside(self):
        """--overwrite: the old run's files go to SAVE_DIR.old-N, the lock stays here."""
        old = _aside(self.path)
        os.makedirs(old)
        for name in os.listdir(self.path):
            if name != LOCK:
                os.rename(os.path.join(self.path, name), os.path.join(old, name))
        print('--overwrite: moved the earlier run in %s to %s' % (self.path, old))

    def close(self):
        if self._fd is not None:
            os.close(self._fd)      # releases the lock
            self._fd = None
