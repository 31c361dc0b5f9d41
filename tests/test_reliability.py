"""Crashes and resumption, NaN losses, several devices: training that survives."""
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import mxnet as mx

import main
from loss import HPHNTripletLoss, ProxyAnchorLoss
from runner.checkpoint import Checkpointer
from utils.errors import UserError
from utils.events import read_scalars

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = ['--batch_size', '40', '--num_instances', '8', '--eval_epoch_term', '4', '--checkpoint_epochs', '2']


def losses_of(save_dir):
    """The logged loss per global step; a resumed run overwrites the steps it repeats."""
    return dict(read_scalars(save_dir)['loss'])


@pytest.mark.slow
def test_resumed_run_continues_exactly(tmp_path):
    whole, parts = str(tmp_path / 'whole'), str(tmp_path / 'parts')
    assert main.main(SMALL + ['--epochs', '6', '--save_dir', whole]) == 0
    assert main.main(SMALL + ['--epochs', '4', '--save_dir', parts]) == 0
    assert main.main(SMALL + ['--epochs', '6', '--save_dir', parts, '--resume']) == 0
    assert losses_of(whole) == losses_of(parts)
    state = Checkpointer.read_state(os.path.join(parts, 'checkpoints', 'epoch_00006'))
    assert state['epoch'] == 6 and state['global_step'] == 6
    assert [os.path.basename(p) for p in Checkpointer(parts).paths()] == ['epoch_00004', 'epoch_00006']


@pytest.mark.slow
def test_resume_from_a_chosen_epoch_and_bad_resume_paths(tmp_path, capsys):
    run = str(tmp_path / 'run')
    main.main(SMALL + ['--epochs', '4', '--save_dir', run, '--keep_checkpoints', '5'])
    capsys.readouterr()
    assert main.main(SMALL + ['--epochs', '5', '--save_dir', run, '--resume', '--start_epoch', '2']) == 0
    assert 'resumed from %s' % os.path.join(run, 'checkpoints', 'epoch_00002') in capsys.readouterr().out
    assert main.main(SMALL + ['--epochs', '5', '--save_dir', run, '--resume', '--start_epoch', '3']) == 2
    assert 'no checkpoint' in capsys.readouterr().err
    assert main.main(SMALL + ['--save_dir', run, '--resume', str(tmp_path)]) == 2
    assert 'is not a checkpoint folder' in capsys.readouterr().err


@pytest.mark.slow
def test_auto_resume_without_checkpoint_starts_afresh(tmp_path, capsys):
    assert main.main(SMALL + ['--epochs', '2', '--save_dir', str(tmp_path), '--resume']) == 0
    assert 'starting afresh' in capsys.readouterr().out


def load_checkpoint_files(path):
    """Every file of a checkpoint folder matches its manifest and reads back (arrays, JSON)."""
    state = Checkpointer.read_state(path)
    mx.nd.load(os.path.join(path, 'model.params'))
    assert set(mx.nd.load(os.path.join(path, 'optimizer.params'))) == {
        'state/%s/%d' % (index, j) for index in state['optimizer']['structure'] for j in (0, 1)}    # Adam: m, v
    return state


@pytest.mark.slow
def test_kill_minus_nine_never_corrupts_checkpoints(tmp_path):
    save_dir = str(tmp_path)
    flags = [sys.executable, 'main.py'] + SMALL + ['--epochs', '400', '--checkpoint_epochs', '1',
                                                  '--eval_epoch_term', '3', '--save_dir', save_dir,
                                                  '--keep_checkpoints', '3', '--resume']
    rng = random.Random(0)
    checkpoints = Checkpointer(save_dir)
    for attempt in range(4):
        before = len(checkpoints.paths()) and int(checkpoints.latest()[-5:])
        proc = subprocess.Popen(flags, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 60
        while time.time() < deadline and (not checkpoints.latest() or int(checkpoints.latest()[-5:]) <= before):
            time.sleep(0.05)
        time.sleep(rng.uniform(0, 1.5))      # somewhere in the middle of an epoch or of a write
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        paths = checkpoints.paths()
        assert paths, 'no checkpoint before the kill'
        for path in paths:
            assert load_checkpoint_files(path)['epoch'] == int(path[-5:])
    latest = checkpoints.latest()
    saved = load_checkpoint_files(latest)
    out = subprocess.run(flags[:flags.index('--epochs') + 1] + [str(saved['epoch'] + 1)] +
                         flags[flags.index('--epochs') + 2:], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert 'resumed from %s: epoch %d, best %s' % (latest, saved['epoch'], main.fmt(saved['best'])) in out.stdout


class NaNAfter(HPHNTripletLoss):
    """HPHN triplet whose loss turns NaN from the third call on."""
    calls = 0

    def forward(self, embeddings, labels):
        NaNAfter.calls += 1
        out = super().forward(embeddings, labels)
        return out * float('nan') if NaNAfter.calls >= 3 else out


@pytest.mark.slow
def test_nan_loss_stops_with_epoch_and_step(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(main, 'build_loss', lambda args, classes: NaNAfter(n_inner_pts=2, num_instances=8))
    assert main.main(SMALL + ['--epochs', '6', '--save_dir', str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert 'loss is nan at epoch 3, iteration 1 (global step 3)' in err[0]
    assert os.path.join(str(tmp_path), 'checkpoints', 'epoch_00002') in err[0]
    assert load_checkpoint_files(os.path.join(str(tmp_path), 'checkpoints', 'epoch_00002'))['epoch'] == 2


@pytest.mark.parametrize('make_loss', [lambda: HPHNTripletLoss(margin=0.2, n_inner_pts=2, num_instances=8),
                                       lambda: ProxyAnchorLoss(num_classes=5, embed_dim=8)],
                         ids=['hphn_triplet', 'proxy_anchor'])
def test_two_cpu_contexts_equal_one(tmp_path, make_loss):
    """The batch is split over the devices, the loss sees it whole: same loss, same update."""
    rng = np.random.RandomState(0)
    images = mx.nd.array(rng.randn(32, 3, 4, 4))
    labels = mx.nd.array(np.repeat([3, 1, 4, 2], 8), dtype=np.int32)
    results = []
    for ctx in ([mx.cpu(0)], [mx.cpu(0), mx.cpu(1)]):
        mx.random.seed(1)
        net = mx.gluon.nn.HybridSequential()
        net.add(mx.gluon.nn.Flatten(), mx.gluon.nn.Dense(16, activation='tanh'), mx.gluon.nn.Dense(8))
        net.initialize(mx.init.Xavier(), ctx=ctx)
        net.hybridize()
        loss = make_loss()
        loss.initialize(mx.init.Normal(1), ctx=ctx)
        loss.hybridize()
        params = net.collect_params()
        params.update(loss.collect_params())
        trainer = mx.gluon.Trainer(params, 'sgd', {'learning_rate': 0.1}, kvstore='device')
        value = main.train_step(net, loss, trainer, images, labels, ctx)[0]     # (loss, embeddings, labels)
        results.append((value, [p.data(c).asnumpy() for p in params.values() for c in ctx]))
    assert results[0][0] == pytest.approx(results[1][0], rel=1e-6)
    one, two = results[0][1], results[1][1]
    assert len(two) == 2 * len(one)
    for i, a in enumerate(one):         # every copy on both devices updated as the single one
        np.testing.assert_allclose(a, two[2 * i], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(a, two[2 * i + 1], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('flags,expected', [
    (['--ctx', 'tpu:0'], '--ctx expects'),
    (['--ctx', 'cpu:0,cpu:0'], 'names a device twice'),
    (['--ctx', 'gpu:0'], 'MXNet sees 0 GPU'),
    (['--ctx', 'cpu', '--gpu_idx', '0'], 'not both'),
    (['--ctx', 'cpu:0,cpu:1,cpu:2'], 'split evenly over the 3 devices'),
    (['--checkpoint_epochs', '-1'], '--checkpoint_epochs'),
])
def test_device_and_checkpoint_flag_errors(tmp_path, capsys, flags, expected):
    assert main.main(flags + ['--save_dir', str(tmp_path)]) == 2
    assert expected in capsys.readouterr().err


def test_checkpointer_keeps_the_newest_and_ignores_temporary_folders(tmp_path):
    net = mx.gluon.nn.Dense(2, in_units=3)
    net.initialize()
    trainer = mx.gluon.Trainer(net.collect_params(), 'adam')
    loss = HPHNTripletLoss()
    ck = Checkpointer(str(tmp_path), keep=2)
    state = {'best': {}, 'best_chosen': None, 'args': {'epochs': 4}, 'epoch_random': None}
    for epoch in (1, 2, 3):
        ck.save(epoch, net, trainer, loss, dict(state, global_step=epoch))
    os.makedirs(os.path.join(ck.root, '.tmp-epoch_00009-123'))       # a crash mid-write
    os.makedirs(os.path.join(ck.root, '.trash-epoch_00001-123'))     # a crash mid-removal
    assert [os.path.basename(p) for p in ck.paths()] == ['epoch_00002', 'epoch_00003']
    ck.save(4, net, trainer, loss, dict(state, global_step=4))
    assert sorted(os.listdir(ck.root)) == ['epoch_00003', 'epoch_00004']
    assert Checkpointer.load(ck.latest(), net, trainer, loss, mx.cpu())['global_step'] == 4
    with pytest.raises(UserError, match='cannot resume'):
        os.remove(os.path.join(ck.latest(), 'model.params'))
        Checkpointer.load(ck.latest(), net, trainer, loss, mx.cpu())
