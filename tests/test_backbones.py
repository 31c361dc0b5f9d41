"""ResNet-50 and ViT-S/16 backbones, the timm converter, --pooling avg+max and --bn_freeze."""
import numpy as np
import pytest
import mxnet as mx
from mxnet import autograd
from scipy.special import erf

from model import BACKBONES, get_model
from model.embedding_net import EmbeddingNet
from model.resnet50 import resnet50_trunk
from model.vit import VisionTransformer, vit_small_patch16
from runner.options import flag_errors
from tools.convert_timm_vit import convert
from utils.errors import UserError


def timm_state_dict(rng, dim=384, depth=12, mlp=1536, patch=16, tokens=197, classes=1000):
    """Random arrays under the names and shapes of a timm ViT (DeiT) state dict."""
    shapes = {'cls_token': (1, 1, dim), 'pos_embed': (1, tokens, dim),
              'patch_embed.proj.weight': (dim, 3, patch, patch), 'patch_embed.proj.bias': (dim,),
              'norm.weight': (dim,), 'norm.bias': (dim,), 'head.weight': (classes, dim), 'head.bias': (classes,)}
    for i in range(depth):
        for name, shape in (('norm1.weight', (dim,)), ('norm1.bias', (dim,)),
                            ('attn.qkv.weight', (3 * dim, dim)), ('attn.qkv.bias', (3 * dim,)),
                            ('attn.proj.weight', (dim, dim)), ('attn.proj.bias', (dim,)),
                            ('norm2.weight', (dim,)), ('norm2.bias', (dim,)),
                            ('mlp.fc1.weight', (mlp, dim)), ('mlp.fc1.bias', (mlp,)),
                            ('mlp.fc2.weight', (dim, mlp)), ('mlp.fc2.bias', (dim,))):
            shapes['blocks.%d.%s' % (i, name)] = shape
    return {name: (0.1 * rng.randn(*shape)).astype(np.float32) for name, shape in shapes.items()}


def save_converted(state, path):
    mx.nd.save(str(path), {name: mx.nd.array(value) for name, value in convert(state).items()})
    return str(path)


def timm_forward(s, images, heads, patch):
    """timm's VisionTransformer.forward_features + class token, in NumPy from timm's names."""
    def linear(x, name):
        return x @ s[name + '.weight'].T + s[name + '.bias']

    def layer_norm(x, name):
        mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + 1e-6) * s[name + '.weight'] + s[name + '.bias']
    B, _, H, W = images.shape
    h, w = H // patch, W // patch
    patches = images.reshape(B, 3, h, patch, w, patch).transpose(0, 2, 4, 1, 3, 5).reshape(B, h * w, -1)
    x = patches @ s['patch_embed.proj.weight'].reshape(len(s['norm.weight']), -1).T + s['patch_embed.proj.bias']
    x = np.concatenate([np.repeat(s['cls_token'], B, 0), x], axis=1) + s['pos_embed']
    D = x.shape[-1] // heads
    i = 0
    while 'blocks.%d.norm1.weight' % i in s:
        b = 'blocks.%d.' % i
        qkv = linear(layer_norm(x, b + 'norm1'), b + 'attn.qkv').reshape(B, -1, 3, heads, D).transpose(2, 0, 3, 1, 4)
        logits = qkv[0] @ qkv[1].transpose(0, 1, 3, 2) * D ** -0.5
        att = np.exp(logits - logits.max(-1, keepdims=True))
        att /= att.sum(-1, keepdims=True)
        x = x + linear((att @ qkv[2]).transpose(0, 2, 1, 3).reshape(B, -1, heads * D), b + 'attn.proj')
        hidden = linear(layer_norm(x, b + 'norm2'), b + 'mlp.fc1')
        x = x + linear(0.5 * hidden * (1 + erf(hidden / np.sqrt(2))), b + 'mlp.fc2')
        i += 1
    return layer_norm(x, 'norm')[:, 0]


def test_converted_timm_weights_load_by_name(tmp_path):
    """The mapping round trip: every timm array lands, unchanged, in the parameter of that name."""
    state = timm_state_dict(np.random.RandomState(0))
    net = vit_small_patch16(pretrained=True, pretrained_path=save_converted(state, tmp_path / 'vit.params'))
    loaded = {name: p.data().asnumpy() for name, p in net._collect_params_with_prefix().items()}
    assert len(loaded) == len(state) - 2                                  # all but head.weight, head.bias
    for name, value in state.items():
        if name.startswith('head.'):
            continue
        ours = name.replace('.weight', '.gamma').replace('.bias', '.beta') if 'norm' in name else name
        np.testing.assert_array_equal(loaded[ours], value)


def test_small_vit_matches_timm_forward(tmp_path):
    """Our blocks compute timm's forward from converted weights (a small ViT: 32 px, patch 8, 2 blocks)."""
    rng = np.random.RandomState(1)
    state = timm_state_dict(rng, dim=24, depth=2, mlp=96, patch=8, tokens=17, classes=10)
    net = VisionTransformer(image_size=32, patch=8, dim=24, depth=2, heads=3)
    net.load_parameters(save_converted(state, tmp_path / 'small.params'))
    images = rng.rand(2, 3, 32, 32).astype(np.float32)
    expected = timm_forward(state, images, heads=3, patch=8)
    for hybrid in (False, True):
        if hybrid:
            net.hybridize()
        out = net(mx.nd.array(images)).asnumpy()
        assert out.shape == (2, 24, 1, 1)
        np.testing.assert_allclose(out[:, :, 0, 0], expected, rtol=1e-4, atol=1e-4)


def bilinear(grid, size):
    """Resize (g, g, dim) to (size, size, dim) as torch's bilinear with align_corners=False."""
    g = grid.shape[0]
    src = np.clip((np.arange(size) + 0.5) * g / size - 0.5, 0, None)
    i0 = np.minimum(np.floor(src).astype(int), g - 1)
    i1 = np.minimum(i0 + 1, g - 1)
    t = (src - i0)[:, None]
    rows = grid[i0] * (1 - t)[:, :, None] + grid[i1] * t[:, :, None]
    return rows[:, i0] * (1 - t)[None] + rows[:, i1] * t[None]


def test_position_embeddings_are_interpolated_bilinearly(tmp_path):
    """At 48 px (a 6x6 patch grid) the 4x4 grid of position embeddings is resized bilinearly."""
    rng = np.random.RandomState(2)
    state = timm_state_dict(rng, dim=24, depth=2, mlp=96, patch=8, tokens=17, classes=10)
    net = VisionTransformer(image_size=32, patch=8, dim=24, depth=2, heads=3)
    net.load_parameters(save_converted(state, tmp_path / 'small.params'))
    images = rng.rand(2, 3, 48, 48).astype(np.float32)
    pos = state['pos_embed']
    resized = bilinear(pos[0, 1:].reshape(4, 4, 24), 6).reshape(1, 36, 24)
    expected = timm_forward(dict(state, pos_embed=np.concatenate([pos[:, :1], resized], axis=1)), images, 3, 8)
    np.testing.assert_allclose(net(mx.nd.array(images)).asnumpy()[:, :, 0, 0], expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('size', [64, 224])
def test_vit_small_shapes(size):
    net = get_model('vit_small_patch16', 16, pretrained=False)
    out = net(mx.nd.random.uniform(shape=(2, 3, size, size))).asnumpy()
    assert out.shape == (2, 16)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1, rtol=1e-5)


def test_vit_small_size():
    """ViT-S/16 = DeiT-S without its head: 21.67M parameters."""
    net = vit_small_patch16(pretrained=False)
    assert sum(p.data().size for p in net.collect_params().values()) == 21665664


def test_converter_refuses_unknown_names():
    state = timm_state_dict(np.random.RandomState(0), depth=1)
    state['dist_token'] = np.zeros((1, 1, 384), np.float32)
    with pytest.raises(ValueError, match='dist_token'):
        convert(state)


def test_vit_without_weight_file_says_how_to_get_one():
    with pytest.raises(UserError, match='tools.convert_timm_vit.*--pretrained_path.*--pretrained false'):
        vit_small_patch16(pretrained=True)


def test_resnet50_trunk_at_64_px():
    trunk = resnet50_trunk(pretrained=False)
    assert trunk(mx.nd.random.uniform(shape=(2, 3, 64, 64))).shape == (2, 2048, 2, 2)


def test_resnet50_offline_names_the_store_file(tmp_path, monkeypatch):
    monkeypatch.setenv('MXNET_HOME', str(tmp_path))

    def offline(name, *args, **kwargs):
        raise OSError('Temporary failure in name resolution')
    monkeypatch.setattr('gluoncv.model_zoo.model_store.get_model_file', offline)
    with pytest.raises(UserError, match='resnet50_v1b-0ecdba34.params'):
        get_model('resnet50', 8, pretrained=True)


def small_trunk():
    trunk = mx.gluon.nn.HybridSequential()
    trunk.add(mx.gluon.nn.Conv2D(4, 3), mx.gluon.nn.BatchNorm())
    trunk.initialize()
    return trunk


@pytest.mark.slow
def test_avg_max_pooling_adds_both_poolings():
    trunk = small_trunk()
    net = EmbeddingNet(trunk, 5, pooling='avg+max')
    x = mx.nd.random.uniform(shape=(3, 3, 9, 9))
    out = net(x).asnumpy()
    features = trunk(x).asnumpy()
    pooled = features.mean(axis=(2, 3)) + features.max(axis=(2, 3))
    W, b = net.embedding_layer.weight.data().asnumpy(), net.embedding_layer.bias.data().asnumpy()
    expected = pooled @ W.T + b
    np.testing.assert_allclose(out, expected / np.linalg.norm(expected, axis=1, keepdims=True),
                               rtol=1e-5, atol=1e-6)
    with pytest.raises(UserError, match='--pooling'), flag_errors():
        EmbeddingNet(trunk, 5, pooling='max')


def test_bn_freeze_uses_and_keeps_running_statistics(monkeypatch):
    trunk = small_trunk()
    monkeypatch.setitem(BACKBONES, 'small', lambda pretrained, path, ctx: trunk)
    net = get_model('small', 5, pretrained=False, bn_freeze=True)
    bn = trunk[1]
    x = mx.nd.random.uniform(shape=(4, 3, 9, 9))
    inference = net(x).asnumpy()
    with autograd.record():                                        # training mode
        out = net(x)
    out.backward()
    np.testing.assert_allclose(out.asnumpy(), inference, rtol=1e-6)
    np.testing.assert_array_equal(bn.running_mean.data().asnumpy(), 0)
    assert np.abs(bn.gamma.grad().asnumpy()).sum() > 0              # gamma and beta still learn
