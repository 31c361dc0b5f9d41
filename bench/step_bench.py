"""One full training step, ours against the release's formulation, side by side.

    python3 bench/step_bench.py [--reps 3] [--small_reps 10]

A step: GoogLeNet embedding net forward, EE (n_inner_pts=2) + HPHN triplet loss, backward, Adam
update (lr 1e-4, wd 5e-4), at batch 128 x 227 px (num_instances 32, the official setting) and at
batch 32 x 64 px (num_instances 8). Ours: data.model.get_model, loss.HPHNTripletLoss and main.py's
train_step. The release's formulation: the same network (gluoncv's GoogLeNet trunk, global average
pooling, Dense, L2 normalisation; hybridised without static_alloc, Gluon's default) and the loss as
bench/loss_bench.py's OfficialHPHN (the (n+1)B expanded points built explicitly by the EE layer, one
(n+1)B x (n+1)B distance matrix, reduce-min/max), then backward and trainer.step(1). Random
weights and random images (the work does not depend on them). One warm-up step each, then --reps
steps of each, interleaved; medians, brackets the range of the per-round ratio. Each step is also
cut at mx.nd.waitall() barriers into forward (net and loss), backward and update; the loss's own
forward+backward is timed apart on the batch's embeddings, as in loss_bench.
"""
import argparse
import os
import platform
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import utils.mxnet_compat  # noqa: F401,E402  (before mxnet: old numpy names on Python 3.12+, CUDA wheels)
import mxnet as mx  # noqa: E402
import numpy as np  # noqa: E402
from mxnet import autograd  # noqa: E402

sys.path.insert(0, os.path.join(ROOT, 'bench'))
from loss import HPHNTripletLoss  # noqa: E402
from loss_bench import OfficialHPHN, timer  # noqa: E402
from model import get_model  # noqa: E402
from runner.trainer import train_step  # noqa: E402

MARGIN = 1e-5       # the official default


def build(formulation, num_instances):
    """(net, loss block, trainer) of ours or of the release's formulation."""
    net = get_model('googlenet', 512, pretrained=False)
    if formulation == 'ours':
        loss = HPHNTripletLoss(margin=MARGIN, num_instances=num_instances, n_inner_pts=2)
        loss.hybridize(static_alloc=True, static_shape=True)
    else:
        net.hybridize()         # the Gluon default, in place of get_model's static_alloc
        loss = OfficialHPHN(2, margin=MARGIN)
        loss.hybridize()
    trainer = mx.gluon.Trainer(net.collect_params(), 'adam', {'learning_rate': 1e-4, 'wd': 5e-4})
    return net, loss, trainer


def release_step(net, loss_fn, trainer, images, labels):
    with autograd.record():
        loss = loss_fn(net(images), labels)
    loss.backward()
    trainer.step(1)
    return loss.mean().asscalar()


def phases(net, loss_fn, trainer, images, labels):
    """(forward, backward, update) seconds of one step, cut at barriers."""
    t0 = time.perf_counter()
    with autograd.record():
        loss = loss_fn(net(images), labels)
    mx.nd.waitall()
    t1 = time.perf_counter()
    loss.backward()
    mx.nd.waitall()
    t2 = time.perf_counter()
    trainer.step(1)
    mx.nd.waitall()
    return t1 - t0, t2 - t1, time.perf_counter() - t2


def bench(batch, size, num_instances, reps):
    images = mx.nd.random.uniform(shape=(batch, 3, size, size))
    labels = mx.nd.array(np.repeat(np.arange(batch // num_instances), num_instances))
    setups = {name: build(name, num_instances) for name in ('ours', 'release')}
    steps = {'ours': lambda s: train_step(*s, images, labels, [mx.cpu()]),
             'release': lambda s: release_step(*s, images, labels)}
    whole = {name: [] for name in setups}
    cut = {name: [] for name in setups}
    for i in range(reps + 1):
        for name, setup in setups.items():
            start = time.perf_counter()
            steps[name](setup)
            mx.nd.waitall()
            if i:                               # the first step of each is the warm-up
                whole[name].append(time.perf_counter() - start)
                cut[name].append(phases(*setup, images, labels))
    # The loss alone, forward+backward on embeddings of the batch's shape (median of 20 after 5).
    emb = get_model('googlenet', 512, pretrained=False)(images[:2]).asnumpy()      # a valid unit-norm row
    emb = mx.nd.array(np.repeat(emb, batch // 2, axis=0) + np.random.RandomState(0).randn(batch, 512) * 1e-2)
    emb = emb / mx.nd.norm(emb, axis=1, keepdims=True)
    loss_time = {}
    for name, (_, loss_fn, _) in setups.items():
        run = timer(loss_fn, emb, labels)
        loss_time[name] = np.median([run() for _ in range(25)][5:])
    return whole, cut, loss_time


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--reps', type=int, default=3, help='timed steps of each at batch 128, 227 px')
    p.add_argument('--small_reps', type=int, default=10, help='timed steps of each at batch 32, 64 px')
    args = p.parse_args()
    cpu = next((l.split(':', 1)[1].strip() for l in open('/proc/cpuinfo') if l.startswith('model name')), '?')
    print('machine: %s, %d cores (load average %.1f), Python %s, mxnet %s' % (
        cpu, os.cpu_count(), os.getloadavg()[0], platform.python_version(), mx.__version__))
    print('| batch x px | formulation | step (s) | release / ours | forward | backward | update | '
          'loss fwd+bwd (ms, share) | update share |')
    print('|---|---|---|---|---|---|---|---|---|')
    for batch, size, num_instances, reps in ((32, 64, 8, args.small_reps), (128, 227, 32, args.reps)):
        whole, cut, loss_time = bench(batch, size, num_instances, reps)
        ratio = np.array(whole['release']) / np.array(whole['ours'])
        for name in whole:
            step = np.median(whole[name])
            fwd, bwd, upd = np.median(np.array(cut[name]), axis=0)
            print('| %d x %d | %s | %.3f | %s | %.3f | %.3f | %.3f | %.2f (%.2f%%) | %.1f%% |' % (
                batch, size, name, step,
                '%.3fx (%.3f-%.3f)' % (np.median(ratio), ratio.min(), ratio.max()) if name == 'release' else '1',
                fwd, bwd, upd, loss_time[name] * 1e3, 100 * loss_time[name] / step, 100 * upd / step))
        sys.stdout.flush()


if __name__ == '__main__':
    main()
