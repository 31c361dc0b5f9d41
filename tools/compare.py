"""Compare training runs with the papers: best and final metrics, the published value, curves.

    python3 -m tools.compare RUN_DIR [RUN_DIR ...] [--paper DATASET/METHOD] [--metric R@1]
                             [--tolerance PTS] [--plot OUT.png] [--paper_csv FILE]

RUN_DIR is a main.py --save_dir. For every metric the run evaluated (the ``metric_epoch/...`` scalars)
the table shows the best value and its epoch, the final one, the value at the epoch where --metric
peaked (the release keeps that model), the paper's value and the difference in points. Values are in
percent, as the papers print them.

The paper row is ``--paper DATASET/METHOD`` (a key of configs/paper_numbers.csv, e.g.
cars196/ee_hphn_triplet, the config file's name) for every run, or else inferred per run from the
args.txt main.py writes into RUN_DIR.

With ``--vs B_RUN_DIR ...`` (one run per seed and method on each side) it prints instead, for
--metric at each run's selected epoch, each group's mean +- sd, the difference and its significance:
an exact permutation test over the runs (two-sided, every one of the C(n_a + n_b, n_a) relabelings)
and Welch's t test beside it. The selected epoch is the first with the best --select_by (R@1) on the
validation classes (``val_metric_epoch/...``, main.py --val_class_ratio) when the run has them, else
on the test set (the release's rule).

Exit status: 0; 1 when a run's best --metric is more than --tolerance points below its paper value;
2 on bad input (a directory without event files, an unknown --paper key or metric, --vs without
runs), with one line ``error: ...`` on stderr.
"""
import argparse
import itertools
import math
import os
import re
import sys
from collections import namedtuple

import numpy as np

import utils.mxnet_compat  # noqa: F401  (first: MXNet 1.9.1's numpy names on Python 3.12+, the CUDA wheels' libraries)
from runner.summary import metric_tag
from tools.paper_numbers import DEFAULT_CSV, load_paper_numbers, run_paper_key
from utils.errors import OneLineParser, UserError, run_command
from utils.events import read_scalars

EPOCH_PREFIX = 'metric_epoch/'
VAL_PREFIX = 'val_' + EPOCH_PREFIX
MAX_RELABELINGS = 10 ** 6       # the exact test enumerates them all: beyond this it would take minutes
KNOWN_TAGS = re.compile(r'R\d+|NMI|F1|MAP_R|RP')

CurveSummary = namedtuple('CurveSummary', 'best_epoch best final_epoch final')
Run = namedtuple('Run', 'name path curves paper_key paper')
Selected = namedtuple('Selected', 'epoch value rule')


def metric_name(tag):
    """Display name of a logged tag: 'R1' -> 'R@1', 'MAP_R' -> 'MAP@R', 'NMI' -> 'NMI'."""
    if re.fullmatch(r'R\d+', tag):
        return 'R@' + tag[1:]
    return 'MAP@R' if tag == 'MAP_R' else tag


def parse_metric(name):
    """The display name of a --metric given as 'R@1', 'r1', 'nmi', 'MAP@R', ...; UserError if unknown."""
    tag = metric_tag(name.strip().upper())
    if not KNOWN_TAGS.fullmatch(tag):
        raise UserError('unknown --metric %r; choose R@K (e.g. R@1), NMI, F1, MAP@R or RP' % name)
    return metric_name(tag)


def epoch_curves(scalars, prefix=EPOCH_PREFIX):
    """{metric name: [(epoch, value), ...]} of the ``prefix<TAG>`` scalars, sorted by epoch.

    A resumed run logs the epochs after its checkpoint again; the last value written for an epoch wins.
    """
    curves = {}
    for tag, points in scalars.items():
        if not tag.startswith(prefix) or '/' in tag[len(prefix):]:
            continue    # global-step duplicates, loss, lr and the running best (metric_epoch/R1/best)
        curves[metric_name(tag[len(prefix):])] = sorted(dict(points).items())
    return curves


def read_curves(run_dir, with_val=False):
    """The test curves of a run (see epoch_curves), values as logged (fractions); with_val: also the
    validation curves, as (test, val) with val {} when the run held out no classes."""
    if not os.path.isdir(run_dir):
        raise UserError('run directory %s does not exist' % run_dir)
    scalars = read_scalars(run_dir)
    if not scalars:
        raise UserError('no mxboard event files with scalars under %s' % run_dir)
    curves = epoch_curves(scalars)
    if not curves:
        raise UserError('%s holds no evaluation (no %s... scalars): did the run reach its first evaluation?'
                        % (run_dir, EPOCH_PREFIX))
    return (curves, epoch_curves(scalars, VAL_PREFIX)) if with_val else curves


def summarize(curve):
    """Best value (its first epoch) and final value (its epoch) of one curve."""
    best_epoch, best = max(curve, key=lambda point: point[1])   # max keeps the first of equal values
    final_epoch, final = curve[-1]
    return CurveSummary(best_epoch, best, final_epoch, final)


def metric_order(name):
    """R@K by K, then the other metrics in a fixed order."""
    if name.startswith('R@'):
        return 0, int(name[2:]), ''
    others = ['NMI', 'F1', 'MAP@R', 'RP']
    return 1, others.index(name) if name in others else len(others), name


def load_runs(run_dirs, paper_key, table):
    """Run tuples with their curves and paper values; names are the directories' names when unique."""
    names = [os.path.basename(os.path.normpath(d)) for d in run_dirs]
    if len(set(names)) < len(names):
        names = list(run_dirs)
    runs = []
    for name, path in zip(names, run_dirs):
        curves = read_curves(path)
        key = paper_key or run_paper_key(path, table)
        runs.append(Run(name, path, curves, key, table.get(key, {})))
    return runs


def percent(value):
    return '%.2f' % (100 * value)


def run_table(run, metric):
    """Lines of one run's table: per metric best, final, value at the best --metric epoch, paper, diff."""
    selected = summarize(run.curves[metric]).best_epoch
    header = ('metric', 'best', 'epoch', 'final', 'epoch', 'at best %s' % metric, 'paper', 'best-paper')
    rows = [header]
    for name in sorted(run.curves, key=metric_order):
        s = summarize(run.curves[name])
        at_selected = dict(run.curves[name]).get(selected)
        paper = run.paper.get(name)
        rows.append((name, percent(s.best), str(s.best_epoch), percent(s.final), str(s.final_epoch),
                     '-' if at_selected is None else percent(at_selected),
                     '-' if paper is None else '%.1f' % paper,
                     '-' if paper is None else '%+.2f' % (100 * s.best - paper)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return ['  '.join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
            for row in rows]


def verdict(run, metric, tolerance):
    """(line, passed) for the run's best --metric against the paper; passed is None without a paper value."""
    s = summarize(run.curves[metric])
    paper = run.paper.get(metric)
    if paper is None:
        return '%s: no published value to compare with' % metric, None
    diff = 100 * s.best - paper
    passed = diff >= -tolerance
    judgement = 'within the tolerance' if passed else 'FAIL: more than'
    return ('%s: best %s at epoch %d, paper %.1f: %+.2f points (%s %g points below the paper)'
            % (metric, percent(s.best), s.best_epoch, paper, diff, judgement, tolerance), passed)


def plot(runs, metric, out):
    """--metric against the epoch for every run on one PNG, with the paper values as dashed lines."""
    import matplotlib
    matplotlib.use('Agg')       # no display needed
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(8, 5))
    drawn = set()
    for run in runs:
        epochs, values = zip(*run.curves[metric])
        line, = ax.plot(epochs, [100 * v for v in values], marker='.', label=run.name)
        paper = run.paper.get(metric)
        if paper is not None and run.paper_key not in drawn:
            drawn.add(run.paper_key)
            ax.axhline(paper, color=line.get_color(), linestyle='--', linewidth=1,
                       label='paper %s (%.1f)' % (run.paper_key, paper))
    ax.set_xlabel('epoch')
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel('%s (%%)' % metric)
    ax.set_title('%s against the epoch' % metric)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    try:
        fig.savefig(out, format='png')
    except OSError as exc:
        raise UserError('cannot write --plot %s: %s' % (out, exc.strerror or exc)) from exc
    finally:
        plt.close(fig)


def select(run_dir, metric, select_by='R@1', rule='auto'):
    """Selected(epoch, value of ``metric`` on the test set at it, rule) of one run.

    The epoch is the first with the best ``select_by``: on the validation classes when rule is
    'auto' and the run logged them (rule 'validation'), else on the test set (rule 'test', the
    release's). UserError naming the run when it logged either metric not at all.
    """
    test, val = read_curves(run_dir, with_val=True)
    chooser = val if rule == 'auto' and select_by in val else test
    for name, curves in ((select_by, chooser), (metric, test)):
        if name not in curves:
            raise UserError('run %s logged no %s (it has %s)' % (run_dir, name, ', '.join(sorted(test, key=metric_order))))
    epoch = summarize(chooser[select_by]).best_epoch
    value = dict(test[metric]).get(epoch)
    if value is None:
        raise UserError('run %s has no test %s at its selected epoch %d' % (run_dir, metric, epoch))
    return Selected(epoch, value, 'validation' if chooser is val else 'test')


def mean_sd(values):
    """(mean, sample standard deviation; 0 for one value) of a sequence."""
    values = np.asarray(values, dtype=np.float64)
    return values.mean(), values.std(ddof=1) if len(values) > 1 else 0.0


def permutation_test(a, b):
    """(two-sided p, number of relabelings) of the exact permutation test of mean(a) - mean(b).

    Every one of the C(n_a + n_b, n_a) ways to label n_a of the pooled values 'a' is enumerated;
    p is the share whose |difference of means| reaches the observed one (itself included, so
    p >= 1 / C; with n_a == n_b the mirrored labelling ties it, so p >= 2 / C).
    """
    pooled = np.concatenate([np.asarray(a, np.float64), np.asarray(b, np.float64)])
    n_a, total = len(a), len(pooled)
    count = math.comb(total, n_a)
    if count > MAX_RELABELINGS:
        raise UserError('the exact permutation test of %d vs %d runs has %d relabelings (more than %d): '
                        'compare fewer runs' % (n_a, total - n_a, count, MAX_RELABELINGS))
    # sum(a') determines mean(a') - mean(b') for a fixed split size, so only the sums are needed
    sums = np.array([pooled[list(c)].sum() for c in itertools.combinations(range(total), n_a)])
    diffs = np.abs(sums / n_a - (pooled.sum() - sums) / (total - n_a))
    observed = abs(np.mean(a) - np.mean(b))
    # equal differences must count as reached despite rounding of the sums in another order
    reached = diffs >= observed - 1e-9 * max(1.0, observed)
    return reached.sum() / count, count


def welch(a, b):
    """(t, two-sided p) of Welch's t test; nan when a group has one run or both have no spread."""
    import warnings

    from scipy import stats
    if len(a) < 2 or len(b) < 2 or (np.ptp(a) == 0 and np.ptp(b) == 0):
        return float('nan'), float('nan')
    with warnings.catch_warnings():     # scipy warns of 'precision loss' for a group of equal values
        warnings.simplefilter('ignore', RuntimeWarning)
        t, p = stats.ttest_ind(a, b, equal_var=False)
    return float(t), float(p)


def versus(a_dirs, b_dirs, metric, select_by='R@1'):
    """Lines of the --vs comparison: per run its selected value, per group mean +- sd, the
    difference A - B in points and its p-values."""
    lines, groups, rules = [], [], []
    for label, dirs in (('A', a_dirs), ('B', b_dirs)):
        picks = [select(d, metric, select_by) for d in dirs]
        rules.extend(p.rule for p in picks)
        groups.append(np.array([p.value for p in picks]) * 100)
        for d, p in zip(dirs, picks):
            lines.append('%s  %s: %s %.2f at epoch %d (best %s on the %s set)'
                         % (label, d, metric, 100 * p.value, p.epoch, select_by,
                            'validation' if p.rule == 'validation' else 'test'))
    a, b = groups
    if len(set(rules)) > 1:
        lines.append('note: some runs are selected on the validation set, others on the test set')
    for label, values in (('A', a), ('B', b)):
        lines.append('%s (%d runs): %s %.2f +- %.2f' % ((label, len(values), metric) + mean_sd(values)))
    p, count = permutation_test(a, b)
    smallest = (2 if len(a) == len(b) else 1) / count
    t, welch_p = welch(a, b)
    lines.append('difference A - B: %+.2f points' % (a.mean() - b.mean()))
    lines.append('exact permutation test (two-sided, all %d relabelings): p = %.4f (the smallest possible '
                 'with %d vs %d runs: %.4f)' % (count, p, len(a), len(b), smallest))
    lines.append("Welch's t test: t = %.3f, p = %.4f" % (t, welch_p))
    return lines


def build_parser():
    p = OneLineParser(prog='python3 -m tools.compare', description=__doc__.split('\n\n')[0],
                      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('run_dirs', nargs='+', metavar='RUN_DIR', help='main.py --save_dir of a run')
    p.add_argument('--paper', default=None, metavar='DATASET/METHOD',
                   help='row of the paper numbers for every run (None: inferred from each RUN_DIR/args.txt)')
    p.add_argument('--metric', default='R@1', metavar='NAME',
                   help='R@K, NMI, F1, MAP@R or RP: the metric of the tolerance check and the plot')
    p.add_argument('--tolerance', default=1.0, type=float, metavar='PTS',
                   help='points the best --metric may fall below the paper before the exit status is 1')
    p.add_argument('--plot', default=None, metavar='OUT.png', help='draw --metric against the epoch here')
    p.add_argument('--paper_csv', default=DEFAULT_CSV, metavar='FILE',
                   help='the published numbers, in percent')
    p.add_argument('--vs', nargs='*', default=None, metavar='B_RUN_DIR',
                   help='compare the RUN_DIRs (group A) with these (group B): means, difference, exact '
                        'permutation and Welch p-values of --metric at each run\'s selected epoch')
    p.add_argument('--select_by', default='R@1', metavar='NAME',
                   help='with --vs: the metric whose best epoch (on validation classes if logged) is selected')
    return p


def compare(args):
    """Print the tables (and draw the plot); the exit status: 1 if a run falls short, else 0."""
    if not 0 <= args.tolerance < math.inf:      # nan would compare False with everything: a FAIL
        raise UserError('--tolerance must be a finite number of points >= 0, got %g' % args.tolerance)
    metric = parse_metric(args.metric)
    if args.vs is not None:
        if not args.vs:
            raise UserError('--vs needs the run directories of group B (one per seed)')
        print('\n'.join(versus(args.run_dirs, args.vs, metric, parse_metric(args.select_by))))
        return 0
    table = load_paper_numbers(args.paper_csv)
    if args.paper is not None and args.paper not in table:
        raise UserError('unknown --paper key %r: not in %s (keys are DATASET/METHOD, e.g. cars196/ee_hphn_triplet)'
                        % (args.paper, args.paper_csv))
    runs = load_runs(args.run_dirs, args.paper, table)
    for run in runs:
        if metric not in run.curves:
            raise UserError('run %s logged no %s (it has %s)'
                            % (run.path, metric, ', '.join(sorted(run.curves, key=metric_order))))
    status = 0
    for run in runs:
        print('== %s  (paper: %s)' % (run.path, run.paper_key if run.paper else 'none found; pass --paper'))
        print('\n'.join(run_table(run, metric)))
        line, passed = verdict(run, metric, args.tolerance)
        print(line)
        print()
        if passed is False:
            status = 1
    if args.plot:
        plot(runs, metric, args.plot)
        print('plot: %s' % args.plot)
    return status


def main(argv=None):
    return run_command(lambda argv: compare(build_parser().parse_args(argv)), argv)


if __name__ == '__main__':
    sys.exit(main())
