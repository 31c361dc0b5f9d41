"""Triplet, lifted structure, N-pair and Multi-Similarity losses, with and without EE, against the
brute-force NumPy references of tests/reference.py."""
import numpy as np
import pytest
import mxnet as mx
from mxnet import autograd, gluon

from loss import LOSSES, LiftedStructureLoss, MultiSimilarityLoss, NPairLoss, TripletLoss
from tests import reference as ref
from tests.test_hphn_triplet import batch, nd

NAMES = ['triplet', 'lifted', 'npair', 'ms']
# per loss: its defaults, then other hyperparameters
HYPER = {
    'triplet': [{}, {'margin': 1.0}],
    'lifted': [{}, {'margin': 0.3}],
    'npair': [{}, {'l2_reg': 0.1}],
    'ms': [{}, {'alpha': 1.0, 'beta': 10.0, 'base': 0.3, 'epsilon': 0.2}],
}
DEFAULTS = {
    'triplet': {'margin': 0.2},
    'lifted': {'margin': 1.0},
    'npair': {'l2_reg': 0.002},
    'ms': {'alpha': 2.0, 'beta': 50.0, 'base': 0.5, 'epsilon': 0.1},
}
LAYOUTS = [(4, 2), (2, 4), (3, 4), (2, 6)]      # (classes, num_instances)


def reference(name, e, y, n, l2_norm=True, **hyper):
    """The loss by brute force: originals' matrices for the positive terms, mined ones for the negative."""
    hyper = dict(DEFAULTS[name], **hyper)
    if name in ('triplet', 'lifted'):
        fn = ref.triplet_loss if name == 'triplet' else ref.lifted_loss
        return fn(*ref.distance_matrices(e, n, l2_norm), y, **hyper)
    S, Sn = ref.similarity_matrices(e, n, l2_norm)
    if name == 'npair':
        return ref.npair_loss(e, S, Sn, y, **hyper)
    return ref.ms_loss(S, Sn, y, **hyper)


def run_loss(name, e, y, dtype=np.float64, hybrid=False, **kwargs):
    """(loss, d loss / d e) of one forward and backward pass."""
    loss = LOSSES[name](**kwargs)
    if hybrid:
        loss.hybridize(static_alloc=True, static_shape=True)
    x = mx.nd.array(e, dtype=dtype)
    x.attach_grad()
    with autograd.record():
        out = loss(x, mx.nd.array(y, dtype=np.int32 if dtype == np.float32 else dtype))
    out.backward()
    assert out.shape == (1,)
    return out.asscalar(), x.grad.asnumpy()


def test_registry():
    assert [LOSSES[k] for k in NAMES] == [TripletLoss, LiftedStructureLoss, NPairLoss, MultiSimilarityLoss]


@pytest.mark.parametrize('name', NAMES)
@pytest.mark.parametrize('n', [0, 1, 2, 4])
def test_loss_matches_reference(name, n):
    """Every layout, both hyperparameter sets, normalised and raw embeddings: float64, tight."""
    for t, (classes, per_class) in enumerate(LAYOUTS):
        hyper = HYPER[name][t % 2]
        l2_norm = t != 1                        # one layout with raw embeddings and raw EE points
        e, y = batch(classes, per_class, 5, seed=100 * n + 10 * t + classes, unit=l2_norm)
        out, _ = run_loss(name, e, y, num_instances=per_class, n_inner_pts=n, l2_norm=l2_norm, **hyper)
        np.testing.assert_allclose(out, reference(name, e, y, n, l2_norm, **hyper), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize('name', ['triplet', 'lifted', 'ms'])
def test_odd_num_instances_without_ee(name):
    e, y = batch(3, 3, 4, seed=5)
    out, _ = run_loss(name, e, y, num_instances=3)
    np.testing.assert_allclose(out, reference(name, e, y, 0), rtol=1e-10)


@pytest.mark.parametrize('name', NAMES)
@pytest.mark.parametrize('n', [0, 2])
def test_gradient_matches_finite_differences(name, n):
    classes, per_class = (2, 4) if n else (4, 2)
    e, y = batch(classes, per_class, 4, seed=3 + n)
    out, grad = run_loss(name, e, y, num_instances=per_class, n_inner_pts=n)
    assert out > 0.05 and np.abs(grad).max() > 1e-3, 'the batch should have active terms'
    expected = ref.numeric_grad(lambda v: reference(name, v, y, n), e.copy())
    np.testing.assert_allclose(grad, expected, rtol=1e-5, atol=1e-7)


def test_npair_l2_penalty_gradient_on_raw_embeddings():
    e, y = batch(3, 2, 4, seed=11, unit=False)
    _, grad = run_loss('npair', e, y, l2_reg=0.5)
    expected = ref.numeric_grad(lambda v: reference('npair', v, y, 0, l2_reg=0.5), e.copy())
    np.testing.assert_allclose(grad, expected, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize('name', NAMES)
@pytest.mark.parametrize('n', [0, 2])
def test_hybridized_equals_imperative_float32(name, n):
    rng = np.random.RandomState(n)
    e = rng.randn(32, 16).astype(np.float32)
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    y = np.repeat(np.arange(4), 8)
    imperative = run_loss(name, e, y, np.float32, num_instances=8, n_inner_pts=n)
    hybrid = run_loss(name, e, y, np.float32, hybrid=True, num_instances=8, n_inner_pts=n)
    np.testing.assert_allclose(imperative[0], hybrid[0], rtol=1e-6)
    np.testing.assert_allclose(imperative[1], hybrid[1], atol=1e-6)
    np.testing.assert_allclose(imperative[0], reference(name, e.astype(np.float64), y, n), rtol=1e-4)


@pytest.mark.parametrize('name', ['lifted', 'npair', 'ms'])
def test_large_inputs_stay_finite(name):
    """Raw embeddings of norm ~30: the exponents reach thousands (MS: beta * S), where a plain
    sum of exp overflows or underflows in float32; the masked log-sum-exp must not."""
    e, y = batch(4, 4, 8, seed=2)
    e = 30 * e
    out32, grad32 = run_loss(name, e.astype(np.float32), y, np.float32, num_instances=4, n_inner_pts=2,
                             l2_norm=False)
    out64, grad64 = run_loss(name, e, y, num_instances=4, n_inner_pts=2, l2_norm=False)
    assert np.isfinite(out32) and np.all(np.isfinite(grad32))
    np.testing.assert_allclose(out32, out64, rtol=1e-4)
    np.testing.assert_allclose(grad32, grad64, rtol=1e-3, atol=1e-3 * np.abs(grad64).max())


@pytest.mark.parametrize('name', NAMES)
def test_single_class_batch(name):
    """No negative anywhere: every term vanishes but N-pair's L2 penalty."""
    e, y = batch(1, 4, 3, seed=0)
    out, grad = run_loss(name, e, y, num_instances=4, n_inner_pts=2)
    np.testing.assert_allclose(out, 0.002 if name == 'npair' else 0.0, atol=1e-12)
    assert np.all(np.isfinite(grad))


def test_npair_refuses_unpaired_batch_without_ee():
    e, _ = batch(2, 2, 3, seed=0)
    with pytest.raises(ValueError, match='N-pair loss pairs rows 2k and 2k\\+1, but rows 0 and 1'):
        NPairLoss()(nd(e), nd([0, 1, 0, 1]))
    with pytest.raises(ValueError, match='N-pair loss pairs consecutive images'):
        NPairLoss(num_instances=3)


@pytest.mark.parametrize('name', ['triplet', 'lifted', 'ms'])
def test_ee_refuses_unpaired_batch(name):
    e, _ = batch(2, 2, 3, seed=0)
    loss = LOSSES[name](n_inner_pts=1)
    loss.hybridize()
    with pytest.raises(ValueError, match='Embedding Expansion pairs rows 2k'):
        loss(nd(e), nd([0, 1, 0, 1]))
    with pytest.raises(ValueError, match='num_instances must be even'):
        LOSSES[name](n_inner_pts=2, num_instances=3)


def clustered_data(classes=8, per_class=4, dim=16, seed=0):
    """Inputs (B, dim) float32 around one random centre per class, sampler layout; labels int32."""
    rng = np.random.RandomState(seed)
    centres = rng.randn(classes, dim)
    x = np.repeat(centres, per_class, axis=0) + 1.5 * rng.randn(classes * per_class, dim)
    return mx.nd.array(x), mx.nd.array(np.repeat(np.arange(classes), per_class), dtype=np.int32)


@pytest.mark.parametrize('name', NAMES)
@pytest.mark.parametrize('n', [0, 2])
def test_adam_steps_lower_the_loss(name, n):
    mx.random.seed(0)
    x, y = clustered_data()
    net = gluon.nn.HybridSequential()
    net.add(gluon.nn.Dense(8, in_units=16), gluon.nn.HybridLambda(lambda F, v: F.L2Normalization(v)))
    net.initialize(mx.init.Xavier())
    net.hybridize()
    loss = LOSSES[name](num_instances=4, n_inner_pts=n)
    loss.hybridize(static_alloc=True, static_shape=True)
    trainer = gluon.Trainer(net.collect_params(), 'adam', {'learning_rate': 0.02})
    initial = loss(net(x), y).asscalar()
    for _ in range(25):
        with autograd.record():
            out = loss(net(x), y)
        out.backward()
        trainer.step(1)
    final = loss(net(x), y).asscalar()
    # unit embeddings bound N-pair's and lifted's logits, hence their high floor: ask for 15% off
    assert final < 0.85 * initial, (initial, final)


@pytest.mark.parametrize('n', [0, pytest.param(2, marks=pytest.mark.slow)])
def test_lifted_hinge_inactive_side(n):
    """Some positive pairs with J_ij < 0 (clustered classes far apart, small margin), some with
    J_ij > 0: relu(J)^2 must pass no gradient from the former and the exact one from the latter."""
    rng = np.random.RandomState(4)
    centres = 3 * np.eye(4)[:3]
    y = np.repeat([0, 1, 2], 4).astype(np.float64)
    e = centres[y.astype(int)] + rng.randn(12, 4) * np.array([0.05] * 8 + [1.2] * 4)[:, None]
    D, Dn = ref.distance_matrices(e, n, l2_norm=False)
    J = [np.log(sum(np.exp(0.1 - Dn[i, k]) for k in range(12) if y[k] != y[i]) +
                sum(np.exp(0.1 - Dn[j, k]) for k in range(12) if y[k] != y[j])) + D[i, j]
         for i in range(12) for j in range(i + 1, 12) if y[i] == y[j]]
    assert min(J) < 0 < max(J), 'the batch must hold both sides of the hinge'
    out, grad = run_loss('lifted', e, y, num_instances=4, n_inner_pts=n, l2_norm=False, margin=0.1)
    np.testing.assert_allclose(out, reference('lifted', e, y, n, False, margin=0.1), rtol=1e-10)
    expected = ref.numeric_grad(lambda v: reference('lifted', v, y, n, False, margin=0.1), e.copy())
    np.testing.assert_allclose(grad, expected, rtol=1e-5, atol=1e-7)
