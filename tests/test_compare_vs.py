"""tools.compare --vs: selected epochs, group means, the exact permutation test and Welch's t,
on event files written here whose answers are known."""
import itertools
import math
import re

import numpy as np
import pytest
from scipy import stats

from runner.summary import Summary
from tools import compare

EPOCHS = (5, 10, 15)


def write_run(path, test_r1, val_r1=None, map_r=None):
    """A run folder with test R@1 (and MAP@R) per epoch of EPOCHS, and validation R@1 when given."""
    summary = Summary(str(path))
    for i, epoch in enumerate(EPOCHS):
        test = {'R@1': test_r1[i], 'MAP@R': (map_r or test_r1)[i]}
        summary.metrics(test, 10 * epoch, epoch)
        if val_r1 is not None:
            summary.metrics({'R@1': val_r1[i]}, 10 * epoch, epoch, prefix='val_')
    summary.close()
    return str(path)


def brute_force_p(a, b):
    """Two-sided permutation p by another route: every n_a-subset as a bit mask of the pooled runs."""
    pooled, n_a = list(a) + list(b), len(a)
    observed = abs(sum(a) / len(a) - sum(b) / len(b))
    hits = total = 0
    for mask in range(2 ** len(pooled)):
        if bin(mask).count('1') != n_a:
            continue
        first = [v for i, v in enumerate(pooled) if mask >> i & 1]
        rest = [v for i, v in enumerate(pooled) if not mask >> i & 1]
        total += 1
        hits += abs(sum(first) / len(first) - sum(rest) / len(rest)) >= observed - 1e-12
    return hits / total


def welch_by_hand(a, b):
    """Welch's two-sided p from its formula: t, the Welch-Satterthwaite degrees of freedom, Student's t."""
    va, vb = np.var(a, ddof=1) / len(a), np.var(b, ddof=1) / len(b)
    t = (np.mean(a) - np.mean(b)) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    return 2 * stats.t.sf(abs(t), df)


@pytest.mark.parametrize('a,b', [
    ([0.30, 0.31, 0.32], [0.20, 0.21, 0.22]),             # fully separated: the smallest p, 2 / 20
    ([0.30, 0.22, 0.25], [0.21, 0.26, 0.24]),             # overlapping
    ([0.30, 0.22, 0.25, 0.28], [0.21, 0.26]),              # unequal sizes: no mirrored labelling
    ([0.25, 0.25, 0.25], [0.25, 0.25, 0.26]),              # ties in the pooled values
])
def test_permutation_p_matches_brute_force(a, b):
    p, count = compare.permutation_test(a, b)
    assert count == math.comb(len(a) + len(b), len(a))
    assert p == pytest.approx(brute_force_p(a, b), abs=1e-12)


def test_separated_three_vs_three_is_exactly_one_tenth():
    assert compare.permutation_test([3, 4, 5], [0, 1, 2]) == (pytest.approx(0.1, abs=1e-15), 20)
    assert compare.permutation_test([0, 1, 2], [3, 4, 5])[0] == pytest.approx(0.1, abs=1e-15)   # two-sided
    assert compare.permutation_test([1, 2, 3], [1, 2, 3])[0] == 1.0


def test_welch_matches_its_formula():
    a, b = [0.30, 0.22, 0.25], [0.21, 0.26, 0.24, 0.20]
    assert compare.welch(a, b)[1] == pytest.approx(welch_by_hand(a, b), rel=1e-9)
    assert math.isnan(compare.welch([0.3], [0.2, 0.1])[1]) and math.isnan(compare.welch([1, 1], [2, 2])[1])


def test_selection_uses_validation_when_logged_else_the_test_set(tmp_path):
    # validation peaks at epoch 10, the test set at 15: the validation-selected value is epoch 10's
    run = write_run(tmp_path / 'val', test_r1=[0.1, 0.2, 0.3], val_r1=[0.5, 0.7, 0.6], map_r=[0.01, 0.02, 0.03])
    assert compare.select(run, 'R@1') == (10, pytest.approx(0.2), 'validation')
    assert compare.select(run, 'MAP@R') == (10, pytest.approx(0.02), 'validation')   # at the R@1-chosen epoch
    assert compare.select(run, 'R@1', rule='test') == (15, pytest.approx(0.3), 'test')
    plain = write_run(tmp_path / 'plain', test_r1=[0.1, 0.3, 0.3])                    # the first of equal bests
    assert compare.select(plain, 'R@1') == (10, pytest.approx(0.3), 'test')


def numbers(line):
    return [float(v) for v in re.findall(r'[-+]?\d+\.\d+', line)]


def test_cli_prints_groups_difference_and_p_values(tmp_path, capsys):
    # per run: the test R@1 at the validation-chosen epoch is the middle value (epoch 10)
    a_values, b_values = [0.40, 0.42, 0.47], [0.30, 0.35, 0.33]
    a = [write_run(tmp_path / ('a%d' % i), [0.9, v, 0.95], val_r1=[0.1, 0.5, 0.2]) for i, v in enumerate(a_values)]
    b = [write_run(tmp_path / ('b%d' % i), [0.0, v, 0.99], val_r1=[0.1, 0.5, 0.2]) for i, v in enumerate(b_values)]
    assert compare.main(a + ['--vs'] + b) == 0
    lines = capsys.readouterr().out.splitlines()
    group = {l[0]: numbers(l.split(':', 1)[1]) for l in lines if re.match(r'[AB] \(3 runs\)', l)}
    for label, values in (('A', a_values), ('B', b_values)):
        assert group[label] == pytest.approx([100 * np.mean(values), 100 * np.std(values, ddof=1)], abs=0.006)
    diff = next(l for l in lines if l.startswith('difference'))
    assert numbers(diff)[0] == pytest.approx(100 * (np.mean(a_values) - np.mean(b_values)), abs=0.006)
    perm = next(l for l in lines if l.startswith('exact permutation'))
    assert 'all 20 relabelings' in perm and numbers(perm) == pytest.approx([0.1, 0.1], abs=1e-4)
    welch_line = next(l for l in lines if l.startswith("Welch"))
    assert numbers(welch_line)[1] == pytest.approx(welch_by_hand(a_values, b_values), abs=1e-4)
    assert sum('at epoch 10 (best R@1 on the validation set)' in l for l in lines) == 6


@pytest.mark.parametrize('extra,expected', [
    (['--vs'], '--vs needs the run directories'),
    (['--vs', '{missing}'], 'does not exist'),
    (['--vs', '{b}', '--metric', 'NMI'], 'logged no NMI'),
    (['--vs', '{b}', '--select_by', 'R@x'], "'R@x'"),
])
def test_bad_input_is_one_line_and_status_2(tmp_path, capsys, extra, expected):
    a = write_run(tmp_path / 'a', [0.1, 0.2, 0.3])
    b = write_run(tmp_path / 'b', [0.1, 0.2, 0.3])
    flags = [f.format(b=b, missing=str(tmp_path / 'missing')) for f in extra]
    assert compare.main([a] + flags) == 2
    err = [l for l in capsys.readouterr().err.splitlines() if l.strip()]
    assert len(err) == 1 and err[0].startswith('error: ') and expected in err[0], err


def test_too_many_relabelings_is_refused():
    with pytest.raises(compare.UserError, match='relabelings'):
        compare.permutation_test(list(range(15)), list(range(15)))


def test_mixed_selection_rules_are_flagged(tmp_path, capsys):
    a = write_run(tmp_path / 'a', [0.1, 0.2, 0.3], val_r1=[0.3, 0.2, 0.1])
    b = write_run(tmp_path / 'b', [0.1, 0.2, 0.3])
    assert compare.main([a, '--vs', b]) == 0
    out = capsys.readouterr().out
    assert 'others on the test set' in out and 'R@1 10.00 at epoch 5' in out and 'R@1 30.00 at epoch 15' in out
