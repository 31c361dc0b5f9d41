"""SEE timings, side by side: the vectorised expansion against the release's per-sample loop, and the
SEE Proxy-Anchor loss against plain Proxy-Anchor.

    python3 bench/see_bench.py [--reps 30] [--repeat 1] [--baseline REV]

B=180, d=512, n_expansion=8, C=100 proxies; median of --reps runs after 3 warm-up runs, the
contenders interleaved so that machine noise hits them alike; --repeat R does the whole measurement
R times and prints the median of the R medians with the range of the ratios. The release's loop is
rewritten here from its description (docs/see.md): for every sample, Gram-Schmidt one random
vector at a time against [w, u1, v_2, ...], then the simplex weights times the basis; once with
MXNet ops (the release's structure, op by op) and once with NumPy (the cheapest Python loop).
--baseline REV also times the SEE and Proxy-Anchor code of git revision REV, interleaved with ours.
"""
import argparse
import atexit
import importlib
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import utils.mxnet_compat  # noqa: F401,E402  (before mxnet: old numpy names on Python 3.12+, CUDA wheels)
import mxnet as mx  # noqa: E402
from mxnet import autograd  # noqa: E402

from loss import ProxyAnchorLoss, SEEProxyAnchorLoss  # noqa: E402
from loss.spherical_expansion import SphericalExpansion, gaussian  # noqa: E402


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


def mx_box_muller(size):
    """Box-Muller from MXNet's uniform sampler, both outputs used: the in-graph alternative to ours."""
    u = mx.nd.random.uniform(shape=(2, (size + 1) // 2))
    radius = mx.nd.sqrt(-2 * mx.nd.log(1 - u[0]))
    angle = (2 * math.pi) * u[1]
    return mx.nd.concat(radius * mx.nd.cos(angle), radius * mx.nd.sin(angle), dim=0)


def load_baseline(rev):
    """The loss package's SEE and Proxy-Anchor modules at git revision rev, as a package of their own."""
    root = tempfile.mkdtemp(prefix='see_baseline_')
    atexit.register(shutil.rmtree, root, True)
    os.mkdir(os.path.join(root, 'baseline_loss'))
    open(os.path.join(root, 'baseline_loss', '__init__.py'), 'w').close()
    for name in ('proxy_anchor', 'spherical_expansion', 'see_proxy_anchor'):
        text = subprocess.run(['git', 'show', '%s:loss/%s.py' % (rev, name)], cwd=ROOT, check=True,
                              capture_output=True, text=True).stdout
        with open(os.path.join(root, 'baseline_loss', name + '.py'), 'w') as f:
            f.write(text)
    sys.path.insert(0, root)
    return {name: importlib.import_module('baseline_loss.' + name)
            for name in ('proxy_anchor', 'spherical_expansion', 'see_proxy_anchor')}


def median_times(runs, reps, warmup=3):
    times = {k: [] for k in runs}
    for i in range(reps + warmup):
        for k, run in runs.items():
            start = time.perf_counter()
            run()
            if i >= warmup:
                times[k].append(time.perf_counter() - start)
    return {k: np.median(v) * 1e3 for k, v in times.items()}


def bench_expansion(reps, baseline=None, rev='', B=180, d=512, n=8):
    rng = np.random.RandomState(0)
    z = rng.randn(B, d)
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    w = rng.randn(B, d)
    w /= np.linalg.norm(w, axis=1, keepdims=True)
    block = SphericalExpansion(n)
    block.hybridize(static_alloc=True, static_shape=True)
    zn, wn, weights = mx.nd.array(z), mx.nd.array(w), simplex_weights(n)
    weights_nd = mx.nd.array(weights)
    size = B * (n - 1) * d
    runs = {
        'ours': lambda: block(zn, wn).wait_to_read(),
        'of which the Gaussian draws (B, n-1, d): NumPy Box-Muller':
            lambda: gaussian((B, n - 1, d)).wait_to_read(),
        'the same draws by mx.nd.random.normal': lambda: mx.nd.random.normal(shape=(size,)).wait_to_read(),
        'the same draws by Box-Muller from mx.nd.random.uniform': lambda: mx_box_muller(size).wait_to_read(),
        'loop, MXNet ops': lambda: loop_expansion(MXLib, zn, wn, n, weights_nd).wait_to_read(),
        'loop, NumPy': lambda: loop_expansion(NumPyLib, z, w, n, weights),
    }
    contenders = [block(zn, wn).asnumpy(), loop_expansion(NumPyLib, z, w, n, weights)]
    if baseline:
        old = baseline['spherical_expansion'].SphericalExpansion(n)
        old.hybridize(static_alloc=True, static_shape=True)
        runs['ours at %s' % rev] = lambda: old(zn, wn).wait_to_read()
        contenders.append(old(zn, wn).asnumpy())
    # the contenders agree on the invariants: unit points at z's cosine to w
    for points in contenders:
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


def bench_losses(reps, baseline=None, rev='', B=180, d=512, C=100, n=8, epochs=100):
    rng = np.random.RandomState(0)
    e = mx.nd.array(rng.randn(B, d))
    y = mx.nd.array(np.repeat(rng.permutation(C)[:B // 2], 2), dtype='int32')     # 2 images per class
    versions = [('', ProxyAnchorLoss, SEEProxyAnchorLoss)]
    if baseline:
        versions.append((' at %s' % rev, baseline['proxy_anchor'].ProxyAnchorLoss,
                         baseline['see_proxy_anchor'].SEEProxyAnchorLoss))
    runs, blocks = {}, []
    for tag, pa, see_loss in versions:
        plain = pa(C, d)
        runs['PA' + tag] = loss_runner(plain, e, y)
        blocks.append(plain)
        for epoch in (epochs // 2, epochs):                                      # t = 0.2 and 0.4
            see = see_loss(C, d, n_expansion=n, epochs=epochs)
            see.set_epoch(epoch)
            runs['SEE + PA, t=%.1f%s' % (see.fraction, tag)] = loss_runner(see, e, y)
            blocks.append(see)
    for block in blocks:
        block.initialize()
        block.hybridize(static_alloc=True, static_shape=True)
    return median_times(runs, reps)


def ratio(rounds, name, reference, digits):
    """The median over the rounds of time(name) / time(reference), with the range when it varies."""
    ratios = [r[name] / r[reference] for r in rounds]
    text = '%.*fx' % (digits, np.median(ratios))
    if min(ratios) < max(ratios):
        text += ' (%.*f-%.*f)' % (digits, min(ratios), digits, max(ratios))
    return text


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--reps', type=int, default=30)
    p.add_argument('--repeat', type=int, default=1)
    p.add_argument('--baseline', metavar='REV', help='also time loss/ of this git revision')
    args = p.parse_args()
    baseline = load_baseline(args.baseline) if args.baseline else None
    cpu = next((l.split(':', 1)[1].strip() for l in open('/proc/cpuinfo') if l.startswith('model name')), '?')
    print('machine: %s, %d cores, Python %s, mxnet %s, numpy %s; load average %.1f' % (
        cpu, os.cpu_count(), platform.python_version(), mx.__version__, np.__version__, os.getloadavg()[0]))
    rounds = [bench_expansion(args.reps, baseline, args.baseline) for _ in range(args.repeat)]
    print('\nexpansion of B=180 rows, d=512, n_expansion=8 (median of %d, %d rounds)\n'
          % (args.reps, args.repeat))
    print('| implementation | time (ms) | / ours |')
    print('|---|---|---|')
    for name in rounds[0]:
        print('| %s | %.2f | %s |'
              % (name, np.median([r[name] for r in rounds]), ratio(rounds, name, 'ours', 1)))
    rounds = [bench_losses(args.reps, baseline, args.baseline) for _ in range(args.repeat)]
    print('\nloss forward+backward, B=180, d=512, C=100, n_expansion=8 (median of %d, %d rounds)\n'
          % (args.reps, args.repeat))
    print('| loss | time (ms) | / PA of the same code |' + (' / ours |' if baseline else ''))
    print('|---|---|---|' + ('---|' if baseline else ''))
    tag = ' at %s' % args.baseline
    for name in rounds[0]:
        old = name.endswith(tag)
        line = '| %s | %.2f | %s |' % (name, np.median([r[name] for r in rounds]),
                                      ratio(rounds, name, 'PA' + tag if old else 'PA', 2))
        if baseline:
            line += ' %s |' % (ratio(rounds, name, name[:-len(tag)], 2) if old else '')
        print(line)
    print('load average after: %.1f' % os.getloadavg()[0])


if __name__ == '__main__':
    main()
