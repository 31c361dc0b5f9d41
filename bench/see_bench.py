"""SEE timings, side by side: the vectorised expansion against the release's per-sample loop, and the
SEE Proxy-Anchor loss against plain Proxy-Anchor.

    python3 bench/see_bench.py [--reps 30]

B=180, d=512, n_expansion=8, C=100 proxies; median of --reps runs after 3 warm-up runs, the
contenders interleaved so that machine noise hits them alike. The release's loop is rewritten here
from its description (SPEC section 5): for every sample, Gram-Schmidt one random vector at a time
against [w, u1, v_2, ...], then the simplex weights times the basis; once with MXNet ops (the
release's structure, op by op) and once with NumPy (the cheapest Python loop).
"""
import argparse
import os
import platform
import sys
import time

import numpy as np
import mxnet as mx
from mxnet import autograd

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from loss import ProxyAnchorLoss, SEEProxyAnchorLoss  # noqa: E402
from loss.spherical_expansion import SphericalExpansion  # noqa: E402


def simplex_weights(n):
    """The release's (n+1, n+1) lower-triangular coordinates of a regular simplex with vertex 0 = e_0."""
    b = np.zeros((n + 1, n + 1))
    b[:, 0] = -1 / n
    b[0, 0] = 1
    for i in range(1, n + 1):
        for j in range(1, i):
            b[i, j] = (-1 / n - b[i] @ b[j]) / b[j, j]
        b[i, i] = np.sqrt(max(1 - np.sum(b[i, :i] ** 2), 0))
    return b


def loop_expansion(lib, z, w, n, weights):
    """One sample at a time, one Gram-Schmidt vector at a time; lib is mx.nd or a NumPy shim."""
    out = []
    for i in range(z.shape[0]):
        zi, wi = z[i], w[i]
        M = lib.dot(zi, wi) * wi
        r = zi - M
        r_norm = lib.norm(r)
        basis = [wi, r / r_norm]
        for _ in range(n):
            g = lib.normal(zi.shape)
            V = lib.stack(basis)
            g = g - lib.dot(lib.dot(V, g), V)
            basis.append(g / lib.norm(g))
        vertices = lib.dot(weights, lib.stack(basis[1:]))
        out.append(M + r_norm * vertices[1:])
    return lib.stack(out)


class NumPyLib:
    dot, stack = staticmethod(np.dot), staticmethod(np.stack)
    norm = staticmethod(np.linalg.norm)
    normal = staticmethod(np.random.standard_normal)


class MXLib:
    dot, stack = staticmethod(mx.nd.dot), staticmethod(lambda a: mx.nd.stack(*a))
    norm = staticmethod(mx.nd.norm)
    normal = staticmethod(lambda shape: mx.nd.random.normal(shape=shape))


def median_times(runs, reps, warmup=3):
    times = {k: [] for k in runs}
    for i in range(reps + warmup):
        for k, run in runs.items():
            start = time.perf_counter()
            run()
            if i >= warmup:
                times[k].append(time.perf_counter() - start)
    return {k: np.median(v) * 1e3 for k, v in times.items()}


def bench_expansion(reps, B=180, d=512, n=8):
    rng = np.random.RandomState(0)
    z = rng.randn(B, d)
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    w = rng.randn(B, d)
    w /= np.linalg.norm(w, axis=1, keepdims=True)
    block = SphericalExpansion(n)
    block.hybridize(static_alloc=True, static_shape=True)
    zn, wn, weights = mx.nd.array(z), mx.nd.array(w), simplex_weights(n)
    weights_nd = mx.nd.array(weights)
    template = mx.nd.zeros((B, d, n))
    runs = {
        'ours': lambda: block(zn, wn).wait_to_read(),
        'of which the Gaussian draws (B, d, n)': lambda: mx.nd.random.normal_like(template).wait_to_read(),
        'loop, MXNet ops': lambda: loop_expansion(MXLib, zn, wn, n, weights_nd).wait_to_read(),
        'loop, NumPy': lambda: loop_expansion(NumPyLib, z, w, n, weights),
    }
    # the contenders agree on the invariants: unit points at z's cosine to w
    for points in (block(zn, wn).asnumpy(), loop_expansion(NumPyLib, z, w, n, weights)):
        assert np.allclose(np.linalg.norm(points, axis=2), 1, atol=1e-5)
        assert np.allclose(np.einsum('bnd,bd->bn', points, w), np.sum(z * w, axis=1)[:, None], atol=1e-5)
    return median_times(runs, reps)


def loss_runner(block, e, y):
    def run():
        x = e.copy()
        x.attach_grad()
        with autograd.record():
            out = block(x, y)
        out.backward()
        x.grad.wait_to_read()
        block.proxies.grad().wait_to_read()
    return run


def bench_losses(reps, B=180, d=512, C=100, n=8, epochs=100):
    rng = np.random.RandomState(0)
    e = mx.nd.array(rng.randn(B, d))
    y = mx.nd.array(np.repeat(rng.permutation(C)[:B // 2], 2), dtype='int32')     # 2 images per class
    plain = ProxyAnchorLoss(C, d)
    runs = {'PA': loss_runner(plain, e, y)}
    blocks = [plain]
    for epoch in (epochs // 2, epochs):                                          # t = 0.2 and 0.4
        see = SEEProxyAnchorLoss(C, d, n_expansion=n, epochs=epochs)
        see.set_epoch(epoch)
        runs['SEE + PA, t=%.1f' % see.fraction] = loss_runner(see, e, y)
        blocks.append(see)
    for block in blocks:
        block.initialize()
        block.hybridize(static_alloc=True, static_shape=True)
    return median_times(runs, reps)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--reps', type=int, default=30)
    args = p.parse_args()
    cpu = next((l.split(':', 1)[1].strip() for l in open('/proc/cpuinfo') if l.startswith('model name')), '?')
    print('machine: %s, %d cores, Python %s, mxnet %s; load average %.1f' % (
        cpu, os.cpu_count(), platform.python_version(), mx.__version__, os.getloadavg()[0]))
    times = bench_expansion(args.reps)
    print('\nexpansion of B=180 rows, d=512, n_expansion=8 (median of %d)\n' % args.reps)
    print('| implementation | time (ms) | / ours |')
    print('|---|---|---|')
    for name, ms in times.items():
        print('| %s | %.2f | %.1fx |' % (name, ms, ms / times['ours']))
    times = bench_losses(args.reps)
    print('\nloss forward+backward, B=180, d=512, C=100, n_expansion=8 (median of %d)\n' % args.reps)
    print('| loss | time (ms) | / PA |')
    print('|---|---|---|')
    for name, ms in times.items():
        print('| %s | %.2f | %.2fx |' % (name, ms, ms / times['PA']))


if __name__ == '__main__':
    main()
