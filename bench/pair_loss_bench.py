"""Forward+backward time of the pair-based losses with and without EE, all interleaved in one run.

    python3 bench/pair_loss_bench.py [--reps 30] [--repeat 1]

B=128, d=512, num_instances=32 (N-pair: 2, its one pair per class), n_inner_pts in {0, 2, 8},
hybridised with static_alloc; median of --reps runs after 5 warm-up runs. Every (loss, n) is run
once per round, so that machine noise hits all alike. --repeat R does the whole measurement R
times in a row and prints the median of the R medians, with the range of the ratios: on a shared
machine one measurement can be off by 2x.
"""
import argparse
import os
import platform
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import utils.mxnet_compat  # noqa: F401,E402  (before mxnet: old numpy names on Python 3.12+, CUDA wheels)
import mxnet as mx  # noqa: E402

from loss import LOSSES  # noqa: E402
from bench.loss_bench import timer  # noqa: E402

NAMES = ['triplet', 'lifted', 'npair', 'ms']
POINTS = (0, 2, 8)


def bench(reps, B=128, d=512, warmup=5):
    rng = np.random.RandomState(0)
    e = rng.randn(B, d).astype(np.float32)
    e = mx.nd.array(e / np.linalg.norm(e, axis=1, keepdims=True))
    runs = {}
    for name in NAMES:
        num_instances = 2 if name == 'npair' else 32
        y = mx.nd.array(np.repeat(np.arange(B // num_instances), num_instances), dtype=np.int32)
        for n in POINTS:
            loss = LOSSES[name](num_instances=num_instances, n_inner_pts=n)
            loss.hybridize(static_alloc=True, static_shape=True)
            runs[name, n] = timer(loss, e, y)
    times = {k: [] for k in runs}
    for i in range(reps + warmup):
        for k, run in runs.items():
            t = run()
            if i >= warmup:
                times[k].append(t)
    return {k: np.median(v) * 1e3 for k, v in times.items()}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--reps', type=int, default=30)
    p.add_argument('--repeat', type=int, default=1)
    args = p.parse_args()
    cpu = next((l.split(':', 1)[1].strip() for l in open('/proc/cpuinfo') if l.startswith('model name')), '?')
    print('machine: %s, %d cores, %s, mxnet %s, load average %.1f'
          % (cpu, os.cpu_count(), platform.python_version(), mx.__version__, os.getloadavg()[0]))
    runs = [bench(args.reps) for _ in range(args.repeat)]
    ms = {k: np.median([r[k] for r in runs]) for k in runs[0]}
    print('| loss | ' + ' | '.join('n=%d (ms)' % n for n in POINTS) + ' | ' +
          ' | '.join('n=%d / n=0' % n for n in POINTS[1:]) + ' |')
    print('|---' * (2 * len(POINTS)) + '|')
    for name in NAMES:
        cells = ['%.2f' % ms[name, n] for n in POINTS]
        for n in POINTS[1:]:
            ratios = [r[name, n] / r[name, 0] for r in runs]
            cells.append('%.2fx' % (ms[name, n] / ms[name, 0]) +
                         (' (%.2f-%.2f)' % (min(ratios), max(ratios)) if len(runs) > 1 else ''))
        print('| %s | %s |' % (name, ' | '.join(cells)))


if __name__ == '__main__':
    main()
