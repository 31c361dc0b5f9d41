"""Hostile and careless input, round 3 (issue 20): file names that are not UTF-8, dead workers,
earlier runs that must not be touched, flag injection through args.txt, a full disk, signals while
the data are prepared, waits without end, corrupt event files.

Each case asserts the promise: exit status 2 (128 + N for a signal) with one line naming the file
or flag, no traceback, and nothing of an earlier run changed (hashes before and after)."""
import hashlib
import os
import signal
import struct
import subprocess
import sys
import threading
import time

import cv2
import mxnet as mx
import numpy as np
import pytest

import main
from runner import checkpoint as ck
from runner.options import parse_args, read_config, write_config
from runner.run_dir import RunDir
from utils.errors import UserError
from utils import events

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = sys.executable
LATIN1 = os.fsdecode(b'caf\xe9.png')      # a Latin-1 file name: not valid UTF-8


def run(capsys, *flags):
    """(exit status, stdout, stderr lines) of main.main in this process."""
    capsys.readouterr()
    status = main.main(list(flags))
    out = capsys.readouterr()
    return status, out.out, [line for line in out.err.splitlines() if line.strip()]


def tree_hashes(root):
    """{relative path: sha256} of every file under root (the .lock aside): to prove nothing changed."""
    found = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            if name != '.lock':
                with open(path, 'rb') as f:
                    found[os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
    return found


def write_png(path, seed=0, side=24):
    image = np.random.RandomState(seed).randint(0, 256, (side, side, 3)).astype(np.uint8)
    with open(path, 'wb') as f:
        f.write(cv2.imencode('.png', image)[1].tobytes())
    return image


def earlier_run(folder):
    """A folder as a finished run leaves it without checkpoints (e.g. --checkpoint_epochs 0 then a
    kill -9, or a run of an older version): parameters, events, args.txt."""
    os.makedirs(os.path.join(folder, 'tensorboard_log'))
    for name in ('model_final.params', 'model_epoch_00002.params'):
        mx.nd.save(os.path.join(folder, name), {'w': mx.nd.ones((3,))})
    with open(os.path.join(folder, 'tensorboard_log', 'events.out.tfevents.1.host'), 'wb') as f:
        f.write(b'earlier events')
    with open(os.path.join(folder, 'args.txt'), 'w') as f:
        f.write('--epochs=2\n')


# 1. file names that are not UTF-8; workers that die


def test_an_image_whose_name_is_not_utf8_decodes(tmp_path):
    from data.image_file import read_rgb
    path = os.path.join(str(tmp_path), LATIN1)
    image = write_png(path)
    np.testing.assert_array_equal(read_rgb(path), image[:, :, ::-1])    # RGB of the BGR written


def test_a_fifo_named_like_an_image_is_refused_without_blocking(tmp_path):
    from data.image_file import read_rgb
    fifo = str(tmp_path / 'x.png')
    os.mkfifo(fifo)
    with pytest.raises(UserError, match='x.png: not a regular file'):
        read_rgb(fifo)


@pytest.mark.slow
@pytest.mark.parametrize('workers', [0, 2])
def test_main_trains_on_a_folder_with_a_latin1_file_name(tmp_path, capsys, workers):
    data = tmp_path / 'data'
    for c in range(4):
        (data / ('c%d' % c)).mkdir(parents=True)
        for i in range(4):
            write_png(os.path.join(str(data / ('c%d' % c)), LATIN1 if i == 0 else '%d.png' % i), seed=10 * c + i)
    status, out, err = run(capsys, '--data_name', 'folder', '--data_dir', str(data), '--image_size', '32',
                           '--pretrained', 'false', '--batch_size', '4', '--num_instances', '2', '--epochs', '1',
                           '--num_workers', str(workers), '--check_images', '--save_dir', str(tmp_path / 'run'))
    assert status == 0, err
    assert 'train 8 images of 2 classes, test 8 images of 2 classes' in out


class Dies(mx.gluon.data.Dataset):
    """Items of 3 floats; the worker that reads item ``fatal`` is killed (as by the OOM killer)."""

    def __init__(self, size, fatal):
        self.size, self.fatal = size, fatal

    def __len__(self):
        return self.size

    def __getitem__(self, idx):
        if idx == self.fatal:
            os.kill(os.getpid(), signal.SIGKILL)
        return np.zeros(3, np.float32)


@pytest.mark.parametrize('size,fatal', [(2, 0), (12, 7)])
def test_a_dead_dataloader_worker_is_one_line_not_a_wait(monkeypatch, size, fatal):
    """(2, 0): the only batch never comes (the wait is bounded); (12, 7): the dead worker's earlier
    batch cannot be fetched any more."""
    from data import loaders
    monkeypatch.setattr(loaders, 'WORKER_TIMEOUT', 1)
    start = time.time()
    with pytest.raises(UserError, match='DataLoader worker.*--num_workers 0'):
        for _ in loaders.DataLoader(Dies(size, fatal), batch_size=2, num_workers=2):
            pass
    assert time.time() - start < 30


def _die_on_five(job):
    if job == 5:
        os.kill(os.getpid(), signal.SIGKILL)
    return job * 2


def test_a_dead_check_or_cache_worker_is_one_line_not_a_wait():
    from data.worker_pool import worker_map
    start = time.time()
    with pytest.raises(UserError, match='a worker process died while reading the images'):
        with worker_map(_die_on_five, range(200), 2, chunksize=4) as results:
            list(results)
    assert time.time() - start < 30
    with worker_map(_die_on_five, range(5), 2, chunksize=2) as results:      # and in order when all live
        assert list(results) == [0, 2, 4, 6, 8]


def test_a_save_dir_that_is_not_utf8_is_one_line_and_writes_nothing(tmp_path, capsys):
    save_dir = os.path.join(str(tmp_path), LATIN1)
    status, _, err = run(capsys, '--save_dir', save_dir, '--epochs', '1')
    assert status == 2 and len(err) == 1 and err[0].startswith('error: --save_dir ') and 'UTF-8' in err[0], err
    assert os.listdir(str(tmp_path)) == []


# 2. earlier runs are never overwritten or split


def test_resume_refuses_an_earlier_run_without_checkpoints(tmp_path, capsys):
    save_dir = str(tmp_path / 'run')
    earlier_run(save_dir)
    before = tree_hashes(save_dir)
    status, out, err = run(capsys, '--save_dir', save_dir, '--resume', '--epochs', '1')
    assert status == 2 and len(err) == 1, err
    assert err[0].startswith('error: --resume: --save_dir %s holds an earlier run' % save_dir)
    assert 'model_epoch_00002.params' in err[0] and '--overwrite' in err[0]
    assert 'starting afresh' not in out
    assert tree_hashes(save_dir) == before


def test_resume_of_another_folders_checkpoint_into_an_earlier_run_is_refused(tmp_path):
    save_dir = str(tmp_path / 'run')
    earlier_run(save_dir)
    os.makedirs(str(tmp_path / 'other' / 'checkpoints' / 'epoch_00001'))
    (tmp_path / 'other' / 'checkpoints' / 'epoch_00001' / 'manifest.json').write_text('{}')
    with pytest.raises(UserError, match='holds an earlier run'):
        RunDir(save_dir, resume=str(tmp_path / 'other' / 'checkpoints' / 'epoch_00001'))
    own = os.path.join(save_dir, 'checkpoints', 'epoch_00001')
    os.makedirs(own)
    with open(os.path.join(own, 'manifest.json'), 'w') as f:
        f.write('{}')
    RunDir(save_dir + '/', resume=own + '/').close()       # its own checkpoint: allowed


def test_overwrite_with_a_trailing_slash_moves_the_run_beside_it(tmp_path, capsys):
    save_dir = str(tmp_path / 'run')
    earlier_run(save_dir)
    before = tree_hashes(save_dir)
    RunDir(save_dir + '/', overwrite=True).close()
    assert sorted(os.listdir(str(tmp_path))) == ['run', 'run.old-1']
    assert os.listdir(save_dir) == ['.lock']
    assert tree_hashes(save_dir + '.old-1') == before
    assert 'to %s.old-1' % save_dir in capsys.readouterr().out


def test_an_earlier_run_in_a_folder_named_like_a_pattern_is_seen(tmp_path):
    save_dir = str(tmp_path / 'run[1]')
    earlier_run(save_dir)
    before = tree_hashes(save_dir)
    with pytest.raises(UserError, match='holds an earlier run'):
        RunDir(save_dir)
    assert tree_hashes(save_dir) == before


def test_a_lock_planted_as_a_link_truncates_nothing(tmp_path):
    victim = tmp_path / 'notes.txt'
    victim.write_text('precious')
    (tmp_path / 'run').mkdir()
    os.symlink(str(victim), str(tmp_path / 'run' / '.lock'))
    with pytest.raises(UserError, match='cannot use --save_dir'):
        RunDir(str(tmp_path / 'run'))
    assert victim.read_text() == 'precious'


def test_old_numbers_are_never_reused(tmp_path):
    save_dir = str(tmp_path / 'run')
    for n in (1, 2, 3):
        earlier_run(save_dir)
        RunDir(save_dir, overwrite=True).close()
    os.rename(save_dir + '.old-2', str(tmp_path / 'elsewhere'))     # deleted by the user
    earlier_run(save_dir)
    RunDir(save_dir, overwrite=True).close()
    assert sorted(n for n in os.listdir(str(tmp_path)) if '.old-' in n) == ['run.old-1', 'run.old-3', 'run.old-4']


def test_a_failed_move_aside_puts_the_run_back(tmp_path, monkeypatch):
    save_dir = str(tmp_path / 'run')
    earlier_run(save_dir)
    before = tree_hashes(save_dir)
    real_rename, calls = os.rename, []

    def fails_third(src, dst):
        calls.append(src)
        if len(calls) == 3:
            raise OSError(5, 'Input/output error')
        real_rename(src, dst)
    monkeypatch.setattr(os, 'rename', fails_third)
    with pytest.raises(UserError, match='cannot use --save_dir .*Input/output error'):
        RunDir(save_dir, overwrite=True)
    monkeypatch.undo()
    assert tree_hashes(save_dir) == before and not os.path.exists(save_dir + '.old-1')


# 3. flag injection through args.txt


@pytest.mark.parametrize('flag', ['--save_dir', '--data_dir', '--init_from', '--pretrained_path', '--select_metric'])
@pytest.mark.parametrize('bad', ['run\n--init_from=/elsewhere/model.params', 'run\r', 'run\x1b[2J', 'run\t'])
def test_control_characters_in_flags_are_refused(tmp_path, capsys, flag, bad):
    others = ['--save_dir', str(tmp_path / 'run')] if flag != '--save_dir' else []
    status, _, err = run(capsys, flag, str(tmp_path / bad), *others)
    assert status == 2 and len(err) == 1 and err[0].startswith('error: %s ' % flag), err
    assert 'control character' in err[0]
    assert os.listdir(str(tmp_path)) == []


def test_args_txt_holds_data_only_and_round_trips(tmp_path):
    odd = str(tmp_path / "it's a \"run\" #1 $HOME; --lr=9")
    args = parse_args(['--save_dir', odd, '--data_dir', '--x y', '--epochs', '3'])
    os.makedirs(odd)
    path = os.path.join(odd, 'args.txt')
    write_config(args, path)
    lines = open(path).read().splitlines()
    assert lines[0].startswith('#') and all(line.startswith('--') for line in lines[1:])
    again = parse_args(['--config', path])
    assert (again.save_dir, again.data_dir, again.epochs, again.lr) == (odd, '--x y', 3, args.lr)
    assert os.listdir(odd) == ['args.txt']      # no temporary file left


@pytest.mark.parametrize('content,expected', [
    ("--save_dir='a\n--init_from=/x'\n", 'control character'),
    ('--save_dir="a\x1b[2Jb"\n', 'control character'),
])
def test_the_reader_refuses_what_the_writer_never_writes(tmp_path, content, expected):
    path = tmp_path / 'args.txt'
    path.write_text(content)
    with pytest.raises(UserError, match='argument --config: %s .*%s' % (path, expected)):
        read_config(str(path))


def _in_thread(fn, seconds=20):
    """fn()'s exception (or None) when it returns within ``seconds``; fails the test when it blocks."""
    box = []

    def target():
        try:
            fn()
            box.append(None)
        except Exception as exc:        # noqa: BLE001 - handed to the test
            box.append(exc)
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert box, 'blocked for %d s' % seconds
    return box[0]


def test_a_fifo_or_device_or_huge_file_as_config_is_refused(tmp_path):
    fifo = str(tmp_path / 'fifo')
    os.mkfifo(fifo)
    huge = tmp_path / 'huge.txt'
    huge.write_bytes(b'#' * (2 << 20))
    for path, expected in ((fifo, 'not a regular file'), ('/dev/zero', 'not a regular file'),
                           (str(huge), 'larger than')):
        exc = _in_thread(lambda: read_config(path))
        assert isinstance(exc, UserError) and str(exc).startswith('argument --config: %s' % path), exc
        assert expected in str(exc)


# 4. disk full: MXNet raises MXNetError, not OSError

ENOSPC = mx.base.MXNetError('Traceback (most recent call last):\n  File "../3rdparty/dmlc-core/src/io/'
                            'local_filesys.cc", line 38\nMXNetError: Check failed: std: :fwrite(ptr, 1, size, fp_) '
                            '== size: FileStream.Write incomplete')


def small_net():
    net = mx.gluon.nn.Dense(4, in_units=3)
    net.initialize()
    return net


def test_disk_full_in_a_parameter_save_is_one_line_and_keeps_the_old_file(tmp_path, monkeypatch):
    path = str(tmp_path / 'model_final.params')
    ck.save_parameters_atomic(small_net(), path)
    before = tree_hashes(str(tmp_path))
    net = small_net()

    def full(name, *args, **kwargs):
        with open(name, 'wb') as f:
            f.write(b'half')        # what a full disk leaves
        raise ENOSPC
    monkeypatch.setattr(net, 'save_parameters', full)
    with pytest.raises(UserError) as caught:
        ck.save_parameters_atomic(net, path)
    assert str(caught.value) == 'cannot write %s: the write was cut short (is the disk full?)' % path
    assert tree_hashes(str(tmp_path)) == before


def test_disk_full_in_a_checkpoint_is_one_line_and_leaves_no_checkpoint(tmp_path, monkeypatch):
    from loss import HPHNTripletLoss
    net, loss = small_net(), HPHNTripletLoss(margin=0.2, n_inner_pts=0, num_instances=2)
    trainer = mx.gluon.Trainer(net.collect_params(), 'adam')
    checkpoints = ck.Checkpointer(str(tmp_path))

    def full(*args, **kwargs):
        raise ENOSPC
    monkeypatch.setattr(mx.nd, 'save', full)
    with pytest.raises(UserError) as caught:
        checkpoints.save(1, net, trainer, loss, {})
    assert str(caught.value) == 'cannot write %s: the write was cut short (is the disk full?)' % os.path.join(
        str(tmp_path), 'checkpoints', 'epoch_00001')
    assert os.listdir(checkpoints.root) == []


@pytest.fixture
def tiny_disk(tmp_path):
    """A 64 KB tmpfs (root only); skipped where it cannot be mounted."""
    mount = tmp_path / 'disk'
    mount.mkdir()
    if subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=64k', 'tmpfs', str(mount)],
                      capture_output=True).returncode:
        pytest.skip('cannot mount a tmpfs here')
    yield str(mount)
    subprocess.run(['umount', str(mount)], check=True)


def test_a_really_full_disk_is_one_line(tiny_disk):
    path = os.path.join(tiny_disk, 'model_final.params')
    with open(path, 'wb') as f:
        f.write(b'the earlier run')
    net = mx.gluon.nn.Dense(200, in_units=100)      # 80 KB: does not fit in 64 KB
    net.initialize()
    with pytest.raises(UserError, match='cannot write %s: ' % path):
        ck.save_parameters_atomic(net, path)
    assert open(path, 'rb').read() == b'the earlier run' and os.listdir(tiny_disk) == ['model_final.params']


# 7. signals while the data are prepared

_PREPARE = '''
import sys, time
import numpy as np
import utils.mxnet_compat  # first, as in every entry point: MXNet 1.9.1 on Python 3.12+ needs it
from utils.errors import run_command

def slow_decode(source):
    time.sleep(0.02)
    return np.zeros((8, 8, 3), np.uint8)

def run(argv):
    from runner.interrupt import StopFlag
    stop = StopFlag()
    stop.prepare()
    import data.checks, data.image_cache
    from data.image_list import ImageList
    from data.transforms import test_transform
    data.checks.read_rgb = data.image_cache.decode = slow_decode
    items = [('image%d.png' % i, 0) for i in range(100000)]
    print('preparing', flush=True)
    if argv[0] == 'check':
        data.checks.check_images(items, num_workers=2)
    else:
        data.image_cache.cache_image_lists([ImageList(items, test_transform(8))], num_workers=2)
sys.exit(run_command(run, sys.argv[1:]))
'''


@pytest.mark.parametrize('work,signum,group', [
    ('check', signal.SIGINT, True),
    pytest.param('cache', signal.SIGTERM, False, marks=pytest.mark.slow),
    pytest.param('check', signal.SIGTERM, False, marks=pytest.mark.slow),
    pytest.param('cache', signal.SIGINT, True, marks=pytest.mark.slow)])
def test_a_signal_while_the_data_are_prepared_stops_with_one_line(work, signum, group):
    """Ctrl-C reaches the whole process group (the workers too), SIGTERM the main process only."""
    proc = subprocess.Popen([PY, '-c', _PREPARE, work], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        assert proc.stdout.readline() == 'preparing\n'
        time.sleep(2)       # the workers are busy
        if group:
            os.killpg(proc.pid, signum)
        else:
            os.kill(proc.pid, signum)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    lines = [line for line in err.replace('\r', '\n').splitlines() if line.strip() and ' images: ' not in line]
    assert proc.returncode == 128 + signum, err
    assert lines == ['stopped by %s before training began: no checkpoint was written yet (nothing to --resume)'
                     % signal.Signals(signum).name], err
    time.sleep(1)
    assert not subprocess.run(['pgrep', '-s', str(proc.pid)], capture_output=True).stdout    # no worker left


@pytest.mark.slow
def test_main_stops_with_one_line_when_ctrl_c_comes_during_check_images(tmp_path):
    """main.py's wiring: the handlers are in place while the data are checked, in 2 processes."""
    data = tmp_path / 'data'
    ramp = np.tile(np.arange(1500, dtype=np.uint8)[None, :, None], (1500, 1, 3))    # slow to decode, small
    for c in range(4):
        (data / ('c%d' % c)).mkdir(parents=True)
        for i in range(100):
            cv2.imwrite(str(data / ('c%d' % c) / ('%d.jpg' % i)), ramp)
    save_dir = tmp_path / 'run'
    proc = subprocess.Popen([PY, 'main.py', '--data_name', 'folder', '--data_dir', str(data), '--check_images',
                             '--num_workers', '2', '--pretrained', 'false', '--image_size', '32', '--batch_size', '4',
                             '--num_instances', '2', '--save_dir', str(save_dir)],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        seen = ''
        while 'checking images' not in seen:
            char = proc.stderr.read(1)
            assert char, seen
            seen += char
        time.sleep(1)
        os.killpg(proc.pid, signal.SIGINT)      # as a terminal sends it: the workers get it too
        err = seen + proc.communicate(timeout=120)[1]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    lines = [line for line in err.replace('\r', '\n').splitlines() if line.strip() and 'checking images' not in line]
    assert proc.returncode == 128 + signal.SIGINT, err
    assert lines == ['stopped by SIGINT before training began: no checkpoint was written yet (nothing to --resume)'], err
    assert not os.path.exists(str(save_dir / 'checkpoints'))


def test_a_second_signal_while_preparing_exits_at_once(monkeypatch):
    from runner.interrupt import Stopped, StopFlag
    exits = []
    monkeypatch.setattr(os, '_exit', exits.append)
    stop = StopFlag()
    with pytest.raises(Stopped) as caught:
        stop._stop_now(signal.SIGTERM, None)
    assert caught.value.status == 128 + signal.SIGTERM and not exits
    with pytest.raises(Stopped):        # (os._exit is a stub here, so the handler goes on)
        stop._stop_now(signal.SIGINT, None)
    assert exits == [128 + signal.SIGINT]


# 10. waits without end


@pytest.mark.slow
def test_no_parameter_server_gives_up_after_dist_timeout(tmp_path):
    import socket
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]       # nobody listens there
    env = dict(os.environ, DMLC_ROLE='worker', DMLC_PS_ROOT_URI='127.0.0.1', DMLC_PS_ROOT_PORT=str(port),
               DMLC_NUM_SERVER='1', DMLC_NUM_WORKER='1', DMLC_NODE_HOST='127.0.0.1', DMLC_INTERFACE='lo')
    proc = subprocess.run([PY, 'main.py', '--kvstore', 'dist_sync', '--dist_timeout', '5', '--save_dir',
                           str(tmp_path / 'run')], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert 'waiting for the scheduler at 127.0.0.1:%d' % port in proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('error: --kvstore dist_sync: ') and '--dist_timeout' in lines[0]


def test_dist_timeout_must_be_positive_and_finite(monkeypatch):
    from runner.devices import create_kvstore
    for name in ('DMLC_ROLE', 'DMLC_PS_ROOT_URI', 'DMLC_PS_ROOT_PORT', 'DMLC_NUM_SERVER', 'DMLC_NUM_WORKER'):
        monkeypatch.setenv(name, '1')
    for bad in (0, -1, float('nan'), float('inf')):
        with pytest.raises(UserError, match='--dist_timeout must be a positive number'):
            create_kvstore('dist_sync', bad)


def test_a_fifo_or_device_as_an_event_file_is_refused(tmp_path):
    logs = tmp_path / 'tensorboard_log'
    logs.mkdir()
    os.mkfifo(str(logs / 'events.out.tfevents.1.fifo'))
    exc = _in_thread(lambda: events.read_scalars(str(tmp_path)))
    assert isinstance(exc, UserError) and 'events.out.tfevents.1.fifo is not a regular file' in str(exc)
    os.remove(str(logs / 'events.out.tfevents.1.fifo'))
    os.symlink('/dev/zero', str(logs / 'events.out.tfevents.2.zero'))
    exc = _in_thread(lambda: events.read_scalars(str(tmp_path)))
    assert isinstance(exc, UserError) and 'events.out.tfevents.2.zero is not a regular file' in str(exc)


# 11. event-record checksums, --tolerance, torch.load, flushing


def test_crc32c_matches_the_standard_check_values():
    assert events.crc32c(b'123456789') == 0xE3069283             # the CRC catalogue's check value
    assert events.crc32c(bytes(32)) == 0x8A9136AA                 # RFC 3720 B.4: 32 bytes of zeros
    assert events.crc32c(b'\xff' * 32) == 0x62A8AB43              # RFC 3720 B.4: 32 bytes of ones
    rows = np.frombuffer(bytes(range(32)) + bytes(range(31, -1, -1)), np.uint8).reshape(2, 32)
    assert events.crc32c_rows(rows).tolist() == [0x46DD794E, 0x113FDB5C]     # RFC 3720 B.4


def logged(tmp_path, n=5):
    """An mxboard event file of n 'loss' scalars: its path and the scalars."""
    from runner.summary import Summary
    summary = Summary(str(tmp_path))
    for step in range(n):
        summary.scalar('loss', step / 10, step)
    summary.flush()         # readable before close: what a kill -9 leaves
    path, = [os.path.join(d, f) for d, _, fs in os.walk(str(tmp_path)) for f in fs]
    assert [v for _, v in events.read_scalars(str(tmp_path))['loss']] == pytest.approx([s / 10 for s in range(n)])
    summary.close()
    return path


def record_offsets(data):
    offsets, pos = [], 0
    while pos < len(data):
        offsets.append(pos)
        pos += 16 + struct.unpack_from('<Q', data, pos)[0]
    return offsets


@pytest.mark.parametrize('where,kind', [(12, 'data'), (0, 'length'), (8, 'length')])
def test_a_corrupt_event_record_is_named_not_skipped(tmp_path, where, kind):
    path = logged(tmp_path)
    data = bytearray(open(path, 'rb').read())
    third = record_offsets(data)[3]     # record 0 is the file version
    data[third + where] ^= 0x01
    open(path, 'wb').write(bytes(data))
    with pytest.raises(UserError) as caught:
        events.read_scalars(str(tmp_path))
    assert str(caught.value) == 'event file %s is corrupt: record 3 (byte %d) has a bad %s checksum' % (
        path, third, kind)


def test_a_record_cut_short_at_the_end_keeps_the_records_before_it(tmp_path):
    path = logged(tmp_path)
    data = open(path, 'rb').read()
    open(path, 'wb').write(data[:record_offsets(data)[-1] + 14])
    assert [step for step, _ in events.read_scalars(str(tmp_path))['loss']] == [0, 1, 2, 3]


@pytest.mark.parametrize('tolerance', ['nan', 'inf', '-1'])
def test_compare_refuses_a_tolerance_that_is_not_a_finite_number(tmp_path, capsys, tolerance):
    from tools import compare
    logged(tmp_path)
    status = compare.main([str(tmp_path), '--tolerance', tolerance])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and err == ['error: --tolerance must be a finite number of points >= 0, got %s' % tolerance]


def test_convert_timm_vit_reads_weights_only(tmp_path, monkeypatch):
    import pickle
    import types
    from tools import convert_timm_vit
    calls = []

    def load(path, **kwargs):
        calls.append(kwargs)
        if not kwargs.get('weights_only'):
            raise AssertionError('torch.load without weights_only=True unpickles anything')
        raise pickle.UnpicklingError('Weights only load failed: unsupported global os.system')
    monkeypatch.setitem(sys.modules, 'torch', types.SimpleNamespace(load=load))
    with pytest.raises(ValueError, match='refused unread: Weights only load failed'):
        convert_timm_vit.load_state_dict(str(tmp_path / 'x.pth'))
    assert calls == [{'map_location': 'cpu', 'weights_only': True}]


@pytest.mark.slow
def test_training_flushes_the_logs_at_every_evaluation_and_checkpoint(tmp_path, capsys, monkeypatch):
    from runner.summary import Summary
    flushed = []
    monkeypatch.setattr(Summary, 'flush', lambda self: flushed.append(1) or self.writer.flush())
    status, _, err = run(capsys, '--batch_size', '40', '--num_instances', '8', '--epochs', '4',
                         '--eval_epoch_term', '2', '--checkpoint_epochs', '1', '--save_dir', str(tmp_path))
    assert status == 0, err
    assert len(flushed) == 2 + 4        # evaluations after epochs 2 and 4, checkpoints after every epoch


@pytest.mark.parametrize('kind', ['fifo', 'device', 'huge'])
def test_a_paper_csv_that_is_not_a_small_regular_file_is_refused(tmp_path, kind):
    from tools.paper_numbers import load_paper_numbers
    path = str(tmp_path / 'numbers.csv')
    if kind == 'fifo':
        os.mkfifo(path)
    elif kind == 'device':
        os.symlink('/dev/zero', path)       # would be read for ever, one endless line
    else:
        with open(path, 'w') as f:
            f.write('paper,dataset,method,metric,value\n' + 'x,a,b,R@1,1\n' * 200000)
    exc = _in_thread(lambda: load_paper_numbers(path))
    assert isinstance(exc, UserError) and str(exc).startswith('the paper numbers %s are ' % path), exc


@pytest.mark.parametrize('chunk', [1, 7, 100])
def test_event_records_read_in_chunks_are_the_records(tmp_path, chunk):
    """Reading a bounded chunk at a time (records cross the chunk boundaries) changes nothing."""
    path = logged(tmp_path, n=20)
    whole = list(events.read_records(path, chunk=1 << 20))
    assert len(whole) == 21 and list(events.read_records(path, chunk=chunk)) == whole
    data = bytearray(open(path, 'rb').read())
    tenth = record_offsets(data)[10]
    data[tenth + 13] ^= 0x40
    open(path, 'wb').write(bytes(data))
    with pytest.raises(UserError, match='record 10 \\(byte %d\\) has a bad data checksum' % tenth):
        list(events.read_records(path, chunk=chunk))
