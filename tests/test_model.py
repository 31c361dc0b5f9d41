"""The model registry: GoogLeNet trunk + embedding head, pretrained weights and their errors."""
import numpy as np
import pytest
import mxnet as mx
from gluoncv.model_zoo import googlenet

from model import get_model
from model.googlenet import TRUNK
import model.weights
from runner.options import flag_errors
from utils.errors import UserError


@pytest.mark.parametrize('size', [32, 64])
def test_embeddings_are_unit_vectors_at_small_sizes(size):
    net = get_model('googlenet', 24, pretrained=False)
    out = net(mx.nd.random.uniform(shape=(2, 3, size, size))).asnumpy()
    assert out.shape == (2, 24)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1, rtol=1e-5)


def test_pretrained_path_loads_the_trunk(tmp_path):
    source = googlenet(pretrained=False, pretrained_base=False)
    source.initialize(mx.init.Normal(0.3))
    source(mx.nd.zeros((1, 3, 224, 224)))
    path = str(tmp_path / 'googlenet-c7c89366.params')
    source.save_parameters(path)
    net = get_model('googlenet', 8, pretrained=True, pretrained_path=path)
    for layer, name in zip(net.backbone, TRUNK):
        loaded = [p.data().asnumpy() for p in layer.collect_params().values()]
        expected = [p.data().asnumpy() for p in getattr(source, name).collect_params().values()]
        assert len(loaded) == len(expected)
        for a, b in zip(loaded, expected):
            np.testing.assert_array_equal(a, b)


def test_offline_without_weights_names_the_file_and_flags(tmp_path, monkeypatch):
    monkeypatch.setenv('MXNET_HOME', str(tmp_path))

    def offline(name, *args, **kwargs):
        raise OSError('Temporary failure in name resolution')
    monkeypatch.setattr('gluoncv.model_zoo.model_store.get_model_file', offline)
    with pytest.raises(UserError) as err:
        get_model('googlenet', 8, pretrained=True)
    message = str(err.value)
    assert str(tmp_path / 'models' / 'googlenet-c7c89366.params') in message
    assert '--pretrained_path' in message and '--pretrained false' in message
    assert '\n' not in message


def test_missing_or_mismatched_weight_file(tmp_path):
    with pytest.raises(UserError, match='does not exist'):
        get_model('googlenet', 8, pretrained_path=str(tmp_path / 'nope.params'))
    wrong = mx.gluon.nn.Dense(3, in_units=2)
    wrong.initialize()
    path = str(tmp_path / 'wrong.params')
    wrong.save_parameters(path)
    with pytest.raises(UserError, match='does not match backbone googlenet'):
        get_model('googlenet', 8, pretrained_path=path)


def test_unknown_backbone():
    with pytest.raises(UserError, match='--backbone'), flag_errors():
        get_model('alexnet', 8)


def test_store_file_follows_mxnet_home(tmp_path, monkeypatch):
    monkeypatch.setenv('MXNET_HOME', str(tmp_path))
    assert model.weights.store_file('googlenet') == str(tmp_path / 'models' / 'googlenet-c7c89366.params')
