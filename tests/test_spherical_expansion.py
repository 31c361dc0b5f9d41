"""SphericalExpansion invariants and the SEE Proxy-Anchor loss: schedule, gradients, a short training run."""
import numpy as np
import pytest
import mxnet as mx
from mxnet import autograd

from loss import LOSSES
from loss.proxy_anchor import ProxyAnchorLoss, proxy_anchor
from loss.see_proxy_anchor import SEEProxyAnchorLoss, selected_fraction
from loss.spherical_expansion import SphericalExpansion, gaussian


def unit_rows(rng, B, d):
    a = rng.randn(B, d)
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def expand(z, w, n, dtype='float64', hybrid=False):
    block = SphericalExpansion(n)
    if hybrid:
        block.hybridize()
    return block(mx.nd.array(z, dtype=dtype), mx.nd.array(w, dtype=dtype)).asnumpy().astype(np.float64)


@pytest.mark.parametrize('n', [1, 2, 8])
@pytest.mark.parametrize('dtype,hybrid', [('float64', False), ('float32', True)])
def test_points_form_a_simplex_around_the_proxy(n, dtype, hybrid):
    rng = np.random.RandomState(n)
    B, d = 20, 24
    z, w = unit_rows(rng, B, d), unit_rows(rng, B, d)
    x = expand(z, w, n, dtype, hybrid)
    assert x.shape == (B, n, d)
    cos = np.sum(z * w, axis=1)
    M = cos[:, None] * w
    r_norm = np.linalg.norm(z - M, axis=1)
    np.testing.assert_allclose(np.linalg.norm(x, axis=2), 1, atol=1e-5)                  # on the sphere
    np.testing.assert_allclose(np.einsum('bnd,bd->bn', x, w), np.repeat(cos[:, None], n, 1), atol=1e-5)
    residual = x - M[:, None]
    np.testing.assert_allclose(np.einsum('bnd,bd->bn', residual, w), 0, atol=1e-5)     # orthogonal to w
    # z's residual direction and the n new ones: unit vectors, pairwise inner products -1/n
    directions = np.concatenate([(z - M)[:, None], residual], axis=1) / r_norm[:, None, None]
    gram = np.einsum('bid,bjd->bij', directions, directions)
    expected = (1 + 1 / n) * np.eye(n + 1) - 1 / n
    np.testing.assert_allclose(gram, np.broadcast_to(expected, gram.shape), atol=1e-5)
    # a simplex centred on the axis: z and its n points average to M
    np.testing.assert_allclose((z + x.sum(axis=1)) / (n + 1), M, atol=1e-5)


@pytest.mark.parametrize('dtype', [np.float32, np.float64])
def test_gaussian_draws_are_standard_normal_and_follow_np_random_seed(dtype):
    from scipy.stats import kstest
    np.random.seed(3)
    g = gaussian((101, 3, 33), dtype)                         # an odd count: the last pair is cut
    assert g.shape == (101, 3, 33) and g.dtype == dtype
    g = g.asnumpy().ravel()
    assert kstest(g, 'norm').pvalue > 1e-3
    half = (g.size + 1) // 2                                  # Box-Muller's two halves are independent
    assert abs(np.corrcoef(g[:half - 1], g[half:])[0, 1]) < 0.03
    np.random.seed(3)
    np.testing.assert_array_equal(gaussian((101, 3, 33), dtype).asnumpy().ravel(), g)


def spec_expansion(rng, z, w, n):
    """docs/see.md as written, in NumPy: n Gaussian directions Gram-Schmidt'ed against w, u1 and
    each other, the simplex from their mean, x_j = M + |r| s_j."""
    M = np.sum(z * w, axis=1, keepdims=True) * w
    r = z - M
    r_norm = np.linalg.norm(r, axis=1, keepdims=True)
    basis = [w, r / r_norm]
    for _ in range(n):
        g = rng.randn(*z.shape)
        for b in basis:
            g -= np.sum(g * b, axis=1, keepdims=True) * b
        basis.append(g / np.linalg.norm(g, axis=1, keepdims=True))
    v = np.stack(basis[2:], axis=1)                                                      # (B, n, d)
    s = -basis[1][:, None] / n + np.sqrt((n + 1) / n) * (v - v.mean(axis=1, keepdims=True))
    return M[:, None] + r_norm[:, None] * s


@pytest.mark.parametrize('n', [2, 4])
def test_points_have_the_distribution_of_the_spec_construction(n):
    """Ours draws n - 1 directions where docs/see.md section 5.3 draws n (module docstring): the points' coordinates
    off the {w, u1} plane, one at a time and in pairs, are distributed alike (two-sample KS)."""
    from scipy.stats import ks_2samp
    rng = np.random.RandomState(0)
    B, d = 20000, 7
    z, w = np.repeat(unit_rows(rng, 1, d), B, 0), np.repeat(unit_rows(rng, 1, d), B, 0)
    np.random.seed(0)
    ours, spec = expand(z, w, n), spec_expansion(rng, z, w, n)
    # two fixed orthonormal directions orthogonal to w and z, and the points' coordinates along them
    e = np.linalg.qr(np.concatenate([w[:1], z[:1], rng.randn(2, d)]).T)[0][:, 2:]         # (d, 2)
    a, b = ours @ e, spec @ e                                                              # (B, n, 2)
    for j in range(n):
        assert ks_2samp(a[:, j, 0], b[:, j, 0]).pvalue > 1e-3
    for stat in (lambda c: c[:, 0, 0] * c[:, -1, 1], lambda c: c[:, 0, 0] * c[:, -1, 0],
                 lambda c: c[:, 0, 1] * c[:, 1, 1]):
        assert ks_2samp(stat(a), stat(b)).pvalue > 1e-3


@pytest.mark.parametrize('offset', [0.0, 1e-9, 1e-4])
@pytest.mark.parametrize('sign', [1, -1])
def test_z_parallel_to_w_stays_finite(offset, sign):
    rng = np.random.RandomState(0)
    w = unit_rows(rng, 6, 16)
    z = sign * w + offset * rng.randn(6, 16)
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    for dtype in ('float32', 'float64'):
        x = expand(z, w, 4, dtype)
        assert np.all(np.isfinite(x))
        np.testing.assert_allclose(np.linalg.norm(x, axis=2), 1, atol=1e-5)
        # every point is within 2 |r| of z (both within |r| of M), z itself when z = +-w
        r_norm = np.linalg.norm(z - np.sum(z * w, axis=1, keepdims=True) * w, axis=1).max()
        np.testing.assert_allclose(x, np.repeat(z[:, None], 4, 1), atol=2 * r_norm + 1e-5)


def test_inputs_get_no_gradient_and_draws_differ():
    rng = np.random.RandomState(1)
    z, w = mx.nd.array(unit_rows(rng, 4, 8)), mx.nd.array(unit_rows(rng, 4, 8))
    z.attach_grad()
    w.attach_grad()
    block = SphericalExpansion(3)
    with autograd.record():
        x = block(z, w)
    x.backward()
    assert not z.grad.asnumpy().any() and not w.grad.asnumpy().any()
    assert not np.allclose(x.asnumpy(), block(z, w).asnumpy())          # fresh random directions per call


def test_embeddings_too_narrow_for_n_directions():
    z = mx.nd.ones((2, 9)) / 3
    with pytest.raises(ValueError, match='at least 10 dimensions'):
        SphericalExpansion(8)(z, z)
    with pytest.raises(ValueError, match='n_expansion <= embed_dim - 2'):
        SEEProxyAnchorLoss(5, 9, n_expansion=8)


def test_selection_schedule():
    E = 100
    assert selected_fraction(0, E, 0.4, 0.0) == pytest.approx(0.0)
    assert selected_fraction(E // 2, E, 0.4, 0.0) == pytest.approx(0.2)
    assert selected_fraction(E, E, 0.4, 0.1) == pytest.approx(0.4)
    # beyond 200 epochs the schedule saturates at epoch 200
    assert selected_fraction(100, 300, 0.4, 0.0) == pytest.approx(0.2)
    assert selected_fraction(250, 300, 0.4, 0.0) == pytest.approx(0.4)


def see_problem(seed=0, B=12, d=8, C=5, n=3, hybrid=False):
    rng = np.random.RandomState(seed)
    x, y = rng.randn(B, d), rng.randint(0, C, B).astype(np.int32)
    see = SEEProxyAnchorLoss(C, d, n_expansion=n, epochs=10)
    see.initialize()
    see.cast('float64')
    if hybrid:
        see.hybridize(static_alloc=True, static_shape=True)
    return mx.nd.array(x, dtype='float64'), mx.nd.array(y, dtype='int32'), see


def gradients(block, e, y):
    e = e.copy()
    e.attach_grad()
    block.proxies.zero_grad()
    with autograd.record():
        out = block(e, y)
    out.backward()
    return out.asscalar(), e.grad.asnumpy(), block.proxies.grad().asnumpy()


@pytest.mark.parametrize('hybrid', [False, True])
def test_synthetic_term_trains_the_proxies_only(hybrid):
    e, y, see = see_problem(hybrid=hybrid)
    plain = ProxyAnchorLoss(5, 8)
    plain.initialize()
    plain.cast('float64')
    plain.proxies.set_data(see.proxies.data())
    pa_value, pa_e, pa_p = gradients(plain, e, y)
    for epoch, k in ((0, 0), (5, 2), (10, 5)):               # t = 0, 0.2, 0.4 of B = 12 rows
        see.set_epoch(epoch)
        value, grad_e, grad_p = gradients(see, e, y)
        assert see.top_k == k
        np.testing.assert_allclose(grad_e, pa_e, rtol=1e-10, atol=1e-14)
        if k == 0:
            assert value == pytest.approx(pa_value, rel=1e-12)
            np.testing.assert_allclose(grad_p, pa_p, rtol=1e-10, atol=1e-14)
        else:
            assert value > pa_value and not np.allclose(grad_p, pa_p)


@pytest.mark.parametrize('n', [1, 3, 6])                          # 6: d = n + 2, the narrowest
@pytest.mark.parametrize('hybrid', [False, True])
def test_value_is_pa_plus_lambda_pa_of_the_top_rows_points(hybrid, n):
    e, y, see = see_problem(seed=2, n=n, hybrid=hybrid)
    see.set_epoch(10)                                         # t = 0.4: k = 5 of 12
    np.random.seed(7)
    value = see(e, y).asscalar()
    np.random.seed(7)                                         # the same random directions again
    P, labels = see.proxies.data(), y.astype('float64')
    z = mx.nd.L2Normalization(e)
    w = mx.nd.L2Normalization(P).take(labels)
    cos = np.sum(z.asnumpy() * w.asnumpy(), axis=1)
    top = mx.nd.array(np.argsort(-cos)[:5], dtype='float64')
    points = SphericalExpansion(n)(z.take(top), w.take(top)).reshape((-3, 0))
    expected = (proxy_anchor(mx.nd, e, labels, P, 32, 0.1, 5)
                + 0.2 * proxy_anchor(mx.nd, points, mx.nd.repeat(labels.take(top), n), P, 32, 0.1, 5))
    # the loss takes the unit points' cosines as they are; proxy_anchor() renormalises the points, and
    # L2Normalization's eps scales them by 1 - 5e-11
    assert value == pytest.approx(expected.asscalar(), rel=1e-9)


def test_short_training_run_lowers_the_loss():
    """A small conv net + SEE on the 8x8 digits, AdamW with the proxies at lr x 100, as main.py will
    train: the plain PA loss of 100 fixed images falls (the SEE total grows with t by design)."""
    from sklearn.datasets import load_digits
    import runner.adamw  # noqa: F401  registers 'adamw'
    from model.embedding_net import EmbeddingNet
    mx.random.seed(0)
    digits = load_digits()
    images = mx.nd.array(np.repeat(digits.images[:, None] / 16, 3, axis=1))          # (N, 3, 8, 8)
    labels = digits.target.astype(np.int32)                                           # classes 0..4 used
    trunk = mx.gluon.nn.HybridSequential()
    trunk.add(mx.gluon.nn.Conv2D(16, 3, padding=1, activation='relu'), mx.gluon.nn.Conv2D(32, 3, strides=2))
    trunk.initialize(mx.init.Xavier())
    net = EmbeddingNet(trunk, 16)
    loss_fn = SEEProxyAnchorLoss(5, 16, epochs=6)
    loss_fn.initialize()
    for block in (net, loss_fn):
        block.hybridize(static_alloc=True, static_shape=True)
    loss_fn.proxies.lr_mult = 100
    params = net.collect_params()
    params.update(loss_fn.collect_params())
    trainer = mx.gluon.Trainer(params, 'adamw', {'learning_rate': 3e-3, 'wd': 1e-4})
    held = np.concatenate([np.flatnonzero(labels == c)[:20] for c in range(5)])

    def plain_pa():
        return proxy_anchor(mx.nd, net(images[held]), mx.nd.array(labels[held]), loss_fn.proxies.data(),
                            32, 0.1, 5).asscalar()
    before = plain_pa()
    rng = np.random.RandomState(0)
    for epoch in range(6):
        loss_fn.set_epoch(epoch)
        for _ in range(5):                            # batches of 5 classes x 8 images
            rows = np.concatenate([rng.choice(np.flatnonzero(labels == c), 8, replace=False) for c in range(5)])
            with autograd.record():
                loss = loss_fn(net(images[rows]), mx.nd.array(labels[rows]))
            loss.backward()
            trainer.step(1)
    assert loss_fn.top_k == 15                        # t(5 of 6) = 0.37 of 40 rows: the synthetic term is on
    assert np.isfinite(loss.asscalar())
    assert plain_pa() < 0.85 * before


def test_registered():
    assert LOSSES['see_proxy_anchor'] is SEEProxyAnchorLoss
