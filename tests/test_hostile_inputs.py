"""Hostile and careless input, round 3 (issue 20, items 5, 6, 8, 9): memory bombs in weight files,
.npy files and image headers; weights of another precision; truncated images; flags that are not
finite or out of range; checkpoints whose state.json was rewritten; tools given files of the wrong
kind. Every case: exit status 2 (or UserError), one line naming the file or flag, no traceback,
and for the bombs a peak memory far below what the file claims."""
import json
import os
import re
import struct
import subprocess
import sys

import cv2
import mxnet as mx
import numpy as np
import pytest

from model.params_file import BadParamsFile, check_params_file, read_header
from runner import checkpoint as ck
from runner.checkpoint import Checkpointer, init_file
from utils.errors import UserError, run_command

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = sys.executable
# What a refused bomb may cost: the interpreter, MXNet and OpenCV imported (~300 MB), nothing more.
RSS_LIMIT_MB = 700


def one_line(lines, *needles):
    lines = [line for line in lines if line.strip() and not re.search(r'\d+%\|', line)]     # progress bars
    assert len(lines) == 1 and lines[0].startswith('error: ') and 'Traceback' not in lines[0], lines
    for needle in needles:
        assert str(needle) in lines[0], (needle, lines)
    return lines[0]


# ---- weight files (model/params_file.py) -----------------------------------------------------------

def array_entry(shape, dtype=0, data=None):
    body = struct.pack('<Iii', 0xF993FAC9, 0, len(shape)) + struct.pack('<%dq' % len(shape), *shape)
    body += struct.pack('<iii', 1, 0, dtype)
    return body + (data if data is not None else b'\0' * (4 * int(np.prod(shape))))


def params_bytes(entries, names):
    out = struct.pack('<QQQ', 0x112, 0, len(entries)) + b''.join(entries) + struct.pack('<Q', len(names))
    return out + b''.join(struct.pack('<Q', len(n)) + n for n in names)


COUNT_BOMB = struct.pack('<QQQ', 0x112, 0, 1 << 24) + b'\0' * 8            # 32 bytes, 2^24 arrays
NAME_BOMB = params_bytes([array_entry((1,))], [])[:-8] + struct.pack('<QQ', 1, 1 << 31) + b'a' * 13


@pytest.mark.parametrize('content,expected', [
    (COUNT_BOMB, 'claims 16777216 arrays'),
    (NAME_BOMB, 'name 0 claims 2147483648 bytes'),
    (params_bytes([array_entry((1 << 40, 1 << 20), data=b'\0' * 8)], [b'w']), 'claims 4611686018427387904 bytes'),
    (params_bytes([array_entry((2, 2), dtype=2, data=b'\0' * 8)], [b'w']), 'float16'),
    (params_bytes([array_entry((2, 2), dtype=5, data=b'\0' * 4)], [b'w']), 'int8'),
    (params_bytes([array_entry((2, 2))], []), 'saved from a list'),
    (params_bytes([], []), 'holds no arrays'),
    (params_bytes([array_entry((2,))], [b'w']) + b'junk', '4 bytes follow'),
    (params_bytes([array_entry((100,))], [b'w'])[:200], 'array 0 of shape (100,) claims 400 bytes'),
    (b'not weights\n', 'not an MXNet parameter file'),
    (b'\x12\x01' + b'\0' * 14 + b'\x01' + b'\0' * 7 + struct.pack('<Iii', 0xF993FAC9, 1, 1) + b'\0' * 40, 'sparse'),
], ids=lambda v: v if isinstance(v, str) else '')
def test_weight_files_are_refused_from_their_header(tmp_path, content, expected):
    path = tmp_path / 'w.params'
    path.write_bytes(content)
    with pytest.raises(BadParamsFile, match=re.escape(expected)):
        check_params_file(str(path))


def test_the_header_of_files_mxnet_writes_is_read_exactly(tmp_path):
    path = str(tmp_path / 'w.params')
    arrays = {'a': mx.nd.ones((2, 3)), 'b.weight': mx.nd.zeros((4,)), 'c': mx.nd.ones((1, 2, 3, 4))}
    mx.nd.save(path, arrays)
    assert sorted(read_header(path)) == sorted((k, v.shape) for k, v in arrays.items())
    mx.nd.save(path, [mx.nd.ones((5,))])
    assert read_header(path) == [(None, (5,))]
    mx.nd.save(path, {})
    assert read_header(path) == []


@pytest.mark.parametrize('bomb', [COUNT_BOMB, NAME_BOMB], ids=['count', 'name'])
def test_a_weight_bomb_through_init_from_is_refused_before_mxnet(tmp_path, capsys, monkeypatch, bomb):
    import main
    path = tmp_path / 'bomb.params'
    path.write_bytes(bomb)
    monkeypatch.setattr(mx.nd, 'load', never)
    status = main.main(['--init_from', str(path), '--save_dir', str(tmp_path / 'run')])
    one_line(capsys.readouterr().err.splitlines(), '--init_from', path, 'claims')
    assert status == 2 and not (tmp_path / 'run').exists()     # refused before the run's folder is made


def never(*args, **kwargs):
    raise AssertionError('MXNet read the file')


def fake_run(folder, *flags):
    """A run folder with only args.txt (what the tools read first) of digits with ``flags``."""
    from runner.options import parse_args, write_config
    os.makedirs(folder, exist_ok=True)
    write_config(parse_args(['--data_name', 'digits', '--save_dir', str(folder)] + list(flags)),
                 os.path.join(folder, 'args.txt'))
    return str(folder)


@pytest.mark.parametrize('content,expected', [
    (COUNT_BOMB, 'claims 16777216 arrays'),
    (params_bytes([array_entry((2, 2))], []), 'saved from a list'),
    (params_bytes([], []), 'holds no arrays'),
    (params_bytes([array_entry((2, 2), dtype=2, data=b'\0' * 8)], [b'w']), 'float16'),
], ids=lambda v: v if isinstance(v, str) else '')
def test_a_tools_params_of_the_wrong_kind_is_one_line(tmp_path, capsys, monkeypatch, content, expected):
    from tools import embed
    monkeypatch.setattr(mx.nd, 'load', never)
    run = fake_run(tmp_path / 'run')
    params = tmp_path / 'w.params'
    params.write_bytes(content)
    status = run_command(embed.run, [run, str(tmp_path), '--out', str(tmp_path / 'e.npy'), '--params', str(params)])
    one_line(capsys.readouterr().err.splitlines(), str(params), expected)
    assert status == 2


@pytest.mark.parametrize('dtype', ['float16', 'int8', 'float64'])
def test_weights_of_another_precision_are_refused_by_init_from_and_pretrained_path(tmp_path, dtype):
    from model.weights import load_into
    path = str(tmp_path / 'w.params')
    mx.nd.save(path, {'dense0.weight': mx.nd.ones((2, 2), dtype=dtype)})
    with pytest.raises(UserError, match='--init_from .*%s' % dtype):
        init_file(path)
    net = mx.gluon.nn.Dense(2, in_units=2)
    with pytest.raises(UserError, match='pretrained file .*--pretrained_path.*%s' % dtype):
        load_into(net, path, 'googlenet', [mx.cpu()])


def test_a_weight_bomb_through_pretrained_path_is_refused_before_mxnet(tmp_path, monkeypatch):
    from model.weights import load_into
    path = tmp_path / 'bomb.params'
    path.write_bytes(COUNT_BOMB)
    net = mx.gluon.nn.Dense(2, in_units=2)
    monkeypatch.setattr(net, 'load_parameters', never)
    with pytest.raises(UserError, match='claims 16777216 arrays'):
        load_into(net, str(path), 'googlenet', [mx.cpu()])


# ---- checkpoints: state.json, manifest.json, the arrays ----------------------------------------------

def small_trainer():
    net = mx.gluon.nn.Dense(3, in_units=4)
    net.initialize()
    trainer = mx.gluon.Trainer(net.collect_params(), 'adam', {'learning_rate': 0.1})
    with mx.autograd.record():
        loss = net(mx.nd.ones((2, 4))).sum()
    loss.backward()
    trainer.step(1)
    return net, trainer


def write_checkpoint(folder, state=None, **files):
    """A checkpoint folder with a manifest that vouches for whatever it holds (a rewritten one)."""
    net, trainer = small_trainer()
    os.makedirs(folder)
    net.save_parameters(os.path.join(folder, 'model.params'))
    arrays, info = ck.optimizer_state(trainer)
    mx.nd.save(os.path.join(folder, 'optimizer.params'), arrays)
    good = {'epoch': 1, 'iteration': 0, 'global_step': 3, 'best': {'R@1': 0.5}, 'best_chosen': 0.5,
            'args': {'epochs': 4}, 'epoch_random': None, 'optimizer': info, 'random': ck.random_state()}
    with open(os.path.join(folder, 'state.json'), 'w') as f:
        json.dump(good if state is None else state(good), f)
    for name, content in files.items():
        with open(os.path.join(folder, name.replace('_', '.')), 'wb') as f:
            f.write(content)
    entries = {n: {'size': os.path.getsize(os.path.join(folder, n)), 'sha256': ck._sha256(os.path.join(folder, n))}
               for n in os.listdir(folder)}
    with open(os.path.join(folder, ck.MANIFEST), 'w') as f:
        json.dump({'format': ck.FORMAT, 'files': entries}, f)
    return net, trainer


def edit(**fields):
    return lambda state: dict(state, **fields)


@pytest.mark.parametrize('state,expected', [
    (lambda s: [s], 'the file is'),
    (edit(epoch='six'), 'epoch is "six"'),
    (edit(epoch=2.5), 'epoch is 2.5'),
    (edit(epoch=float('nan')), 'epoch is NaN'),
    (edit(epoch=-5), 'epoch is -5'),
    (edit(epoch=10 ** 9), 'epoch is 1000000000'),
    (edit(epoch=True), 'epoch is true'),
    (edit(iteration=-3), 'iteration is -3'),
    (edit(epoch=4, iteration=2), 'iteration is 2'),
    (edit(iteration=7, epoch_random=ck.random_state()), "disagree with the folder's name epoch_00001"),
    (edit(best=[0.5]), 'best is'),
    (edit(best={'R@1': float('inf')}), 'best is'),
    (edit(best_chosen='high'), 'best_chosen is'),
    (edit(global_step=-1), 'global_step is'),
    (edit(args=[]), '"args" does not hold'),
    (edit(random=None), 'random is'),
    (edit(random={'python': 5, 'numpy': []}), 'random is'),
    (edit(random=dict(ck.random_state(), numpy=['MT19937', [1] * 3, 0, 0, 0.0])), 'random is'),
    (lambda s: dict(s, iteration=2, epoch_random={'python': 1}), 'epoch_random is'),
    (edit(optimizer={'structure': [], 'shapes': [], 'num_update': 0, 'update_counts': {}}), 'optimizer is'),
])
def test_a_rewritten_state_json_is_refused_naming_the_field(tmp_path, state, expected):
    folder = str(tmp_path / 'checkpoints' / 'epoch_00001')
    write_checkpoint(folder, state)
    with pytest.raises(UserError) as info:
        Checkpointer.read_state(folder)
    message = str(info.value)
    assert folder in message and expected in message and '\n' not in message, message


def test_an_oversized_state_json_is_refused_unparsed(tmp_path, monkeypatch):
    folder = str(tmp_path / 'epoch_00001')
    write_checkpoint(folder, lambda state: dict(state, padding=' ' * (ck.MAX_JSON + 1)))
    monkeypatch.setattr(json, 'load', never)
    with pytest.raises(UserError, match='state.json holds .* bytes, more than a checkpoint writes'):
        Checkpointer.read_state(folder, verified=True)


@pytest.mark.parametrize('manifest', [[], {'format': 2, 'files': ['model.params']},
                                      {'format': 2, 'files': {'model.params': 5}}, {'format': 'x', 'files': {}}])
def test_a_manifest_of_wrong_types_is_a_corrupt_checkpoint(tmp_path, manifest):
    folder = str(tmp_path / 'epoch_00001')
    write_checkpoint(folder)
    with open(os.path.join(folder, ck.MANIFEST), 'w') as f:
        json.dump(manifest, f)
    with pytest.raises(ck.CorruptCheckpoint):
        ck.verify(folder)
    with pytest.raises(UserError, match='corrupt checkpoint'):
        Checkpointer.read_state(folder)


@pytest.mark.parametrize('name,content,expected', [
    ('model.params', COUNT_BOMB, 'model.params: claims 16777216 arrays'),
    ('model.params', params_bytes([array_entry((2, 2))], []), 'model.params: holds unnamed arrays'),
    ('model.params', params_bytes([], []), 'model.params: holds no arrays'),
    ('optimizer.params', NAME_BOMB, 'optimizer.params: name 0 claims'),
    ('optimizer.params', params_bytes([array_entry((7,)), array_entry((7,))], [b'state/0/0', b'state/0/1']),
     'has shape [7], its parameter'),
], ids=lambda v: v if isinstance(v, str) and '.' not in v else '')
def test_a_checkpoint_with_planted_arrays_is_one_line(tmp_path, name, content, expected):
    folder = str(tmp_path / 'epoch_00001')
    net, trainer = write_checkpoint(folder, **{name.replace('.', '_'): content})
    with pytest.raises(UserError) as info:
        Checkpointer.load(folder, net, trainer, mx.gluon.nn.Dense(1), [mx.cpu()])
    assert expected in str(info.value) and folder in str(info.value), info.value


def test_resume_refuses_a_position_outside_the_schedule():
    from runner.trainer import TrainingLoop

    class Loaders:
        train = [0] * 3
    args = type('Args', (), {'lr_decay_epochs': [10], 'lr_decay_factor': 0.5, 'lr': 0.1, 'epochs': 4,
                             'select_metric': None, 'recallk': [1], 'eval_metrics': ['recall']})
    net = type('Net', (), {'backbone': mx.gluon.nn.Dense(1)})
    for epoch, iteration in ((5, 0), (1, 3), (1, -1)):
        progress = {'epoch': epoch, 'iteration': iteration, 'best': {}, 'best_chosen': None}
        with pytest.raises(UserError, match='cannot continue at epoch %d, iteration %d' % (epoch, iteration)):
            TrainingLoop(args, net, None, None, Loaders, None, None, progress, None, True)


def test_a_changed_selection_metric_rebases_the_best_so_far(capsys):
    from argparse import Namespace

    from runner.resume import rebase_best
    saved = {'select_metric': None, 'recallk': [1, 2], 'eval_metrics': ['recall', 'nmi']}
    for flags, kept in (({'recallk': [1, 4]}, True), ({'recallk': [2, 4]}, False), ({'select_metric': 'NMI'}, False)):
        progress = {'best': {'R@1': 0.9, 'NMI': 0.2}, 'best_chosen': 0.9}
        rebase_best(progress, saved, Namespace(**dict(saved, **flags)))
        out = capsys.readouterr().out
        if kept:
            assert progress['best_chosen'] == 0.9 and out == ''
        else:   # the new metric's first value must not be compared with the old metric's 0.9
            assert progress == {'best': {}, 'best_chosen': None}
            assert 'the best epoch is now chosen on' in out and '(was R@1)' in out


# ---- flags ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize('flags,expected', [
    (['--lr_decay_factor', '2'], '--lr_decay_factor must be in (0, 1]'),
    (['--seed', '-1'], '--seed must be in [0, 2147483647]'),
    (['--embed_dim', '1000000000'], '--embed_dim must be in [1, 16384]'),
    (['--image_size', '100000'], '--image_size must be in [32, 2048]'),
    (['--momentum', 'nan'], '--momentum must be a finite number'),
    (['--base_lr_mult', 'nan'], '--base_lr_mult must be a finite number'),
    (['--wd', 'inf'], '--wd must be a finite number'),
    (['--lr', '1e400'], '--lr must be a finite number'),
    (['--momentum', '1'], '--momentum must be in [0, 1)'),
    (['--margin', '-1'], '--margin must be in [0, inf)'),
    (['--ms_alpha', '0'], '--ms_alpha must be in (0, inf)'),
    (['--val_class_ratio', 'nan'], '--val_class_ratio must be a finite number'),
    (['--max_image_pixels', '0'], '--max_image_pixels must be in [1, inf)'),
    (['--num_workers', '-1'], '--num_workers must be in [0, 256]'),
])
def test_flags_out_of_range_or_not_finite_are_one_line(tmp_path, capsys, flags, expected):
    import main
    status = main.main(flags + ['--save_dir', str(tmp_path / 'out')])
    one_line(capsys.readouterr().err.splitlines(), expected)
    assert status == 2 and not (tmp_path / 'out').exists()      # before anything is built


def test_every_numeric_flag_has_a_range():
    from runner.options import RANGES, RANGES_ELSEWHERE, build_parser
    numeric = {a.dest for a in build_parser()._actions if a.type in (int, float)}
    assert numeric - set(RANGES) - RANGES_ELSEWHERE == set()
    assert set(RANGES) | RANGES_ELSEWHERE <= numeric        # no stale names


def test_eval_qe_beyond_the_test_split_stops_before_training(tmp_path, capsys):
    import main
    status = main.main(['--eval_qe', '100000', '--save_dir', str(tmp_path / 'out'), '--num_workers', '0'])
    line = one_line(capsys.readouterr().err.splitlines(), '--eval_qe 100000', 'neighbours')
    assert status == 2 and not (tmp_path / 'out' / 'checkpoints').exists(), line


@pytest.mark.parametrize('flag', ['--image_size=1', '--embed_dim=-5', '--momentum=nan'])
def test_the_tools_check_the_flags_of_args_txt_as_main_py_does(tmp_path, capsys, flag):
    from tools import embed
    run = fake_run(tmp_path / 'run')
    with open(os.path.join(run, 'args.txt'), 'a') as f:
        f.write(flag + '\n')
    status = run_command(embed.run, [run, str(tmp_path), '--out', str(tmp_path / 'e.npy')])
    one_line(capsys.readouterr().err.splitlines(), os.path.join(run, 'args.txt'), flag.split('=')[0])
    assert status == 2


# ---- images ------------------------------------------------------------------------------------------

def jpeg(path, width=16, height=16, cut=None):
    """A small JPEG whose header may claim another size (its pixels are those of 16 x 16), or cut
    short to ``cut`` bytes."""
    data = bytearray(cv2.imencode('.jpg', np.full((16, 16, 3), 128, np.uint8))[1].tobytes())
    sof = data.find(b'\xff\xc0')
    data[sof + 5:sof + 9] = struct.pack('>HH', height, width)
    with open(path, 'wb') as f:
        f.write(bytes(data[:cut]))
    return str(path)


@pytest.fixture
def max_pixels():
    from data import image_file
    yield image_file.set_max_pixels
    image_file.set_max_pixels(image_file.DEFAULT_MAX_PIXELS)


def test_an_image_over_the_pixel_limit_is_refused_from_its_header(tmp_path, max_pixels):
    from data.image_file import read_rgb
    path = jpeg(tmp_path / 'big.jpg', 20000, 20000)
    with pytest.raises(UserError, match='big.jpg: its header claims 20000 x 20000'):
        read_rgb(path)
    max_pixels(10 ** 9)     # the flag raises the limit: the decoder then reads it
    assert read_rgb(jpeg(tmp_path / 'ok.jpg', 2000, 2000)).shape == (2000, 2000, 3)
    max_pixels(2 ** 31)     # over OpenCV's own limit (2^30): one line, not cv2.error
    with pytest.raises(UserError, match='huge.jpg: OpenCV refuses it'):
        read_rgb(jpeg(tmp_path / 'huge.jpg', 40000, 40000))


@pytest.mark.parametrize('kind', ['jpg', 'png'])
def test_a_truncated_image_is_named_by_check_images_and_skipped(tmp_path, kind):
    from data.checks import check_images
    good = str(tmp_path / ('good.' + kind))
    cv2.imwrite(good, np.random.RandomState(0).randint(0, 255, (64, 64, 3)).astype(np.uint8))
    data = open(good, 'rb').read()
    cut = str(tmp_path / ('cut.' + kind))
    with open(cut, 'wb') as f:
        f.write(data[:len(data) * 2 // 3])
    with pytest.raises(UserError, match='cut.%s: the (JPEG|PNG) file is truncated' % kind):
        check_images([(good, 0), (cut, 1)])
    assert check_images([(good, 0), (cut, 1)], skip_bad_images=True) == [(good, 0)]


def test_main_refuses_an_image_bomb_in_a_folder_and_the_flag_reaches_the_check(tmp_path, capsys, max_pixels):
    import main
    for c in range(4):
        os.makedirs(tmp_path / 'data' / ('c%d' % c))
        for i in range(2):
            jpeg(tmp_path / 'data' / ('c%d' % c) / ('%d.jpg' % i))
    bomb = jpeg(tmp_path / 'data' / 'c3' / 'bomb.jpg', 20000, 20000)
    flags = ['--data_name', 'folder', '--data_dir', str(tmp_path / 'data'), '--check_images', '--num_workers', '0',
             '--save_dir', str(tmp_path / 'out'), '--batch_size', '4', '--num_instances', '2']
    assert main.main(flags) == 2
    one_line(capsys.readouterr().err.splitlines(), bomb, 'over --max_image_pixels 67108864')
    assert main.main(flags + ['--max_image_pixels', '100', '--overwrite']) == 2       # 16 x 16 images now too big
    one_line(capsys.readouterr().err.splitlines(), os.path.join('c0', '0.jpg'), 'over --max_image_pixels 100')


def test_an_image_file_larger_than_its_pixels_can_be_is_refused_unread(tmp_path, max_pixels):
    from data.image_file import read_rgb
    path = jpeg(tmp_path / 'padded.jpg')
    with open(path, 'ab') as f:
        f.truncate(8 * 1000 + (1 << 20) + 1)        # a sparse file: its size costs no disk
    max_pixels(1000)
    with pytest.raises(UserError, match='padded.jpg: the file holds 1056577 bytes'):
        read_rgb(path)


@pytest.mark.parametrize('ext', ['.webp', '.tif', '.ppm', '.pgm', '.bmp', '.png', '.jpg'])
def test_every_format_of_a_folder_data_set_has_its_size_read_from_the_header(tmp_path, ext):
    from data.image_header import check_image_file
    path = str(tmp_path / ('x' + ext))
    image = np.random.RandomState(0).randint(0, 255, (20, 30, 3)).astype(np.uint8)
    assert cv2.imwrite(path, image[:, :, 0] if ext == '.pgm' else image)
    check_image_file(path, 600)
    with pytest.raises(ValueError, match='claims 30 x 20 = 600 pixels, over --max_image_pixels 599'):
        check_image_file(path, 599)


def test_a_file_of_no_known_image_format_is_not_decoded(tmp_path):
    from data.image_list import read_rgb
    path = tmp_path / 'x.jpg'
    path.write_bytes(b'\x00' * 100)
    with pytest.raises(UserError, match='x.jpg: not a readable image file'):
        read_rgb(str(path))


def test_skip_bad_images_leaves_an_image_bomb_out(tmp_path):
    from data.checks import check_images
    good, bomb = jpeg(tmp_path / 'good.jpg'), jpeg(tmp_path / 'bomb.jpg', 20000, 20000)
    assert check_images([(good, 0), (bomb, 1)], skip_bad_images=True) == [(good, 0)]


# ---- the tools' other files ------------------------------------------------------------------------------

def test_evaluate_refuses_an_npy_bomb_and_an_npz(tmp_path):
    from numpy.lib import format as npy
    bomb = str(tmp_path / 'bomb.npy')
    with open(bomb, 'wb') as f:
        npy.write_array_header_1_0(f, {'descr': '<f4', 'fortran_order': False, 'shape': (10 ** 12, 4)})
        f.write(b'\0' * 64)
    labels = str(tmp_path / 'labels.npy')
    np.save(labels, np.arange(4))
    from tools import evaluate
    with pytest.raises(UserError, match=r'bomb.npy .*claims \(1000000000000, 4\)'):
        evaluate.run(['--embeddings', bomb, '--labels', labels])
    npz = str(tmp_path / 'x.npz')
    np.savez(npz, a=np.zeros((4, 2)))
    with pytest.raises(UserError, match='x.npz.*a .npz archive'):
        evaluate.run(['--embeddings', npz, '--labels', labels])


def test_compare_refuses_a_binary_paper_csv_and_skips_a_folder_named_like_an_event_file(tmp_path):
    from tools.paper_numbers import load_paper_numbers
    from utils.events import read_scalars
    binary = tmp_path / 'paper.csv'
    binary.write_bytes(b'\x00\x80\xff' * 20)
    with pytest.raises(UserError, match='paper.csv are not a CSV text file'):
        load_paper_numbers(str(binary))
    (tmp_path / 'run' / 'events.out.tfevents.123.host').mkdir(parents=True)
    assert read_scalars(str(tmp_path / 'run')) == {}


@pytest.mark.parametrize('tool,flags,expected', [
    ('evaluate', ['--seed', '-1'], '--seed must be in [0, 2^32)'),
    ('retrieval', ['RUN', '--out', 'g.png', '--seed', '-1'], '--seed must be in [0, 2^32)'),
    ('retrieval', ['RUN', '--out', 'g.png', '--tile', '100000'], '--tile in [8, 1024]'),
])
def test_the_tools_flags_out_of_range_are_one_line(tmp_path, capsys, tool, flags, expected):
    import importlib
    module = importlib.import_module('tools.' + tool)
    np.save(tmp_path / 'e.npy', np.eye(4, dtype=np.float32))
    np.save(tmp_path / 'l.npy', np.arange(4))
    argv = [str(tmp_path) if f == 'RUN' else f for f in flags]
    if tool == 'evaluate':
        argv += ['--embeddings', str(tmp_path / 'e.npy'), '--labels', str(tmp_path / 'l.npy')]
    assert run_command(lambda a: module.run(a) and 0, argv) == 2
    one_line(capsys.readouterr().err.splitlines(), expected)


def test_retrieval_refuses_an_out_of_another_format_first(tmp_path, capsys):
    from tools import retrieval
    status = run_command(lambda argv: retrieval.run(argv) and 0, [str(tmp_path), '--out', str(tmp_path / 'grid.xyz')])
    one_line(capsys.readouterr().err.splitlines(), '--out', 'grid.xyz')
    assert status == 2


# ---- divergence ------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_weights_that_diverge_before_an_evaluation_give_the_loss_is_nan_kind_of_line(tmp_path, capsys):
    import main
    status = main.main(['--lr', '1e6', '--epochs', '2', '--eval_epoch_term', '1', '--num_workers', '0',
                        '--save_dir', str(tmp_path / 'out')])
    line = one_line(capsys.readouterr().err.splitlines(), 'at epoch 1')
    assert status == 2 and ('the weights diverged' in line or 'loss is' in line), line
    assert 'no checkpoint was written yet' in line or 'last good checkpoint' in line


# ---- memory: every bomb above, refused within the memory of the imports ------------------------------------

BOMBS_SCRIPT = """
import os, re, sys
import main
from runner.checkpoint import Checkpointer
from data.image_file import read_rgb
from tools import embed, evaluate
from utils.errors import run_command
import mxnet as mx
folder = sys.argv[1]
net = mx.gluon.nn.Dense(3, in_units=4)


def peak_mb():
    # this process's own peak resident memory; ru_maxrss would count the parent's at the fork too
    with open('/proc/self/status') as f:
        return int(re.search(r'VmHWM:\\s*(\\d+) kB', f.read()).group(1)) // 1024


print('imports', peak_mb(), 0, flush=True)
for name, run in [
        ('init_from count', lambda: main.main(['--init_from', folder + '/count.params', '--save_dir', folder + '/r'])),
        ('init_from name', lambda: main.main(['--init_from', folder + '/name.params', '--save_dir', folder + '/r'])),
        ('tools params', lambda: run_command(embed.run, [folder + '/run', folder, '--out', folder + '/e.npy',
                                                          '--params', folder + '/count.params'])),
        ('checkpoint', lambda: run_command(
            lambda a: Checkpointer.load(folder + '/epoch_00001', net, None, None, None), [])),
        ('image', lambda: run_command(lambda a: read_rgb(folder + '/big.jpg'), [])),
        ('npy', lambda: evaluate.main(['--embeddings', folder + '/bomb.npy', '--labels', folder + '/labels.npy'])),
        ]:
    status = run()
    print(name, peak_mb(), status, flush=True)
"""


@pytest.mark.slow
def test_no_bomb_costs_memory(tmp_path):
    """Each bomb claims gigabytes (MXNet's loader: 4 GB for COUNT_BOMB, 2.4 GB for NAME_BOMB; the
    image 1.2 GB decoded; the .npy 16 TB): refused, the process stays at what its imports cost."""
    from numpy.lib import format as npy
    (tmp_path / 'count.params').write_bytes(COUNT_BOMB)
    (tmp_path / 'name.params').write_bytes(NAME_BOMB)
    fake_run(tmp_path / 'run')
    write_checkpoint(str(tmp_path / 'epoch_00001'), model_params=COUNT_BOMB)
    jpeg(tmp_path / 'big.jpg', 20000, 20000)
    with open(tmp_path / 'bomb.npy', 'wb') as f:
        npy.write_array_header_1_0(f, {'descr': '<f4', 'fortran_order': False, 'shape': (10 ** 12, 4)})
        f.write(b'\0' * 64)
    np.save(tmp_path / 'labels.npy', np.arange(4))
    script = tmp_path / 'bombs.py'
    script.write_text(BOMBS_SCRIPT)
    out = tmp_path / 'out.txt'
    with open(out, 'w') as f:
        proc = subprocess.Popen([PY, str(script), str(tmp_path)], cwd=REPO, stdout=f, stderr=subprocess.PIPE,
                                env=dict(os.environ, PYTHONPATH=REPO))
        err = proc.stderr.read().decode()
    assert proc.wait() == 0, err
    # each line: the case, the peak memory so far (MB), its exit status
    results = {name: (int(rss), int(status)) for name, rss, status in
               (line.rsplit(' ', 2) for line in out.read_text().splitlines() if re.match(r'.* \d+ \d+$', line))}
    assert [(name, status) for name, (_, status) in results.items()] == [
        ('imports', 0), ('init_from count', 2), ('init_from name', 2), ('tools params', 2), ('checkpoint', 2),
        ('image', 2), ('npy', 2)], (results, err)
    imports = results['imports'][0]
    assert all(rss < imports + 100 for rss, _ in results.values()), results       # nothing of what they claim
    assert results['npy'][0] < RSS_LIMIT_MB, results
    assert 'Traceback' not in err


@pytest.mark.slow
def test_embed_skips_an_image_bomb_and_one_over_opencvs_limit(tmp_path, capsys, max_pixels):
    from model import get_model
    from tools import embed
    run = fake_run(tmp_path / 'run', '--max_image_pixels', str(2 ** 31))   # the run's flag: past OpenCV's limit
    net = get_model('googlenet', 512, False)
    net(mx.nd.zeros((1, 3, 64, 64)))        # the embedding layer's shape is inferred on the first batch
    net.save_parameters(os.path.join(run, 'model_final.params'))
    os.makedirs(tmp_path / 'images')
    good = jpeg(tmp_path / 'images' / 'a.jpg')
    huge = jpeg(tmp_path / 'images' / 'b.jpg', 40000, 40000)
    argv = [run, str(tmp_path / 'images'), '--out', str(tmp_path / 'e.npy')]
    assert run_command(embed.run, argv) == 2
    one_line(capsys.readouterr().err.splitlines(), huge, 'OpenCV refuses it', '--skip_bad_images')
    emb, kept = embed.run(argv + ['--skip_bad_images'])
    assert kept == [good] and emb.shape == (1, 512) and huge in capsys.readouterr().err
    assert run_command(embed.run, argv + ['--max_image_pixels', '1000']) == 2        # the tool's flag wins
    one_line(capsys.readouterr().err.splitlines(), huge, 'over --max_image_pixels 1000')
