"""Hostile and careless input: checkpoints that run no code, one run per folder, resume flags,
signals, and one line for every bad input."""
import json
import os
import pickle
import random
import re
import signal
import subprocess
import sys

import mxnet as mx
import numpy as np
import pytest

import main
from loss import HPHNTripletLoss
from runner import checkpoint as ck
from runner.checkpoint import Checkpointer
from runner.run_dir import RunDir
from utils.errors import UserError
from utils.events import read_scalars

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# two one-batch epochs between checkpoints; digits trains on 5 classes
SMALL = ['--batch_size', '40', '--num_instances', '8', '--eval_epoch_term', '2', '--checkpoint_epochs', '1']


def run(capsys, *flags):
    """(exit status, stdout, stderr lines) of main.main in this process."""
    capsys.readouterr()
    try:
        status = main.main(list(flags))
    except SystemExit as exc:
        status = exc.code
    out = capsys.readouterr()
    return status, out.out, [line for line in out.err.splitlines() if line.strip()]


class Planted:
    """A pickle that, when unpickled, creates ``marker``: the attack of a shared checkpoint."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, 'w'))


def plant(path, marker):
    with open(path, 'wb') as f:
        pickle.dump(Planted(marker), f)


def rewrite_manifest(folder):
    """An attacker who also fixes the checksums."""
    files = {n: {'size': os.path.getsize(os.path.join(folder, n)), 'sha256': ck._sha256(os.path.join(folder, n))}
             for n in os.listdir(folder) if n != ck.MANIFEST}
    with open(os.path.join(folder, ck.MANIFEST), 'w') as f:
        json.dump({'format': ck.FORMAT, 'files': files}, f)


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """A finished two-epoch digits run with checkpoints epoch_00001 and epoch_00002."""
    save_dir = str(tmp_path_factory.mktemp('trained'))
    assert main.main(SMALL + ['--epochs', '2', '--save_dir', save_dir]) == 0
    return save_dir


def copy_run(src, dst):
    import shutil
    shutil.copytree(src, dst)
    os.remove(os.path.join(dst, '.lock'))
    return dst


@pytest.mark.slow
@pytest.mark.parametrize('name', ['model.params', 'optimizer.params', 'state.json', 'manifest.json'])
def test_a_planted_pickle_in_any_checkpoint_file_runs_nothing(trained, tmp_path, capsys, name):
    save_dir = copy_run(trained, str(tmp_path / 'run'))
    marker = str(tmp_path / 'pwned')
    newest = os.path.join(save_dir, 'checkpoints', 'epoch_00002')
    for folder in (newest, os.path.join(save_dir, 'checkpoints', 'epoch_00001')):
        plant(os.path.join(folder, name), marker)
        if name != 'manifest.json':
            rewrite_manifest(folder)
    status, _, err = run(capsys, *SMALL, '--epochs', '3', '--save_dir', save_dir, '--resume')
    assert not os.path.exists(marker)
    assert status == 2 and err[-1].startswith('error: ') and 'Traceback' not in ' '.join(err)


def test_old_pickle_checkpoints_are_refused_unread(tmp_path, capsys):
    folder = tmp_path / 'run' / 'checkpoints' / 'epoch_00003'
    os.makedirs(str(folder))
    marker = str(tmp_path / 'pwned')
    plant(str(folder / 'state.pkl'), marker)
    status, _, err = run(capsys, '--save_dir', str(tmp_path / 'run'), '--resume', str(folder))
    assert status == 2 and len(err) == 1 and 'state.pkl' in err[0] and 'not read' in err[0]
    status, _, err = run(capsys, '--save_dir', str(tmp_path / 'run'), '--resume')     # auto finds it too
    assert status == 2 and 'state.pkl' in err[-1]
    assert not os.path.exists(marker)


def flip_a_byte(path):
    """One byte of the file changed, its size kept: only the SHA-256 of the manifest tells."""
    with open(path, 'r+b') as f:
        f.seek(os.path.getsize(path) // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0x10]))


def truncate(path):
    with open(path, 'r+b') as f:        # as a full disk leaves it
        f.truncate(100)


@pytest.mark.slow
@pytest.mark.parametrize('damage', [truncate, flip_a_byte])
def test_corrupt_newest_checkpoint_falls_back_to_the_previous(trained, tmp_path, capsys, damage):
    save_dir = copy_run(trained, str(tmp_path / 'run'))
    newest = os.path.join(save_dir, 'checkpoints', 'epoch_00002')
    damage(os.path.join(newest, 'model.params'))
    status, out, err = run(capsys, *SMALL, '--epochs', '3', '--save_dir', save_dir, '--resume')
    assert status == 0, err
    assert len([e for e in err if 'corrupt' in e]) == 1 and newest in err[0] and 'model.params' in err[0]
    assert 'resumed from %s' % os.path.join(save_dir, 'checkpoints', 'epoch_00001') in out


def test_a_same_size_tampered_file_is_not_loaded(tmp_path):
    """A changed byte, the size kept: --resume falls back to the checkpoint before, and names the file."""
    net = mx.gluon.nn.Dense(2, in_units=3)
    net.initialize()
    trainer = mx.gluon.Trainer(net.collect_params(), 'adam')
    checkpoints = Checkpointer(str(tmp_path))
    for epoch in (1, 2):
        checkpoints.save(epoch, net, trainer, HPHNTripletLoss(), {'best': {}, 'global_step': epoch})
    older, newest = checkpoints.paths()
    size = os.path.getsize(os.path.join(newest, 'model.params'))
    flip_a_byte(os.path.join(newest, 'model.params'))
    assert os.path.getsize(os.path.join(newest, 'model.params')) == size
    warnings = []
    assert checkpoints.newest_valid(warnings.append) == older
    assert len(warnings) == 1 and newest in warnings[0] and 'model.params' in warnings[0]
    with pytest.raises(UserError, match='corrupt'):        # --resume naming that folder
        Checkpointer.read_state(newest)


@pytest.mark.slow
def test_no_usable_checkpoint_is_one_line_naming_them(trained, tmp_path, capsys):
    save_dir = copy_run(trained, str(tmp_path / 'run'))
    for name in ('epoch_00001', 'epoch_00002'):
        os.remove(os.path.join(save_dir, 'checkpoints', name, 'state.json'))
    status, _, err = run(capsys, *SMALL, '--epochs', '3', '--save_dir', save_dir, '--resume')
    assert status == 2 and err[-1].startswith('error: no usable checkpoint')
    assert 'epoch_00001' in err[-1] and 'epoch_00002' in err[-1]


@pytest.mark.slow
def test_a_used_save_dir_is_refused_and_overwrite_moves_it_aside(trained, tmp_path, capsys):
    save_dir = copy_run(trained, str(tmp_path / 'run'))
    before = sorted(os.listdir(save_dir))
    status, _, err = run(capsys, *SMALL, '--epochs', '1', '--save_dir', save_dir)
    assert status == 2 and len(err) == 1 and '--resume' in err[0] and '--overwrite' in err[0]
    assert sorted(set(os.listdir(save_dir)) - {'.lock'}) == before     # nothing touched but the lock file
    status, out, _ = run(capsys, *SMALL, '--epochs', '1', '--save_dir', save_dir, '--overwrite')
    assert status == 0 and save_dir + '.old-1' in out
    assert sorted(os.listdir(save_dir + '.old-1')) == [n for n in before if n != '.lock']
    assert [os.path.basename(p) for p in Checkpointer(save_dir).paths()] == ['epoch_00001']


@pytest.mark.slow
def test_a_folder_with_only_args_txt_is_not_used(tmp_path, capsys):
    save_dir = tmp_path / 'run'
    os.makedirs(str(save_dir))
    (save_dir / 'args.txt').write_text('--epochs=1\n')
    status, _, err = run(capsys, *SMALL, '--epochs', '1', '--save_dir', str(save_dir))
    assert status == 0, err


def test_a_live_run_locks_its_folder(tmp_path):
    first = RunDir(str(tmp_path))
    try:
        with pytest.raises(UserError, match='in use by a live run \\(PID %d\\)' % os.getpid()):
            RunDir(str(tmp_path))
    finally:
        first.close()
    RunDir(str(tmp_path)).close()                                       # released


@pytest.mark.slow
def test_resume_applies_schedule_flags_and_refuses_model_flags(trained, tmp_path, capsys):
    save_dir = copy_run(trained, str(tmp_path / 'run'))
    status, out, err = run(capsys, *SMALL, '--epochs', '3', '--wd', '0.5', '--save_dir', save_dir, '--resume')
    assert status == 0, err
    assert 'resume: --wd 0.0005 -> 0.5 (applied)' in out and 'resume: --epochs 2 -> 3 (applied)' in out
    assert '--wd=0.5' in open(os.path.join(save_dir, 'args.txt')).read()
    assert Checkpointer.read_state(os.path.join(save_dir, 'checkpoints', 'epoch_00003'))['args']['wd'] == 0.5
    for flags, named in ((['--loss', 'lifted'], '--loss hphn_triplet -> lifted'),
                         (['--optim', 'sgd'], '--optim adam -> sgd'),
                         (['--embed_dim', '64', '--n_inner_pts', '1'], '--embed_dim 512 -> 64; --n_inner_pts 2 -> 1')):
        status, _, err = run(capsys, *SMALL, '--epochs', '4', '--save_dir', save_dir, '--resume', *flags)
        assert status == 2 and len(err) == 1 and named in err[0], err


@pytest.mark.slow
def test_resume_with_another_selection_metric_rebases_the_best_epoch(trained, tmp_path, capsys):
    save_dir = copy_run(trained, str(tmp_path / 'run'))
    status, out, err = run(capsys, *SMALL, '--epochs', '4', '--select_metric', 'NMI', '--save_dir', save_dir,
                           '--resume')
    assert status == 0, err
    assert 'the best epoch is now chosen on NMI (was R@1)' in out
    # NMI (about 0.4 here) is not compared with the best R@1 (about 0.9): the first evaluation after
    # resuming, epoch 4, is the best so far and is written
    assert os.path.isfile(os.path.join(save_dir, 'model_epoch_00004.params'))
    state = Checkpointer.read_state(os.path.join(save_dir, 'checkpoints', 'epoch_00004'))
    assert state['best_chosen'] == state['best']['NMI'] < 0.8


@pytest.mark.slow
def test_resume_restores_the_weight_decay_of_the_new_run(trained, tmp_path, monkeypatch):
    """The old trainer.load_states unpickled the optimiser and with it the old weight decay."""
    seen = []
    real = main.build_trainer

    def spy(args, net, loss_fn, kvstore):
        trainer = real(args, net, loss_fn, kvstore)
        seen.append(trainer)
        return trainer
    monkeypatch.setattr(main, 'build_trainer', spy)
    save_dir = copy_run(trained, str(tmp_path / 'run'))
    assert main.main(SMALL + ['--epochs', '3', '--wd', '0.25', '--save_dir', save_dir, '--resume']) == 0
    opt = seen[0]._optimizer
    assert opt.wd == 0.25 and opt.num_update == 3          # the saved counters, the new flag


def test_optimizer_states_and_random_states_round_trip(tmp_path):
    """After a restore, the next Adam step and the next random draws equal the uninterrupted ones."""
    def setup():
        mx.random.seed(0)
        net = mx.gluon.nn.Dense(3, in_units=4)
        net.initialize(mx.init.Xavier())
        return net, mx.gluon.Trainer(net.collect_params(), 'adam', {'learning_rate': 0.1, 'wd': 0.01})

    def step(net, trainer, seed):
        x = mx.nd.array(np.random.RandomState(seed).randn(5, 4))
        with mx.autograd.record():
            y = (net(x) ** 2).sum()
        y.backward()
        trainer.step(1)

    net, trainer = setup()
    for s in range(3):
        step(net, trainer, s)
    random.seed(7)
    np.random.seed(7)
    state = {'best': {}, 'best_chosen': None, 'global_step': 3, 'args': {'epochs': 5}, 'epoch_random': None}
    path = Checkpointer(str(tmp_path)).save(3, net, trainer, HPHNTripletLoss(), state)
    expected_draws = (random.random(), np.random.rand())
    step(net, trainer, 3)
    expected = net.weight.data().asnumpy()

    random.seed(99)
    np.random.seed(99)
    net2, trainer2 = setup()
    Checkpointer.load(path, net2, trainer2, HPHNTripletLoss(), mx.cpu())
    assert (random.random(), np.random.rand()) == expected_draws
    step(net2, trainer2, 3)
    np.testing.assert_allclose(net2.weight.data().asnumpy(), expected, rtol=1e-6)
    assert trainer2._optimizer._index_update_count == trainer._optimizer._index_update_count


def test_checkpoint_files_are_fsynced_before_the_rename(tmp_path, monkeypatch):
    events = []
    real_fsync, real_rename = os.fsync, os.rename
    monkeypatch.setattr(os, 'fsync', lambda fd: (events.append(('fsync', os.readlink('/proc/self/fd/%d' % fd))),
                                                  real_fsync(fd))[1])
    monkeypatch.setattr(os, 'rename', lambda a, b: (events.append(('rename', a, b)), real_rename(a, b))[1])
    net = mx.gluon.nn.Dense(2, in_units=3)
    net.initialize()
    trainer = mx.gluon.Trainer(net.collect_params(), 'adam')
    final = Checkpointer(str(tmp_path)).save(1, net, trainer, HPHNTripletLoss(), {'best': {}})
    renames = [i for i, e in enumerate(events) if e[0] == 'rename' and e[2] == final]
    assert len(renames) == 1
    synced = {os.path.basename(e[1]) for e in events[:renames[0]] if e[0] == 'fsync'}
    assert set(os.listdir(final)) <= synced                             # every file, the manifest too
    assert ('fsync', os.path.dirname(final)) in events[renames[0]:]     # then the folder


@pytest.mark.slow
def test_disk_full_during_a_checkpoint_is_one_line(tmp_path, capsys, monkeypatch):
    import errno

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(mx.nd, 'save', full)
    # the checkpoint of epoch 1 comes before the first evaluation (epoch 2)
    status, _, err = run(capsys, *SMALL, '--epochs', '2', '--save_dir', str(tmp_path))
    assert status == 2 and len(err) == 1 and 'No space left on device' in err[0], err
    assert os.path.join('checkpoints', 'epoch_00001') in err[0]


class SignalAfter(HPHNTripletLoss):
    """HPHN triplet that sends this process ``signum`` during its ``after``-th call."""
    calls = 0

    def __init__(self, signum, after, **kwargs):
        super().__init__(**kwargs)
        self.signum, self.after = signum, after

    def forward(self, embeddings, labels):
        SignalAfter.calls += 1
        if SignalAfter.calls == self.after:
            os.kill(os.getpid(), self.signum)
        return super().forward(embeddings, labels)


@pytest.mark.slow
@pytest.mark.parametrize('signum', [signal.SIGTERM, signal.SIGINT])
def test_a_signal_checkpoints_mid_epoch_and_resume_continues_exactly(tmp_path, capsys, monkeypatch, signum):
    # 16 = 2 classes x 8: two iterations per epoch of 5 classes
    flags = ['--batch_size', '16', '--num_instances', '8', '--eval_epoch_term', '3', '--checkpoint_epochs', '2',
             '--epochs', '3', '--summary_step', '1', '--loss', 'hphn_triplet', '--margin', '0.2']
    whole, parts = str(tmp_path / 'whole'), str(tmp_path / 'parts')
    assert main.main(flags + ['--save_dir', whole]) == 0
    SignalAfter.calls = 0
    monkeypatch.setattr(main, 'build_loss', lambda args, classes: SignalAfter(
        signum, 3, margin=0.2, n_inner_pts=2, num_instances=8))
    status, _, err = run(capsys, *flags, '--save_dir', parts)
    name = signal.Signals(signum).name
    checkpoint = os.path.join(parts, 'checkpoints', 'epoch_00001_iter_00001')
    assert status == 128 + signum and len(err) == 1
    assert err[0] == 'stopped by %s after epoch 1 + 1 iterations: checkpoint %s (continue with --resume)' % (name, checkpoint)
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL           # handlers restored
    monkeypatch.undo()
    status, out, err = run(capsys, *flags, '--save_dir', parts, '--resume')
    assert status == 0 and 'resumed from %s: epoch 1 + 1 iterations, best none yet' % checkpoint in out
    assert dict(read_scalars(parts)['loss']) == dict(read_scalars(whole)['loss'])


def test_a_second_signal_exits_at_once(monkeypatch):
    from runner.interrupt import StopFlag
    exits = []
    monkeypatch.setattr(os, '_exit', exits.append)
    stop = StopFlag()
    stop._handle(signal.SIGTERM, None)
    assert stop.name == 'SIGTERM' and not exits
    stop._handle(signal.SIGINT, None)
    assert exits == [128 + signal.SIGINT]


@pytest.mark.slow
def test_sigint_from_outside_is_one_line_and_leaves_a_checkpoint(tmp_path):
    """A real Ctrl-C: the main process and its DataLoader workers, no traceback from either."""
    import time
    proc = subprocess.Popen([sys.executable, 'main.py', '--epochs', '500', '--num_workers', '2',
                             '--checkpoint_epochs', '1000', '--eval_epoch_term', '1000', '--save_dir', str(tmp_path)],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and not os.path.isdir(str(tmp_path / 'tensorboard_log')):
        time.sleep(0.2)
    time.sleep(3)
    os.killpg(proc.pid, signal.SIGINT)          # as a terminal sends it: to the whole group
    _, err = proc.communicate(timeout=120)
    lines = [line for line in err.splitlines() if line.strip() and 'epochs' not in line]
    assert proc.returncode == 128 + signal.SIGINT, err
    assert len(lines) == 1 and lines[0].startswith('stopped by SIGINT'), err
    assert Checkpointer(str(tmp_path)).latest()


@pytest.mark.parametrize('flags,expected', [
    (['--lr', '-0.001'], '--lr must be in (0, inf)'),
    (['--embed_dim', '0'], '--embed_dim must be in [1, 16384]'),
    (['--image_size', '8'], '--image_size must be in [32, 2048]'),
    (['--image_size', '0'], '--image_size must be in [32, 2048]'),
    (['--start_epoch', '5', '--epochs', '2'], '--start_epoch (5) must be in [0, --epochs (2))'),
    (['--n_inner_pts', '1000'], '--n_inner_pts must be at most 32'),
    (['--kvstore', 'bogus'], "unknown --kvstore 'bogus'"),
    (['--kvstore', 'dist_sync'], '--kvstore dist_sync needs a parameter server'),
    (['--select_metric', 'NMI', '--eval_metrics', 'recall'], '--select_metric NMI is not evaluated'),
])
def test_bad_values_are_one_line(tmp_path, capsys, monkeypatch, flags, expected):
    for name in ('DMLC_ROLE', 'DMLC_PS_ROOT_URI'):
        monkeypatch.delenv(name, raising=False)
    status, _, err = run(capsys, *flags, '--save_dir', str(tmp_path / 'out'))
    assert status == 2 and len(err) == 1 and expected in err[0] and 'Traceback' not in err[0], err


@pytest.mark.parametrize('content,expected', [
    (b'--lr="0.1\n', 'cannot parse'),
    (b'\x80\x81\xfe\xff\x00binary', 'is not a text file of flags'),
])
def test_bad_config_files_are_one_line(tmp_path, capsys, content, expected):
    config = tmp_path / 'bad.txt'
    config.write_bytes(content)
    status, _, err = run(capsys, '--config', str(config), '--save_dir', str(tmp_path / 'out'))
    assert status == 2 and len(err) == 1 and expected in err[0] and str(config) in err[0], err


def test_pretrained_path_to_a_text_file_names_the_reason(tmp_path, capsys):
    weights = tmp_path / 'weights.params'
    weights.write_text('not weights\n')
    status, _, err = run(capsys, '--pretrained', 'true', '--pretrained_path', str(weights), '--epochs', '1',
                         '--save_dir', str(tmp_path / 'out'))
    assert status == 2 and len(err) == 1 and str(weights) in err[0]
    assert 'Traceback' not in err[0] and 'not an MXNet parameter file' in err[0], err


@pytest.mark.slow
def test_eval_metrics_without_recall_choose_on_the_first_metric(tmp_path, capsys):
    status, out, _ = run(capsys, *SMALL, '--epochs', '2', '--eval_metrics', 'nmi,map_at_r', '--save_dir', str(tmp_path))
    assert status == 0
    assert 'choosing the best epoch on NMI' in out and '(chosen on NMI)' in out
    assert re.search(r'best: MAP@R \d{1,3}\.\d\d ', out), out     # percent, as printed everywhere
    assert any(name.startswith('model_epoch_') for name in os.listdir(str(tmp_path)))
