"""--keep_best: older best-epoch files go only after a newer one is safely written; the
iteration bar of slow epochs; both through main.py."""
import errno
import io
import os
import re

import pytest

import main
from runner import progress
from runner.checkpoint import save_best
from utils.errors import UserError


class FakeNet:
    """save_parameters writes a small file, or raises the OSError given."""

    def __init__(self, error=None):
        self.error = error

    def save_parameters(self, path):
        if self.error:
            raise self.error
        with open(path, 'wb') as f:
            f.write(b'params')


def best_epochs(folder):
    return sorted(int(m.group(1)) for m in (re.match(r'model_epoch_(\d+)\.params$', n) for n in os.listdir(folder)) if m)


@pytest.mark.parametrize('keep, kept', [(1, [12]), (2, [9, 12]), (3, [5, 9, 12]), (0, [3, 5, 9, 12])])
def test_keep_the_newest_best_files(tmp_path, keep, kept):
    (tmp_path / 'model_final.params').write_bytes(b'final')    # other files are not touched
    for epoch in (3, 5, 9, 12):
        path = save_best(FakeNet(), str(tmp_path), epoch, keep)
        assert os.path.isfile(path) and epoch in best_epochs(tmp_path)
    assert best_epochs(tmp_path) == kept
    assert (tmp_path / 'model_final.params').exists()


def test_a_failed_write_keeps_the_older_best(tmp_path):
    save_best(FakeNet(), str(tmp_path), 4, 1)
    with pytest.raises(UserError, match='model_epoch_00008.params'):
        save_best(FakeNet(OSError(errno.ENOSPC, 'No space left on device')), str(tmp_path), 8, 1)
    assert best_epochs(tmp_path) == [4] and os.listdir(tmp_path) == ['model_epoch_00004.params']


def test_files_of_an_abandoned_run_go_first(tmp_path):
    """Resumed from an earlier checkpoint: a best file with a higher epoch but older is not 'newest'."""
    stale = tmp_path / 'model_epoch_00050.params'
    stale.write_bytes(b'old')
    os.utime(stale, (1, 1))
    save_best(FakeNet(), str(tmp_path), 10, 2)
    save_best(FakeNet(), str(tmp_path), 20, 2)
    assert best_epochs(tmp_path) == [10, 20]


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_iteration_bar_only_for_slow_epochs():
    clock, out = Clock(), io.StringIO()
    bar = progress.IterationBar(10, 128, 'epoch 3', after=5, clock=clock, file=out)
    for i in range(1, 11):          # a fast epoch: one bar per epoch, this one never shows
        clock.now += 0.1
        bar.update(i)
    bar.close()
    assert out.getvalue() == ''
    bar = progress.IterationBar(10, 128, 'epoch 4', after=5, clock=clock, file=out)
    for i in range(1, 5):           # 20 s per step
        clock.now += 20
        bar.update(i)
    text = out.getvalue()
    # iterations, images/s and the time left at 20 s per step of 128 images: 6 steps, 2 minutes
    assert 'epoch 4' in text and '4/10 it, 6.4 img/s, ETA 02:00' in text, text
    bar.close()


def test_iteration_bar_off_on_other_workers():
    clock, out = Clock(), io.StringIO()
    bar = progress.IterationBar(10, 128, 'epoch 1', enabled=False, after=0, clock=clock, file=out)
    for i in range(1, 11):
        clock.now += 30
        bar.update(i)
    bar.close()
    assert out.getvalue() == ''


@pytest.mark.slow
def test_through_main(tmp_path, capsys, monkeypatch):
    """--keep_best 1 leaves the last improvement only, 0 every one; slow epochs show their iterations.
    The evaluation is replaced by a fixed R@1 curve (improving at epochs 1, 2 and 4): this tests the
    files main.py keeps, not the model."""
    from runner import trainer
    curve = iter([0.5, 0.6, 0.55, 0.7] * 2)
    monkeypatch.setattr(trainer, 'evaluate_net', lambda *args, **kwargs: ({'R@1': next(curve)}, None))
    monkeypatch.setattr(progress, 'SLOW_EPOCH_SECONDS', 0.0)
    flags = ['--epochs', '4', '--eval_epoch_term', '1', '--checkpoint_epochs', '0', '--recallk', '1',
             '--eval_metrics', 'recall']
    for keep, kept in (('1', [4]), ('0', [1, 2, 4])):
        save_dir = tmp_path / keep
        assert main.main(flags + ['--keep_best', keep, '--save_dir', str(save_dir)]) == 0
        out = capsys.readouterr().out
        assert [int(e) for e in re.findall(r'\[epoch (\d+)\] .*\(best\)', out)] == [1, 2, 4]
        assert best_epochs(save_dir) == kept
        assert 'img/s' in out and 'epoch 1' in out                   # the iteration bar was drawn
