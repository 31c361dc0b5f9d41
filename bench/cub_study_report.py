"""The table and the figure of RESULTS.md from the runs of bench/cub_study.sh.

    python3 bench/cub_study_report.py [runs/cub_study] [--plot RESULTS_cub_study.png]

For every run, the epoch is chosen on the validation classes (the first epoch with the best
validation R@1) and the test metrics of that epoch are reported; then mean and sample standard
deviation over the seeds, per n_inner_pts. The figure shows validation and test R@1 against the
epoch, the mean over seeds with the range as a band.
"""
import argparse
import glob
import os
import re
import sys
from collections import defaultdict

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import utils.mxnet_compat  # noqa: F401,E402  (before mxnet: old numpy names on Python 3.12+, CUDA wheels)
from utils.events import read_scalars  # noqa: E402

METRICS = (('R@1', 'R1'), ('R@2', 'R2'), ('R@4', 'R4'), ('R@8', 'R8'), ('MAP@R', 'MAP_R'), ('NMI', 'NMI'))


def curve(scalars, tag):
    """{epoch: value}, the last value logged for an epoch winning (a resumed run repeats some)."""
    return dict(scalars.get(tag, []))


def chosen(run_dir):
    """(n_inner_pts, seed, chosen epoch, {metric: test value at it}, val curve, test curve)."""
    n, seed = map(int, re.match(r'n(\d+)_seed(\d+)$', os.path.basename(run_dir)).groups())
    s = read_scalars(run_dir)
    val = curve(s, 'val_metric_epoch/R1')
    epoch = min(val, key=lambda e: (-val[e], e))
    test = {name: curve(s, 'metric_epoch/' + tag)[epoch] for name, tag in METRICS}
    return n, seed, epoch, test, val, curve(s, 'metric_epoch/R1')


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('runs', nargs='?', default='runs/cub_study')
    p.add_argument('--plot', default=None, help='write the figure here (PNG)')
    p.add_argument('--title', default='HPHN triplet', help='the loss, for the figure title')
    args = p.parse_args()
    runs = [chosen(d) for d in sorted(glob.glob(os.path.join(args.runs, 'n*_seed*')))]
    print('| n_inner_pts | seed | chosen epoch | ' + ' | '.join(m for m, _ in METRICS) + ' |')
    print('|---|---|---|' + '---|' * len(METRICS))
    for n, seed, epoch, test, _, _ in runs:
        print('| %d | %d | %d | ' % (n, seed, epoch) + ' | '.join('%.2f' % (100 * test[m]) for m, _ in METRICS) + ' |')
    by_n = defaultdict(list)
    for run in runs:
        by_n[run[0]].append(run)
    print()
    print('| n_inner_pts | seeds | ' + ' | '.join(m for m, _ in METRICS) + ' |')
    print('|---|---|' + '---|' * len(METRICS))
    for n, group in sorted(by_n.items()):
        cells = []
        for m, _ in METRICS:
            values = 100 * np.array([r[3][m] for r in group])
            cells.append('%.2f ± %.2f' % (values.mean(), values.std(ddof=1) if len(values) > 1 else 0))
        print('| %d | %d | ' % (n, len(group)) + ' | '.join(cells) + ' |')
    if args.plot:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), sharex=True)
        for ax, index, title in ((axes[0], 4, 'validation R@1 (10 held-out training classes)'),
                                 (axes[1], 5, 'test R@1 (50 unseen classes)')):
            for n, group in sorted(by_n.items()):
                epochs = sorted(group[0][index])
                values = 100 * np.array([[r[index][e] for e in epochs] for r in group])
                line, = ax.plot(epochs, values.mean(0), marker='.',
                                label='n_inner_pts=%d%s (mean of %d seeds)' % (n, ' (EE)' if n else '', len(group)))
                ax.fill_between(epochs, values.min(0), values.max(0), color=line.get_color(), alpha=0.2)
            ax.set_title(title)
            ax.set_xlabel('epoch')
            ax.set_ylabel('R@1 (%)')
            ax.grid(alpha=0.3)
            ax.legend()
        fig.suptitle('%s on the CUB subset, 64 px, random init: without and with EE' % args.title)
        fig.tight_layout()
        fig.savefig(args.plot)
        print('\nfigure: %s' % args.plot)


if __name__ == '__main__':
    main()
