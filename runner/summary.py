"""mxboard logging with the official tags (``loss``, ``lr``, ``metric/R1``, ``metric/R1/best``, ...).

Every metric is logged twice, as the official code does: against the global step (``metric/...``)
and against the epoch (``metric_epoch/...``). View with ``tensorboard --logdir SAVE_DIR``.
"""
import os

from mxboard import SummaryWriter


def metric_tag(key):
    """Tag name of an evaluation key: 'R@1' -> 'R1' (official), 'MAP@R' -> 'MAP_R', 'NMI' -> 'NMI'."""
    return key.replace('R@', 'R') if key.startswith('R@') else key.replace('@', '_')


class Summary:
    """Scalars for TensorBoard under ``save_dir/tensorboard_log``."""

    def __init__(self, save_dir):
        self.writer = SummaryWriter(logdir=os.path.join(save_dir, 'tensorboard_log'), flush_secs=10,
                                    verbose=False)

    def scalar(self, tag, value, step):
        self.writer.add_scalar(tag, float(value), step)

    def metrics(self, metrics, step, epoch, suffix='', prefix=''):
        """Log {'R@1': 0.7, 'NMI': 0.6, ...} at the global step and at the epoch, as
        ``<prefix>metric/R1<suffix>`` and ``<prefix>metric_epoch/R1<suffix>``."""
        for key, value in metrics.items():
            tag = metric_tag(key) + suffix
            self.scalar(prefix + 'metric/' + tag, value, step)
            self.scalar(prefix + 'metric_epoch/' + tag, value, epoch)

    def flush(self):
        """Write what is buffered: called at every evaluation and checkpoint, so that a kill -9 loses
        at most the steps since then (the writer's own flush_secs is 10 s)."""
        self.writer.flush()

    def close(self):
        self.writer.close()
