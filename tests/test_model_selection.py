"""Model selection as a user sees it: the epoch kept, the file saved, the logged ``/best`` and the
best printed, with the evaluation scripted (runner.trainer.evaluate_net stubbed) so that validation
and test disagree, tie, or get worse after a resume on purpose. Tiny digits runs: two batches per epoch."""
import glob
import os

import pytest

import main
import runner.trainer
from utils.events import read_scalars

# --keep_best 0 keeps every improvement's file (as the release), so the saved files list the epochs chosen
TINY = ['--batch_size', '16', '--num_instances', '8', '--num_workers', '0', '--eval_epoch_term', '1',
        '--summary_step', '1', '--eval_metrics', 'recall', '--recallk', '1', '--keep_best', '0']


def script(monkeypatch, test, val=()):
    """evaluate_net gives the next R@1 of ``test`` (split 'test') or of ``val`` (split 'val')."""
    left = {'test': list(test), 'val': list(val)}

    def scripted(net, loaders, ctx, args, split='test'):
        return {'R@1': left[split].pop(0)}, {}
    monkeypatch.setattr(runner.trainer, 'evaluate_net', scripted)
    return left


def saved_epochs(save_dir):
    return sorted(int(os.path.basename(p)[len('model_epoch_'):-len('.params')])
                  for p in glob.glob(os.path.join(save_dir, 'model_epoch_*.params')))


def test_validation_classes_choose_the_epoch_and_the_first_of_equals_is_kept(tmp_path, monkeypatch, capsys):
    """Test R@1 peaks at epoch 2, validation R@1 at epochs 3 and 4 (equal): epoch 3 is the model."""
    left = script(monkeypatch, test=[0.5, 0.9, 0.6, 0.7], val=[0.6, 0.5, 0.8, 0.8])
    assert main.main(TINY + ['--epochs', '4', '--val_class_ratio', '0.4', '--save_dir', str(tmp_path)]) == 0
    assert left == {'test': [], 'val': []}                  # both splits evaluated at every epoch
    assert saved_epochs(str(tmp_path)) == [1, 3]
    s = read_scalars(str(tmp_path))
    assert s['metric_epoch/R1/best'] == [(1, 0.5), (3, pytest.approx(0.6))]    # the test R@1 of epoch 3
    assert [e for e, _ in s['val_metric_epoch/R1']] == [1, 2, 3, 4]
    assert 'best: R@1 60.00 (chosen on val R@1)' in capsys.readouterr().out


@pytest.mark.slow
def test_a_resumed_run_remembers_the_best_so_far(tmp_path, monkeypatch, capsys):
    """Epoch 2 was the best before the stop; the resumed run's epoch 3 is worse and is not kept."""
    save_dir = str(tmp_path)
    script(monkeypatch, test=[0.5, 0.9])
    assert main.main(TINY + ['--epochs', '2', '--checkpoint_epochs', '1', '--save_dir', save_dir]) == 0
    script(monkeypatch, test=[0.7])
    capsys.readouterr()
    assert main.main(TINY + ['--epochs', '3', '--checkpoint_epochs', '1', '--save_dir', save_dir, '--resume']) == 0
    out = capsys.readouterr().out
    assert 'best: R@1 90.00' in out and '(best)' not in out.split('resumed from')[1]
    assert saved_epochs(save_dir) == [1, 2]
    assert [e for e, _ in read_scalars(save_dir)['metric_epoch/R1/best']] == [1, 2]


@pytest.mark.slow
def test_the_synthetic_share_is_logged_at_every_summary_step(tmp_path, monkeypatch):
    """Two batches per epoch, --summary_step 1: the share of synthetic negatives at every step, as the loss."""
    script(monkeypatch, test=[0.5, 0.6])
    assert main.main(TINY + ['--epochs', '2', '--save_dir', str(tmp_path)]) == 0
    s = read_scalars(str(tmp_path))
    steps = [step for step, _ in s[runner.trainer.SYNTHETIC_TAG]]
    assert steps == [step for step, _ in s['loss']] == [1, 2, 3, 4]
    assert all(0 <= v <= 1 for _, v in s[runner.trainer.SYNTHETIC_TAG])
