"""The tables and the figure of RESULTS.md's warm-start study from the runs of bench/warm_study.sh.

    python3 bench/warm_study_report.py [runs/warm_study] [--plot figures/warm_study.png]

Per run, the epoch is chosen on the validation classes (the first with the best validation R@1,
tools.compare.select) and the test R@1, MAP@R and NMI of that epoch are reported; beside them the
test R@1 the release's rule would report (the best epoch on the test set itself), and their
difference: how much choosing on the test set inflates the result. Per arm: mean and sample sd over
the seeds, and the mean share of synthetic points among the mined hardest negatives
(ee/synthetic_negative_fraction, every logged step). Then, for every EE arm against its no-EE arm and
the release gradient against the exact one: the difference in test R@1 and its p-values, as
``python3 -m tools.compare A... --vs B...`` prints them. The figure shows validation and test R@1
against the stage-2 epoch (epoch 0: the warm start, evaluated at the end of stage 1), one column per
loss, the mean over seeds with the range as a band.
"""
import argparse
import glob
import os
import re
import sys
from collections import OrderedDict

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import utils.mxnet_compat  # noqa: F401,E402  (before mxnet: old numpy names on Python 3.12+, CUDA wheels)
from runner.trainer import SYNTHETIC_TAG  # noqa: E402
from tools.compare import mean_sd, permutation_test, read_curves, select, welch  # noqa: E402
from utils.events import read_scalars  # noqa: E402

# arm name (bench/warm_study.sh) -> its label; arms the script gains later are shown after these
LABELS = OrderedDict([
    ('hphn_n0', 'HPHN triplet, no EE'),
    ('hphn_n2_release', 'HPHN triplet, EE n=2, release gradient'),
    ('hphn_n2_exact', 'HPHN triplet, EE n=2, exact gradient'),
    ('triplet_n0', 'triplet (margin 0.2), no EE'),
    ('triplet_n2', 'triplet (margin 0.2), EE n=2'),
    ('ms_n0', 'Multi-Similarity, no EE'),
    ('ms_n2', 'Multi-Similarity, EE n=2'),
])
# (A, B) pairs whose difference A - B is tested: every EE arm against its no-EE arm, and the gradients
PAIRS = [('hphn_n2_release', 'hphn_n0'), ('hphn_n2_exact', 'hphn_n0'), ('hphn_n2_release', 'hphn_n2_exact'),
         ('triplet_n2', 'triplet_n0'), ('ms_n2', 'ms_n0')]
REPORTED = ('R@1', 'MAP@R', 'NMI')
WARM = 'warm'


def discover(root):
    """{arm: {seed: run dir}} of the finished runs under root (those with model_final.params)."""
    arms = {}
    for path in sorted(glob.glob(os.path.join(root, '*_seed*'))):
        match = re.match(r'(.+)_seed(\d+)$', os.path.basename(path))
        if match and os.path.isfile(os.path.join(path, 'model_final.params')):
            arms.setdefault(match.group(1), {})[int(match.group(2))] = path
    return arms


def run_numbers(path):
    """{metric: test value at the validation-chosen epoch}, plus 'epoch', 'R@1 test-chosen' and
    'synthetic' (the mean logged share, None without EE) of one run; values in percent."""
    chosen = select(path, 'R@1')
    row = {m: 100 * select(path, m).value for m in REPORTED}
    row['epoch'] = chosen.epoch
    row['R@1 test-chosen'] = 100 * select(path, 'R@1', rule='test').value
    shares = [v for _, v in read_scalars(path).get(SYNTHETIC_TAG, [])]
    row['synthetic'] = 100 * np.mean(shares) if shares else None
    return row


def cell(values, digits=2):
    mean, sd = mean_sd(values)
    return '%.*f ± %.*f' % (digits, mean, digits, sd)


def ordered(arms):
    return [a for a in LABELS if a in arms] + sorted(a for a in arms if a not in LABELS and a != WARM)


def tables(arms):
    """The report's markdown lines: per-arm summary, the tests, then per-run details."""
    numbers = {arm: {seed: run_numbers(path) for seed, path in runs.items()} for arm, runs in arms.items()
               if arm != WARM}
    lines = ['| arm | seeds | test R@1 | MAP@R | NMI | R@1, best test epoch (release rule) | inflation | '
             'synthetic hardest negatives (%) |', '|---|---|---|---|---|---|---|---|']
    if WARM in arms:    # the warm start itself: the last (only) evaluation of stage 1
        warm = [read_curves(p) for p in arms[WARM].values()]
        lines.append('| warm start (Proxy-Anchor, stage 1) | %d | %s | - | - | - |'
                     % (len(warm), ' | '.join(cell([100 * c[m][-1][1] for c in warm]) for m in REPORTED)))
    for arm in ordered(numbers):
        rows = list(numbers[arm].values())
        inflation = [r['R@1 test-chosen'] - r['R@1'] for r in rows]
        shares = [r['synthetic'] for r in rows if r['synthetic'] is not None]
        lines.append('| %s | %d | %s | %s | +%.2f (max +%.2f) | %s |' % (
            LABELS.get(arm, arm), len(rows), ' | '.join(cell([r[m] for r in rows]) for m in REPORTED),
            cell([r['R@1 test-chosen'] for r in rows]), np.mean(inflation), max(inflation),
            cell(shares, 1) if shares else '-'))
    lines += ['', '| A vs B (test R@1 at the validation-chosen epoch) | A | B | A - B | A > B on seeds (same warm start) | '
                  "exact permutation p | Welch's t p | MAP@R: A - B, exact p |", '|---|---|---|---|---|---|---|---|']
    for a, b in PAIRS:
        if a not in numbers or b not in numbers:
            continue
        seeds = sorted(set(numbers[a]) & set(numbers[b]))
        va, vb, ma, mb = (np.array([numbers[arm][s][m] for s in seeds]) for m in ('R@1', 'MAP@R') for arm in (a, b))
        p, count = permutation_test(va, vb)
        lines.append('| %s vs %s | %s | %s | %+.2f | %d of %d | %.2f (of %d relabelings) | %.3f | %+.2f, %.2f |'
                     % (a, b, cell(va), cell(vb), va.mean() - vb.mean(), (va > vb).sum(), len(seeds), p, count,
                        welch(va, vb)[1], ma.mean() - mb.mean(), permutation_test(ma, mb)[0]))
    lines += ['', '| arm | seed | chosen epoch | test R@1 | MAP@R | NMI | R@1, best test epoch | synthetic (%) |',
              '|---|---|---|---|---|---|---|---|']
    for arm in ordered(numbers):
        for seed, r in sorted(numbers[arm].items()):
            lines.append('| %s | %d | %d | %.2f | %.2f | %.2f | %.2f | %s |' % (
                arm, seed, r['epoch'], r['R@1'], r['MAP@R'], r['NMI'], r['R@1 test-chosen'],
                '-' if r['synthetic'] is None else '%.1f' % r['synthetic']))
    return lines


def plot(arms, out):
    """Validation (top) and test (bottom) R@1 against the stage-2 epoch, one column per loss (the arm
    name before '_n'); epoch 0 is the arm's warm start. Mean over seeds, the range as a band."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    losses = list(OrderedDict((arm.split('_n')[0], None) for arm in ordered(arms)))
    fig, axes = plt.subplots(2, len(losses), figsize=(4.5 * len(losses), 7.5), sharex=True, squeeze=False)
    for row, val in enumerate((True, False)):
        for col, loss in enumerate(losses):
            ax = axes[row][col]
            for arm in (a for a in ordered(arms) if a.split('_n')[0] == loss):
                curves = []
                for seed, path in sorted(arms[arm].items()):
                    points = read_curves(path, with_val=True)[1 if val else 0]['R@1']
                    if WARM in arms and seed in arms[WARM]:
                        start = read_curves(arms[WARM][seed], with_val=True)[1 if val else 0]['R@1'][-1][1]
                        points = [(0, start)] + points
                    curves.append(dict(points))
                epochs = sorted(set.intersection(*[set(c) for c in curves]))
                values = 100 * np.array([[c[e] for e in epochs] for c in curves])
                line, = ax.plot(epochs, values.mean(0), marker='.', label='%s (%d seeds)'
                                % (LABELS.get(arm, arm).split(', ', 1)[-1], len(curves)))
                ax.fill_between(epochs, values.min(0), values.max(0), color=line.get_color(), alpha=0.15)
            ax.set_title('%s: %s R@1' % (LABELS.get(loss + '_n0', loss).split(',')[0],
                                         'validation (10 held-out classes)' if val else 'test (50 unseen classes)'),
                         fontsize=9)
            ax.set_xlabel('stage-2 epoch (0: the warm start)')
            ax.set_ylabel('R@1 (%)')
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    fig.suptitle('CUB subset, 64 px: every arm from the same Proxy-Anchor warm start per seed')
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('runs', nargs='?', default='runs/warm_study')
    p.add_argument('--plot', default=None, help='write the figure here (PNG)')
    args = p.parse_args()
    arms = discover(args.runs)
    if not arms:
        sys.exit('error: no finished runs (*_seedN/model_final.params) under %s' % args.runs)
    print('\n'.join(tables(arms)))
    if args.plot:
        plot(arms, args.plot)
        print('\nfigure: %s' % args.plot)


if __name__ == '__main__':
    main()
