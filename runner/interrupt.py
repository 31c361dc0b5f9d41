"""SIGTERM and SIGINT stop a run at any moment with one line and exit status 128 + the signal's number.

A cluster scheduler sends SIGTERM before it kills a job; Ctrl-C sends SIGINT to the terminal's whole
process group. Two phases:
  - preparing (``prepare()``: reading and checking the data, filling the cache, building the model,
    loading a checkpoint): nothing can be saved yet, so a signal stops the run at once, saying
    that no checkpoint was written;
  - training (``arm()``): the first signal only sets a flag that the training loop reads after
    every iteration (it then writes a checkpoint and stops).
In both, a second signal exits at once. Processes forked meanwhile (check and cache workers,
DataLoader workers) ignore SIGINT, which the main process answers for them, and die silently on
SIGTERM (how their pools end them), so no worker prints a traceback.
"""
import os
import signal

from utils.errors import UserError

SIGNALS = (signal.SIGTERM, signal.SIGINT)
_quiet_children = False     # set while a StopFlag is active: see _child_signals


def _child_signals():
    if _quiet_children:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


os.register_at_fork(after_in_child=_child_signals)


def _exit_now(signum):
    """A second signal: one line, and out at once (no cleanup, no checkpoint)."""
    os.write(2, b'stopped by a second %s: exiting at once\n' % signal.Signals(signum).name.encode())
    os._exit(128 + signum)


class Stopped(UserError):
    """A run stopped by a signal: its line, and exit status 128 + N."""
    prefix = ''

    def __init__(self, message, signum):
        super().__init__(message)
        self.status = 128 + signum


class StopFlag:
    """The run's view of SIGTERM and SIGINT: ``prepare()``, then ``arm()`` when training starts,
    ``restore()`` at the end (the original handlers back). ``signum`` is None until a signal arrives."""

    def __init__(self):
        self.signum = None
        self._original = {sig: signal.getsignal(sig) for sig in SIGNALS}

    @property
    def name(self):
        return signal.Signals(self.signum).name if self.signum else None

    def _install(self, handler):
        global _quiet_children
        _quiet_children = True
        for sig in SIGNALS:
            signal.signal(sig, handler)

    def prepare(self):
        self._install(self._stop_now)

    def _stop_now(self, signum, frame):
        self._handle(signum, frame)     # (a second signal exits at once)
        raise Stopped('stopped by %s before training began: no checkpoint was written yet (nothing to --resume)'
                      % self.name, signum)

    def arm(self):
        self._install(self._handle)

    def _handle(self, signum, frame):
        if self.signum is not None:
            _exit_now(signum)
        self.signum = signum

    def restore(self):
        global _quiet_children
        _quiet_children = False
        for sig, handler in self._original.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
