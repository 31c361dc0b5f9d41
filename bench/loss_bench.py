"""EE + HPHN triplet forward+backward time, ours (both gradient modes) against the official formulation.

    python3 bench/loss_bench.py [--reps 30] [--repeat 5] [--step]

B=128, d=512, num_instances=32, hybridised; median of --reps runs after 5 warm-up runs, ours with
negative_grad='release' (the default) and 'exact' and the official formulation interleaved so that
machine noise hits all alike (the two modes compute the same values; 'release' doubles d_an's
gradient when the hardest negative is synthetic); --repeat does the whole
measurement again and reports the median of the medians with the range of the ratios. The official formulation is
rewritten here from its description (docs/mining.md): build the (n+1)B points, one (n+1)B x (n+1)B
distance matrix, reduce-min per row and then over the n+1 groups. --step also times one full
training step (GoogLeNet, batch 128, 227 px) to give the loss's share of it.
"""
import argparse
import os
import platform
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import utils.mxnet_compat  # noqa: F401,E402  (before mxnet: old numpy names on Python 3.12+, CUDA wheels)
import mxnet as mx  # noqa: E402
from mxnet import autograd  # noqa: E402
from mxnet.gluon import HybridBlock  # noqa: E402

from loss import EmbeddingExpansion, HPHNTripletLoss  # noqa: E402


class OfficialHPHN(HybridBlock):
    """The release's computation: explicit synthetic points and the full expanded distance matrix."""

    def __init__(self, n_inner_pts, margin=0.2):
        super().__init__()
        self.n, self.margin = n_inner_pts, margin
        self.expand = EmbeddingExpansion(n_inner_pts)

    def hybrid_forward(self, F, e, y):
        n = self.n
        x, labels = self.expand(e, y)
        sq = F.sum(x * x, axis=1)
        d = F.sqrt(F.clip(F.broadcast_add(sq.expand_dims(1), sq.expand_dims(0)) - 2 * F.dot(x, x, transpose_b=True),
                          1e-12, 1e12))
        pos = F.broadcast_equal(labels.expand_dims(1), labels.expand_dims(0))
        originals = F.broadcast_mul(y.expand_dims(1), y.expand_dims(0))      # any (B, B) array
        d_ap = F.max(F.slice_like(d * pos, originals), axis=1)             # the originals' block
        d_neg = d * (1 - pos) + F.broadcast_mul(F.max(d, axis=1, keepdims=True), pos)
        d_an = F.min(F.min(d_neg, axis=1).reshape((n + 1, -1)), axis=0)
        return F.relu(d_ap - d_an + self.margin)


def timer(block, e, y):
    def run():
        x = e.copy()
        x.attach_grad()
        start = time.perf_counter()
        with autograd.record():
            out = block(x, y)
        out.backward()
        x.grad.wait_to_read()
        return time.perf_counter() - start
    return run


MODES = ('release', 'exact')


def bench_losses(reps, B=128, d=512, num_instances=32):
    """Per n_inner_pts: (n, median ms of ours for each of MODES, median ms of the official)."""
    rng = np.random.RandomState(0)
    e = rng.randn(B, d).astype(np.float32)
    e = mx.nd.array(e / np.linalg.norm(e, axis=1, keepdims=True))
    y = mx.nd.array(np.repeat(np.arange(B // num_instances), num_instances))
    rows = []
    for n in (0, 2, 4, 8):
        blocks = {mode: HPHNTripletLoss(margin=0.2, num_instances=num_instances, n_inner_pts=n,
                                        negative_grad=mode) for mode in MODES}
        blocks['official'] = OfficialHPHN(n)
        for block in blocks.values():
            block.hybridize(static_alloc=True, static_shape=True)
        reference = blocks['official'](e, y).asnumpy()
        for mode in MODES:          # the modes differ in the gradient only
            np.testing.assert_allclose(blocks[mode](e, y).asnumpy(), reference, atol=1e-5)
        runs = {k: timer(block, e, y) for k, block in blocks.items()}
        times = {k: [] for k in runs}
        for i in range(reps + 5):
            for k, run in runs.items():
                t = run()
                if i >= 5:
                    times[k].append(t)
        rows.append([n] + [np.median(times[k]) * 1e3 for k in MODES + ('official',)])
    return rows


def bench_step(reps=2):
    from model import get_model
    net = get_model('googlenet', 512, pretrained=False)
    loss = HPHNTripletLoss(margin=0.2, num_instances=32, n_inner_pts=2)
    loss.hybridize(static_alloc=True, static_shape=True)
    x = mx.nd.random.uniform(shape=(128, 3, 227, 227))
    y = mx.nd.array(np.repeat(np.arange(4), 32))
    times = []
    for i in range(reps + 1):
        start = time.perf_counter()
        with autograd.record():
            out = loss(net(x), y)
        out.backward()
        mx.nd.waitall()
        if i:
            times.append(time.perf_counter() - start)
    return np.median(times)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--reps', type=int, default=30)
    p.add_argument('--repeat', type=int, default=1, help='repeat the whole measurement this many times')
    p.add_argument('--step', action='store_true', help='also time a GoogLeNet training step')
    args = p.parse_args()
    cpu = next((l.split(':', 1)[1].strip() for l in open('/proc/cpuinfo') if l.startswith('model name')), '?')
    print('machine: %s, %d cores, %s, mxnet %s' % (cpu, os.cpu_count(), platform.python_version(), mx.__version__))
    runs = np.array([bench_losses(args.reps) for _ in range(args.repeat)])   # (repeat, n values, 4)
    release, exact, official = runs[:, :, 1], runs[:, :, 2], runs[:, :, 3]

    def ratio(a):
        return '%.2fx (%.2f-%.2f)' % (np.median(a), a.min(), a.max())
    print('load average %.1f' % os.getloadavg()[0])
    print('| n_inner_pts | release (ms) | release / release at n=0 | exact (ms) | exact / release '
          '| official formulation (ms) | official / release |')
    print('|---|---|---|---|---|---|---|')
    for i, n in enumerate(runs[0, :, 0].astype(int)):
        print('| %d | %.2f | %s | %.2f | %s | %.2f | %s |' % (
            n, np.median(release[:, i]), ratio(release[:, i] / release[:, 0]), np.median(exact[:, i]),
            ratio(exact[:, i] / release[:, i]), np.median(official[:, i]), ratio(official[:, i] / release[:, i])))
    if args.step:
        step = bench_step()
        ours_n2 = np.median(release[:, 1]) / 1e3
        print('GoogLeNet step, batch 128 at 227 px, forward+backward with EE n=2: %.2f s; the loss is %.3f%% of it'
              % (step, 100 * ours_n2 / step))


if __name__ == '__main__':
    main()
