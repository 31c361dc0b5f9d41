"""The tools around a finished run: tools.embed, tools.export, tools.retrieval, and QE/DBA in
main.py and tools.evaluate, on one small run of main.py over a folder of digit images."""
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

import main
from utils.events import read_scalars

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN = ['--data_name', 'folder', '--image_size', '32', '--pretrained', 'false', '--batch_size', '40',
       '--num_instances', '8', '--epochs', '2', '--eval_epoch_term', '1', '--num_workers', '0',
       '--eval_metrics', 'recall,map_at_r', '--eval_qe', '2', '--eval_dba', '1', '--save_embeddings']


def write_digit_folders(root, classes=10, per_class=12):
    """scikit-learn's digits as PNG files, one folder per digit (d0 .. d9), upscaled to 16x16."""
    from sklearn.datasets import load_digits
    digits = load_digits()
    for c in range(classes):
        os.makedirs(os.path.join(root, 'd%d' % c))
        images = digits.images[digits.target == c][:per_class]
        for i, image in enumerate(images):
            grey = np.rint(image * (255.0 / 16)).astype(np.uint8)
            cv2.imwrite(os.path.join(root, 'd%d' % c, '%03d.png' % i),
                        cv2.resize(grey, (16, 16), interpolation=cv2.INTER_NEAREST))


@pytest.fixture(scope='module')
def run_dir(tmp_path_factory):
    base = tmp_path_factory.mktemp('tools')
    data = str(base / 'data')
    write_digit_folders(data)
    out = str(base / 'run')
    assert main.main(RUN + ['--data_dir', data, '--save_dir', out]) == 0
    return out


def best_params(run_dir):
    """The weights of the best epoch: those --save_embeddings saved the embeddings of."""
    import glob
    return sorted(glob.glob(os.path.join(run_dir, 'model_epoch_*.params')))[-1]


def _cli(module, *args):
    return subprocess.run([sys.executable, '-m', module] + [str(a) for a in args], cwd=REPO,
                          capture_output=True, text=True)


@pytest.mark.slow
def test_main_logs_expanded_metrics_as_the_cli_computes_them(run_dir):
    from tools.evaluate import run as evaluate_cli
    s = read_scalars(run_dir)
    best_epoch, best = s['metric_epoch/R1/best'][-1]
    assert dict(s['metric_epoch/R1'])[best_epoch] == best
    logged = {key: dict(s['metric_epoch/' + key])[best_epoch] for key in ('R1_qe_dba', 'MAP_R_qe_dba')}
    emb = os.path.join(run_dir, 'embeddings')
    cli = evaluate_cli(['--embeddings', os.path.join(emb, 'test_embeddings.npy'), '--labels',
                        os.path.join(emb, 'test_labels.npy'), '--metrics', 'recall,map_at_r',
                        '--qe', '2', '--dba', '1'])
    assert cli['R@1_qe_dba'] == pytest.approx(logged['R1_qe_dba'], abs=1e-6)
    assert cli['MAP@R_qe_dba'] == pytest.approx(logged['MAP_R_qe_dba'], abs=1e-6)
    assert 'R@1' in cli and 'NMI' not in cli


@pytest.mark.slow
def test_embed_gives_the_saved_test_embeddings(run_dir, tmp_path):
    # The test classes (d5 .. d9) reached through symbolic links, as the issue asks.
    data = os.path.join(os.path.dirname(run_dir), 'data')
    links = tmp_path / 'images'
    links.mkdir()
    for c in range(5, 10):
        os.symlink(os.path.join(data, 'd%d' % c), str(links / ('d%d' % c)))
    out = tmp_path / 'out.npy'
    proc = _cli('tools.embed', run_dir, links, '--out', out, '--batch_size', '7', '--params',
                best_params(run_dir))
    assert proc.returncode == 0, proc.stderr
    emb = np.load(str(out))
    saved = np.load(os.path.join(run_dir, 'embeddings', 'test_embeddings.npy'))
    assert emb.dtype == np.float32 and emb.shape == saved.shape
    np.testing.assert_allclose(emb, saved, atol=1e-5)
    paths = (tmp_path / 'out.txt').read_text().splitlines()
    assert paths == sorted(paths) and len(paths) == len(emb)
    assert paths[0] == os.path.join(str(links), 'd5', '000.png')


@pytest.mark.slow
def test_embed_bad_image_is_one_line_or_skipped(run_dir, tmp_path):
    images = tmp_path / 'images'
    (images / 'a').mkdir(parents=True)
    data = os.path.join(os.path.dirname(run_dir), 'data')
    for name in ('000.png', '001.png'):
        os.symlink(os.path.join(data, 'd7', name), str(images / 'a' / name))
    (images / 'a' / '0005.png').write_bytes(b'not a png')
    proc = _cli('tools.embed', run_dir, images, '--out', tmp_path / 'e.npy')
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith('error: ')
    assert '0005.png' in lines[0]
    proc = _cli('tools.embed', run_dir, images, '--out', tmp_path / 'e.npy', '--skip_bad_images')
    assert proc.returncode == 0, proc.stderr
    assert np.load(str(tmp_path / 'e.npy')).shape[0] == 2
    assert [os.path.basename(p) for p in (tmp_path / 'e.txt').read_text().splitlines()] == \
        ['000.png', '001.png']
    proc = _cli('tools.embed', tmp_path, images, '--out', tmp_path / 'e.npy')
    assert proc.returncode == 2 and 'args.txt' in proc.stderr and 'Traceback' not in proc.stderr


# Runs in a fresh interpreter outside the repository, with nothing of it on the path.
# Only mxnet and the shim file (the numpy names MXNet 1.9.1 needs on Python 3.12+), not the repository.
_IMPORT = '''
import runpy, sys
runpy.run_path(sys.argv[4])
import mxnet as mx, numpy as np
net = mx.gluon.SymbolBlock.imports(sys.argv[1] + '-symbol.json', ['data'], sys.argv[1] + '-0000.params')
np.save(sys.argv[3], net(mx.nd.array(np.load(sys.argv[2]))).asnumpy())
'''


@pytest.mark.slow
def test_export_round_trip_without_the_repository(run_dir, tmp_path):
    from data.image_file import read_rgb
    from data.transforms import test_transform
    proc = _cli('tools.export', run_dir, tmp_path / 'net', '--params', best_params(run_dir))
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / 'net-symbol.json').exists() and (tmp_path / 'net-0000.params').exists()
    data = os.path.join(os.path.dirname(run_dir), 'data')
    paths = [os.path.join(data, 'd%d' % c, '%03d.png' % i) for c in range(5, 10) for i in range(12)]
    batch = np.stack([test_transform(32)(read_rgb(p)) for p in paths])
    np.save(str(tmp_path / 'x.npy'), batch)
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
    proc = subprocess.run([sys.executable, '-c', _IMPORT, str(tmp_path / 'net'), str(tmp_path / 'x.npy'),
                           str(tmp_path / 'y.npy'), os.path.join(REPO, 'utils', 'mxnet_compat.py')],
                          cwd=str(tmp_path), env=env, capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr
    saved = np.load(os.path.join(run_dir, 'embeddings', 'test_embeddings.npy'))
    np.testing.assert_allclose(np.load(str(tmp_path / 'y.npy')), saved, atol=1e-5)


def _frame_colour(picture, row, col, side, gap=4):
    y = gap + row * (side + gap)
    x = gap + col * (side + gap) + (2 * gap if col else 0)
    return tuple(int(v) for v in picture[y, x])


@pytest.mark.slow
def test_retrieval_picture_frames_match_the_neighbours(run_dir, tmp_path):
    from tools.retrieval import GREEN, GREY, RED, run
    out = tmp_path / 'grid.png'
    picture, picks, nn = run([run_dir, '--out', str(out), '--queries', '4', '--k', '3', '--tile', '40'])
    saved = cv2.imread(str(out))[:, :, ::-1]
    np.testing.assert_array_equal(saved, picture)
    assert saved.shape == (4 + 4 * 44, 3 * 4 + 4 * 44, 3)
    emb = np.load(os.path.join(run_dir, 'embeddings', 'test_embeddings.npy'))
    labels = np.load(os.path.join(run_dir, 'embeddings', 'test_labels.npy'))
    d = ((emb[:, None, :].astype(np.float64) - emb[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    for r, q in enumerate(picks):
        expected = np.argsort(d[q], kind='stable')[:3]
        np.testing.assert_array_equal(nn[r], expected)
        assert _frame_colour(saved, r, 0, 40) == GREY
        for c, j in enumerate(expected):
            assert _frame_colour(saved, r, c + 1, 40) == (GREEN if labels[j] == labels[q] else RED)


@pytest.mark.slow
def test_retrieval_picture_of_a_digits_run(tmp_path):
    from tools.retrieval import run
    assert main.main(['--epochs', '1', '--eval_epoch_term', '1', '--batch_size', '40', '--num_instances', '8',
                      '--save_embeddings', '--save_dir', str(tmp_path / 'run')]) == 0
    proc = _cli('tools.retrieval', tmp_path / 'run', '--out', tmp_path / 'g.png')
    assert proc.returncode == 0, proc.stderr
    assert cv2.imread(str(tmp_path / 'g.png')).shape[:2] == (4 + 6 * 100, 12 + 6 * 100)


def test_embed_reads_and_lists_a_file_name_that_is_not_utf8(run_dir, tmp_path):
    """cv2.imread crashed on such a name; the listing holds the name's bytes, so it opens as listed."""
    from tools import embed
    images = tmp_path / 'images'
    (images / 'a').mkdir(parents=True)
    data = os.path.join(os.path.dirname(run_dir), 'data')
    latin1 = os.fsdecode(b'caf\xe9.png')
    for name, source in ((latin1, '000.png'), ('001.png', '001.png')):
        os.symlink(os.path.join(data, 'd7', source), os.path.join(str(images / 'a'), name))
    out = str(tmp_path / 'e.npy')
    embed.run([run_dir, str(images), '--out', out])
    listed = (tmp_path / 'e.txt').read_bytes().splitlines()
    assert [os.path.basename(p) for p in listed] == [b'001.png', b'caf\xe9.png']
    assert all(os.path.isfile(p) for p in listed) and np.load(out).shape[0] == 2
    assert sorted(os.listdir(str(tmp_path))) == ['e.npy', 'e.txt', 'images']     # no temporary file left
