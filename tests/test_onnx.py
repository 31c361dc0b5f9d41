"""The ONNX export (tools.export, tools.onnx_export) and the onnxruntime-only embedder
(tools.embed_onnx): same embeddings and metrics as MXNet, the preprocessing in the file, one-line
failures that leave no file under a final name."""
import os
import resource
import subprocess
import sys

import cv2
import mxnet as mx
import numpy as np
import onnxruntime
import pytest
from mxnet.gluon import nn

import main
from data.image_file import read_rgb
from data import transforms
from model import get_model
from model.embedding_net import EmbeddingNet
from tests.test_tools import RUN, best_params, write_digit_folders
from tools import embed_onnx, export
from tools.onnx_export import OPSET, preprocessing_metadata, to_onnx
from utils.errors import run_command

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A fresh interpreter in which MXNet and gluoncv cannot be imported runs tools.embed_onnx.
_WITHOUT_MXNET = ("import runpy, sys; sys.modules['mxnet'] = sys.modules['gluoncv'] = None; "
                  "sys.argv[0] = 'embed_onnx'; runpy.run_module('tools.embed_onnx', run_name='__main__')")


def _session(model):
    return onnxruntime.InferenceSession(model.SerializeToString(), providers=['CPUExecutionProvider'])


def _tiny_net(pooling='avg+max', embed_dim=8):
    """Our EmbeddingNet head (pooling, Dense, L2Normalization) on a one-convolution trunk."""
    trunk = nn.HybridSequential()
    trunk.add(nn.Conv2D(6, 3, activation='relu'))
    trunk.initialize(mx.init.Xavier())
    net = EmbeddingNet(trunk, embed_dim, pooling=pooling)
    net.hybridize()
    return net


def _write_images(root):
    """Colour images of several sizes in nested folders, and a greyscale one; their paths."""
    rng = np.random.RandomState(0)
    paths = []
    for i, (folder, shape) in enumerate([('a', (20, 30, 3)), ('a', (17, 17, 3)), ('b/c', (40, 25, 3)),
                                         ('b', (9, 12))]):
        os.makedirs(os.path.join(root, folder), exist_ok=True)
        paths.append(os.path.join(root, folder, '%d.png' % i))
        cv2.imwrite(paths[-1], rng.randint(0, 256, shape).astype(np.uint8))
    return paths


def _one_error_line(text):
    lines = text.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('error: '), text
    return lines[0]


def _check_against_mxnet(net, size, batches=(1, 3)):
    model = to_onnx(net, size, preprocessing_metadata(size, 8))
    session = _session(model)
    for batch in batches:
        x = np.random.RandomState(batch).uniform(-2, 2, (batch, 3, size, size)).astype(np.float32)
        ours = session.run(None, {'data': x})[0]
        np.testing.assert_allclose(ours, net(mx.nd.array(x)).asnumpy(), rtol=0, atol=1e-5)
    return model


def test_tiny_embedder_graph_and_values():
    net = _tiny_net()
    model = _check_against_mxnet(net, 16)
    graph = model.graph
    # The weights are initializers only: a graph input would let a caller override them and keep
    # onnxruntime from folding the layers.
    assert [v.name for v in graph.input] == ['data']
    assert {w.name for w in graph.initializer} >= {p.name for p in net.collect_params().values()}
    assert [(o.domain, o.version) for o in model.opset_import] == [('', OPSET)] and OPSET == 13
    dims = [[d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
            for v in (graph.input[0], graph.output[0])]
    assert dims == [['batch', 3, 16, 16], ['batch', 8]] and graph.output[0].name == 'embedding'


@pytest.mark.parametrize('mode', ['instance', 'channel'])
def test_l2_normalization_of_a_4d_tensor(mode):
    # The head's input is (B, d); the converter also serves (B, C, H, W), flattening for 'instance'.
    from onnx import helper

    from tools.onnx_export import _graph
    x = mx.sym.var('data')
    sym = mx.sym.L2Normalization(mx.sym.Convolution(x, num_filter=4, kernel=(3, 3), name='conv'), mode=mode)
    params = {'conv_weight': mx.nd.random.normal(shape=(4, 3, 3, 3)), 'conv_bias': mx.nd.ones((4,))}
    graph = _graph(sym, params, 8)
    del graph.input[1:]
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', OPSET)])
    data = np.random.RandomState(0).randn(2, 3, 8, 8).astype(np.float32)
    expected = sym.eval(data=mx.nd.array(data), **params)[0].asnumpy()
    np.testing.assert_allclose(_session(model).run(None, {'data': data})[0], expected, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize('backbone,size,pooling', [
    ('googlenet', 32, 'avg'), ('googlenet', 32, 'avg+max'), ('googlenet', 64, 'avg'), ('googlenet', 64, 'avg+max'),
    ('resnet50', 64, 'avg'), ('resnet50', 32, 'avg+max')])
def test_backbones_equal_mxnet(backbone, size, pooling):
    _check_against_mxnet(get_model(backbone, 8, pretrained=False, pooling=pooling), size)


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    """(tiny EmbeddingNet, its ONNX file at 24 px, a folder of images)."""
    base = tmp_path_factory.mktemp('tiny')
    net = _tiny_net()
    path = str(base / 'tiny.onnx')
    with open(path, 'wb') as f:
        f.write(to_onnx(net, 24, preprocessing_metadata(24, 8)).SerializeToString())
    _write_images(str(base / 'images'))
    return net, path, str(base / 'images')


def test_metadata_round_trips_to_the_test_transform(tiny):
    _, path, images = tiny
    session, preprocess = embed_onnx.load_session(path)
    meta = session.get_modelmeta().custom_metadata_map
    assert (meta['input_size'], meta['embedding_size'], meta['channel_order'], meta['resize'], meta['scale']) \
        == ('24', '8', 'RGB', 'cv2.INTER_LINEAR', '1/255')
    np.testing.assert_array_equal(np.array(meta['mean'].split(','), np.float32), transforms.IMAGENET_MEAN)
    np.testing.assert_array_equal(np.array(meta['std'].split(','), np.float32), transforms.IMAGENET_STD)
    from tools.embed import list_images
    for image in list_images(images):    # colour and greyscale, square and not
        np.testing.assert_array_equal(preprocess(image), transforms.test_transform(24)(read_rgb(image)))


def test_embed_onnx_without_mxnet_equals_mxnet(tiny, tmp_path):
    from tools.embed import list_images
    net, path, images = tiny
    out = tmp_path / 'e.npy'
    proc = subprocess.run([sys.executable, '-c', _WITHOUT_MXNET, path, images, '--out', str(out),
                           '--batch_size', '3'], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    paths = list_images(images)
    assert (tmp_path / 'e.txt').read_text().splitlines() == paths
    assert sorted(os.listdir(str(tmp_path))) == ['e.npy', 'e.txt']
    x = np.stack([transforms.test_transform(24)(read_rgb(p)) for p in paths])
    emb = np.load(str(out))
    assert emb.dtype == np.float32
    np.testing.assert_allclose(emb, net(mx.nd.array(x)).asnumpy(), rtol=0, atol=1e-5)
    # The guard works: the same prelude cannot run the MXNet embedder.
    proc = subprocess.run([sys.executable, '-c', _WITHOUT_MXNET.replace('embed_onnx', 'embed'), 'r', images,
                           '--out', str(out)], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode != 0


def test_listing_is_data_folder_s(tmp_path):
    """Both embedders list with tools.embed.list_images: data.folder's order (folder by folder,
    by path components, names sorted), hidden files and links back up the tree skipped."""
    from tools.embed import list_images
    root = tmp_path / 'tree'
    for rel in ('z.png', 'a/B.JPG', 'a/a.png', 'a/.hidden.png', 'a-b/x.png', 'a/b/c.webp', '.h/x.png',
                'b/readme.txt', 'b/anim.gif'):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b'')
    os.symlink(str(root), str(root / 'a' / 'loop'))
    assert list_images(str(root), True) == [str(root / rel) for rel in
                                            ('z.png', 'a/B.JPG', 'a/a.png', 'a/b/c.webp', 'a-b/x.png')]
    with pytest.raises(Exception, match='anim.gif'):
        list_images(str(root))


def test_embed_onnx_bad_inputs_are_one_line(tiny, tmp_path, capsys):
    _, path, images = tiny
    not_onnx = tmp_path / 'model.onnx'
    not_onnx.write_text('not a model')
    bare = tmp_path / 'bare.onnx'
    bare.write_bytes(to_onnx(_tiny_net(), 24, {}).SerializeToString())
    broken = tmp_path / 'broken'
    broken.mkdir()
    cv2.imwrite(str(broken / 'a.png'), np.zeros((5, 5, 3), np.uint8))
    (broken / 'b.png').write_bytes(b'not a png')
    out = tmp_path / 'e.npy'
    cases = [([str(tmp_path / 'none.onnx'), images], 'none.onnx'),
             ([str(not_onnx), images], 'model.onnx'),
             ([str(bare), images], 'metadata'),
             ([path, str(broken)], 'b.png'),
             ([path, images, '--out', str(tmp_path / 'nope' / 'e.npy')], 'nope'),
             ([path, images, '--out', str(tmp_path / 'e.txt')], '.npy')]
    for argv, named in cases:
        argv = argv + ([] if '--out' in argv else ['--out', str(out)])
        assert run_command(embed_onnx.run, argv) == 2
        assert named in _one_error_line(capsys.readouterr().err)
    assert sorted(os.listdir(str(tmp_path))) == ['bare.onnx', 'broken', 'model.onnx']
    emb, kept = embed_onnx.run([path, str(broken), '--out', str(out), '--skip_bad_images'])
    assert emb.shape == (1, 8) and kept == [str(broken / 'a.png')]


def test_export_missing_folder_or_parameters_is_one_line(tmp_path, capsys):
    run = tmp_path / 'run'
    run.mkdir()
    (run / 'args.txt').write_text('--image_size=32\n')
    for argv, named in [([str(run), str(tmp_path / 'nope' / 'net')], 'nope'),
                        ([str(run), str(tmp_path / 'net'), '--format', 'onnx'], 'model_final.params')]:
        assert run_command(export.run, argv) == 2
        assert named in _one_error_line(capsys.readouterr().err)
    assert sorted(os.listdir(str(tmp_path))) == ['run']


# A finished digits run (tests.test_tools' recipe), exported and embedded through both paths.

@pytest.fixture(scope='module')
def digits(tmp_path_factory):
    """(run folder, the folder of its test classes d5 .. d9)."""
    base = tmp_path_factory.mktemp('digits')
    data = str(base / 'data')
    write_digit_folders(data)
    run = str(base / 'run')
    assert main.main(RUN + ['--data_dir', data, '--save_dir', run]) == 0
    test = base / 'test'
    test.mkdir()
    for c in range(5, 10):
        os.symlink(os.path.join(data, 'd%d' % c), str(test / ('d%d' % c)))
    return run, str(test)


def _export(*args, limit=None):
    """python3 -m tools.export in a subprocess, its files limited to ``limit`` bytes (a full disk:
    writing beyond it fails with EFBIG, as with ENOSPC; Python ignores the SIGXFSZ it raises)."""
    def preexec():
        if limit is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return subprocess.run([sys.executable, '-m', 'tools.export'] + [str(a) for a in args], cwd=REPO,
                          capture_output=True, text=True, preexec_fn=preexec)


@pytest.mark.slow
def test_digits_run_same_embeddings_and_metrics_through_onnxruntime(digits, tmp_path):
    from metrics.evaluation import evaluate
    from tools.embed import run as embed_mxnet
    run, test = digits
    params = best_params(run)
    proc = _export(run, tmp_path / 'net', '--params', params)
    assert proc.returncode == 0, proc.stderr
    assert sorted(os.listdir(str(tmp_path))) == ['net-0000.params', 'net-symbol.json', 'net.onnx']
    proc = subprocess.run([sys.executable, '-c', _WITHOUT_MXNET, str(tmp_path / 'net.onnx'), test, '--out',
                           str(tmp_path / 'onnx.npy')], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    ours = np.load(str(tmp_path / 'onnx.npy'))
    theirs, paths = embed_mxnet([run, test, '--out', str(tmp_path / 'mxnet.npy'), '--params', params])
    assert (tmp_path / 'onnx.txt').read_text().splitlines() == paths
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-5)
    labels = np.load(os.path.join(run, 'embeddings', 'test_labels.npy'))
    saved = evaluate(np.load(os.path.join(run, 'embeddings', 'test_embeddings.npy')), labels)
    onnx_metrics = evaluate(ours, labels)
    assert onnx_metrics['R@1'] == saved['R@1'] and onnx_metrics['NMI'] == saved['NMI']


@pytest.mark.slow
@pytest.mark.parametrize('fmt', ['both', 'onnx'])
def test_full_disk_leaves_nothing_under_a_final_name(digits, tmp_path, fmt):
    # 1 MB: the symbol file fits, the 24 MB of weights do not (MXNet raises MXNetError, not OSError).
    proc = _export(digits[0], tmp_path / 'net', '--format', fmt, limit=1 << 20)
    assert proc.returncode == 2
    assert ('net.onnx' if fmt == 'onnx' else 'net-symbol.json') in _one_error_line(proc.stderr)
    assert os.listdir(str(tmp_path)) == []


@pytest.mark.slow
def test_vit_is_one_line_and_keeps_the_mxnet_export(tmp_path, capsys):
    run = tmp_path / 'run'
    run.mkdir()
    (run / 'args.txt').write_text('--backbone=vit_small_patch16\n--image_size=32\n--embed_dim=8\n')
    net = get_model('vit_small_patch16', 8, pretrained=False)
    net(mx.nd.zeros((1, 3, 32, 32)))
    net.save_parameters(str(run / 'model_final.params'))
    assert run_command(export.run, [str(run), str(tmp_path / 'net')]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert 'vit_small_patch16' in line and '_contrib_BilinearResize2D' in line
    assert sorted(os.listdir(str(tmp_path))) == ['net-0000.params', 'net-symbol.json', 'run']
    export.run([str(run), str(tmp_path / 'm'), '--format', 'mxnet'])
    assert sorted(os.listdir(str(tmp_path))) == ['m-0000.params', 'm-symbol.json', 'net-0000.params',
                                                 'net-symbol.json', 'run']
