"""The 'adamw' optimiser against a NumPy reference of AdamW (torch.optim.AdamW's update)."""
import numpy as np
import pytest
import mxnet as mx
from mxnet import autograd

from runner.adamw import AdamW


def reference(w, grads, lrs, wd, beta1, beta2, eps, rescale, clip=None):
    """Decoupled weight decay (Loshchilov & Hutter) with bias-corrected moments, float64."""
    m, v = np.zeros_like(w), np.zeros_like(w)
    for t, (g, lr) in enumerate(zip(grads, lrs), start=1):
        g = g * rescale
        if clip:
            g = np.clip(g, -clip, clip)
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        m_hat, v_hat = m / (1 - beta1 ** t), v / (1 - beta2 ** t)
        w = w - lr * wd * w - lr * m_hat / (np.sqrt(v_hat) + eps)
    return w


@pytest.mark.parametrize('clip', [None, 0.02])
def test_matches_reference_with_multipliers_and_schedule(clip):
    rng = np.random.RandomState(0)
    steps, base_lr, wd, batch = 6, 0.01, 0.05, 4
    schedule = mx.lr_scheduler.MultiFactorScheduler(step=[3], factor=0.1, base_lr=base_lr)
    lrs = [base_lr if t <= 3 else 0.1 * base_lr for t in range(1, steps + 1)]   # t: 1-based update count
    params = mx.gluon.ParameterDict()
    weight = params.get('weight', shape=(3, 4))
    bias = params.get('bias', shape=(4,), lr_mult=10, wd_mult=0)
    params.initialize(mx.init.Uniform(1))
    start = {p.name: p.data().asnumpy().astype(np.float64) for p in (weight, bias)}
    # gradients near eps in size, so that where eps enters (after the bias correction) matters
    grads = {p.name: [0.02 * rng.randn(*p.shape) for _ in range(steps)] for p in (weight, bias)}
    opts = dict(learning_rate=base_lr, wd=wd, epsilon=1e-3, lr_scheduler=schedule)
    if clip:
        opts['clip_gradient'] = clip
    trainer = mx.gluon.Trainer(params, 'adamw', opts)
    assert isinstance(trainer._optimizer, AdamW)
    for t in range(steps):
        with autograd.record():
            # the gradient of sum(W * G) is G
            loss = sum((p.data() * mx.nd.array(grads[p.name][t])).sum() for p in (weight, bias))
        loss.backward()
        trainer.step(batch)                       # rescale_grad = 1 / batch
    for p, lr_mult, wd_mult in ((weight, 1, 1), (bias, 10, 0)):
        expected = reference(start[p.name], grads[p.name], [lr * lr_mult for lr in lrs], wd * wd_mult,
                             0.9, 0.999, 1e-3, 1 / batch, clip)
        np.testing.assert_allclose(p.data().asnumpy(), expected, rtol=1e-5, atol=1e-6)


def test_weight_decay_is_decoupled():
    """With a zero gradient Adam's step is 0, and the weight only shrinks by lr * wd."""
    opt = mx.optimizer.create('adamw', learning_rate=0.1, wd=0.5)
    w = mx.nd.ones((5,))
    state = opt.create_state(0, w)
    opt.update(0, w, mx.nd.zeros((5,)), state)
    np.testing.assert_allclose(w.asnumpy(), 1 - 0.1 * 0.5, rtol=1e-6)
