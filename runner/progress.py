"""Progress within an epoch, shown only when an epoch is slow.

The epochs bar counts epochs; on real images at 227 px on a CPU one epoch lasts minutes, and that
bar then sits still. IterationBar adds a second bar, below it, counting the epoch's iterations with
images/s and the time left, once the epoch has run for ``SLOW_EPOCH_SECONDS``; fast epochs (the
digits demo: a fraction of a second) never show it, so they keep one bar per epoch.
"""
import sys
import time

SLOW_EPOCH_SECONDS = 5.0


class IterationBar:
    """The iterations of one epoch: ``update(n)`` after each (n done of ``steps``), ``close()`` at its end.

    batch_size: images per iteration (for images/s). enabled: False on the workers that do not log.
    clock: seconds (time.monotonic; tests pass their own). file: where the bars are drawn.
    """

    def __init__(self, steps, batch_size, desc, enabled=True, after=None, clock=time.monotonic, file=None):
        if steps < 1 or batch_size < 1:
            raise ValueError('steps and batch_size must be positive, got %d and %d' % (steps, batch_size))
        self.steps, self.batch_size, self.desc, self.enabled = steps, batch_size, desc, enabled
        self.after = SLOW_EPOCH_SECONDS if after is None else after
        self.clock, self.file = clock, file or sys.stdout
        self.start, self.bar = clock(), None

    def update(self, done):
        now = self.clock()
        if self.bar is None:
            if not self.enabled or now - self.start < self.after:
                return
            from tqdm import tqdm
            # Under the epochs bar (position 0), cleared at the epoch's end. Rate and ETA from the
            # epoch's start by our clock (tqdm's would start only now, with the bar).
            self.bar = tqdm(total=self.steps, initial=done, desc=self.desc, position=1, leave=False,
                            file=self.file, dynamic_ncols=True,
                            bar_format='{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} it{postfix}')
        else:
            self.bar.update(done - self.bar.n)
        rate = done / max(now - self.start, 1e-9)      # iterations per second
        self.bar.set_postfix_str('%.1f img/s, ETA %s' % (rate * self.batch_size,
                                                         self.bar.format_interval((self.steps - done) / rate)))

    def close(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None
