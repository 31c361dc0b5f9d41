"""Proxy-Anchor loss: value and gradients against a loop-by-loop NumPy reference of docs/see.md."""
import numpy as np
import pytest
import mxnet as mx
from mxnet import autograd

from loss import LOSSES
from loss.proxy_anchor import ProxyAnchorLoss


def reference_loss(x, y, P, alpha=32.0, delta=0.1):
    """docs/see.md written proxy by proxy, float64."""
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    P = P / np.linalg.norm(P, axis=1, keepdims=True)
    C = len(P)
    pos, neg, n_with_positive = 0.0, 0.0, 0
    for p in range(C):
        c = x @ P[p]
        if np.any(y == p):
            n_with_positive += 1
            pos += np.log1p(np.sum(np.exp(-alpha * (c[y == p] - delta))))
        neg += np.log1p(np.sum(np.exp(alpha * (c[y != p] + delta))))
    return pos / n_with_positive + neg / C


def numeric_grad(f, a, h=1e-6):
    g = np.zeros_like(a)
    for i in np.ndindex(a.shape):
        step = np.zeros_like(a)
        step[i] = h
        g[i] = (f(a + step) - f(a - step)) / (2 * h)
    return g


def problem(B=8, d=5, C=6, seed=0):
    """Embeddings (B, d), int32 labels covering only some classes, and a loss with set proxies."""
    rng = np.random.RandomState(seed)
    x = rng.randn(B, d)
    y = rng.choice(C - 2, B).astype(np.int32)       # classes C-2 and C-1 have no positive
    loss = ProxyAnchorLoss(C, d)
    loss.initialize()
    loss.cast('float64')
    P = rng.randn(C, d)
    loss.proxies.set_data(mx.nd.array(P, dtype='float64'))
    return x, y, P, loss


@pytest.mark.parametrize('hybrid', [False, True])
@pytest.mark.parametrize('alpha', [32.0, 4.0, 100.0])     # 100: the shifted form
def test_value_and_gradients_match_reference(hybrid, alpha):
    x, y, P, loss = problem(seed=int(alpha))
    loss.alpha = alpha
    if hybrid:
        loss.hybridize()
    e = mx.nd.array(x, dtype='float64')
    e.attach_grad()
    with autograd.record():
        out = loss(e, mx.nd.array(y, dtype='int32'))
    out.backward()
    assert out.shape == (1,)
    np.testing.assert_allclose(out.asscalar(), reference_loss(x, y, P, alpha), rtol=1e-9)  # L2Normalization eps
    np.testing.assert_allclose(e.grad.asnumpy(), numeric_grad(lambda a: reference_loss(a, y, P, alpha), x),
                               rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(loss.proxies.grad().asnumpy(),
                               numeric_grad(lambda a: reference_loss(x, y, a, alpha), P), rtol=1e-5, atol=1e-7)


def test_large_alpha_stays_finite():
    """exp(alpha (c + delta)) overflows float32 at alpha = 200; the shifted form does not."""
    x, y, P, loss = problem(seed=3)
    loss.cast('float32')
    loss.alpha = 200.0
    e = mx.nd.array(x)
    e.attach_grad()
    with autograd.record():
        out = loss(e, mx.nd.array(y))
    out.backward()
    assert np.isfinite(out.asscalar()) and np.all(np.isfinite(e.grad.asnumpy()))
    np.testing.assert_allclose(out.asscalar(), reference_loss(x, y, P, 200.0), rtol=1e-5)


def test_proxy_init_is_kaiming_normal_fan_out():
    loss = ProxyAnchorLoss(400, 300)
    loss.initialize()
    P = loss.proxies.data().asnumpy()
    assert loss.proxies.name.endswith('proxies') and P.shape == (400, 300)
    np.testing.assert_allclose(P.std(), np.sqrt(2 / 400), rtol=0.02)


def test_labels_out_of_range_are_refused():
    x, y, P, loss = problem()
    with pytest.raises(ValueError, match='0..5'):
        loss(mx.nd.array(x, dtype='float64'), mx.nd.array(y + 6))


def test_registered():
    assert LOSSES['proxy_anchor'] is ProxyAnchorLoss
