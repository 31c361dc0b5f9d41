"""SIGTERM and SIGINT stop training cleanly: after the current iteration, with a checkpoint.

A cluster scheduler sends SIGTERM before it kills a job; Ctrl-C sends SIGINT. The first one only
sets a flag that the training loop reads after every iteration (it then writes a checkpoint and
exits with status 128 + the signal's number); a second one exits at once.
"""
import os
import signal

from utils.errors import UserError

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Stopped(UserError):
    """Training stopped by a signal after writing a checkpoint: its line, and exit status 128 + N."""
    prefix = ''

    def __init__(self, message, signum):
        super().__init__(message)
        self.status = 128 + signum


class StopFlag:
    """The training loop's view of SIGTERM and SIGINT.

    ``before_workers()`` makes SIGINT ignored, so that processes forked next (DataLoader workers)
    ignore it: Ctrl-C reaches the whole terminal's process group, and each worker would print its
    own KeyboardInterrupt traceback. ``arm()`` then installs the handlers in this process;
    ``restore()`` puts the original ones back. ``signum`` is None until a signal arrives.
    """

    def __init__(self):
        self.signum = None
        self._original = {sig: signal.getsignal(sig) for sig in SIGNALS}

    @property
    def name(self):
        return signal.Signals(self.signum).name if self.signum else None

    def before_workers(self):
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    def arm(self):
        for sig in SIGNALS:
            signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        if self.signum is not None:
            os._exit(128 + signum)
        self.signum = signum

    def restore(self):
        for sig, handler in self._original.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
