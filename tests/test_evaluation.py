"""metrics.evaluation and the tools.evaluate CLI against brute-force references."""
import functools
import itertools
import json
import os
import subprocess
import sys
from fractions import Fraction
from math import comb

import mxnet as mx
import numpy as np
import pytest
from sklearn.metrics import normalized_mutual_info_score

from metrics.clustering import kmeans_assign, pairwise_f1
from metrics.evaluation import evaluate, evaluate_query_gallery

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RETRIEVAL = ('recall', 'map_at_r', 'r_precision')
KS = (1, 2, 4, 8, 1000)


def _distances(q, g):
    return ((q.astype(np.float64)[:, None, :] - g.astype(np.float64)[None, :, :]) ** 2).sum(-1)


def _database(d, ql, gl, i, self_retrieval):
    """Query i's distances (float64) and same-label flags over its database (self excluded)."""
    keep = np.arange(len(gl)) != (i if self_retrieval else -1)
    return d[i, keep], gl[keep] == ql[i]


@functools.lru_cache(maxsize=None)
def _orders(m, g):
    """Every distinct arrangement of g same-label and m - g other-label items in a tie group of m,
    as a (C(m, g), m) 0/1 array.  Each stands for g! (m - g)! of the m! orders, so a uniform
    average over the rows is the average over every order of the group."""
    assert comb(m, g) <= 200000, (m, g)
    rel = np.zeros((comb(m, g), m), dtype=np.int64)
    for row, places in enumerate(itertools.combinations(range(m), g)):
        rel[row, list(places)] = 1
    return rel


def brute_force(q, ql, g, gl, ks, self_retrieval):
    """The metrics averaged over every order of each tie group, from a float64 distance matrix.

    Per query the database is sorted by distance and cut into groups of equal distance.  Every
    arrangement of each group that can affect a metric is enumerated (_orders): the group of the
    nearest same-label item when it starts before the largest K (Recall@K), and every group with
    a place among the R nearest (MAP@R, R-precision), whose hits before it are the same in every
    order.  By linearity the expectation of MAP@R is the sum of these per-group averages."""
    d = _distances(q, g)
    hits = {k: 0.0 for k in ks}
    aps, rps = [], []
    for i in range(len(ql)):
        dist, same = _database(d, ql, gl, i, self_retrieval)
        order = np.argsort(dist, kind='stable')
        dist, same = dist[order], same[order].astype(np.int64)
        r = int(same.sum())
        if r == 0:
            continue
        starts = np.flatnonzero(np.r_[True, dist[1:] != dist[:-1]])
        sizes = np.diff(np.r_[starts, len(dist)])
        groups = [(p, m, int(same[p:p + m].sum()), int(same[:p].sum())) for p, m in zip(starts, sizes)
                  if p < max(max(ks), r)]
        p, m, n_same, _ = next(grp for grp in groups + [(np.inf, 0, 1, 0)] if grp[2] > 0)
        if p < max(ks):
            first = p + 1 + np.argmax(_orders(m, n_same), axis=1)      # rank of the nearest hit
            for k in ks:
                hits[k] += np.mean(first <= k)
        ap = rp = 0.0
        for p, m, n_same, before in groups:
            if p >= r:
                break
            rel = _orders(m, n_same)
            place = np.arange(p + 1, p + m + 1)
            inside = place <= r
            ap += np.mean(((before + np.cumsum(rel, axis=1)) * rel / place)[:, inside].sum(axis=1))
            rp += np.mean(rel[:, inside].sum(axis=1))
        aps.append(ap / r)
        rps.append(rp / r)
    out = {'R@%d' % k: hits[k] / len(ql) for k in ks}
    out['MAP@R'] = float(np.mean(aps))
    out['RP'] = float(np.mean(rps))
    return out


def _textbook(rel, ks):
    """Recall@K hits (P, len(ks)), AP@R (P,) and R-precision (P,) of P fully ordered 0/1
    relevance lists (P, n) of one query."""
    r = int(rel[0].sum())
    first = np.argmax(rel, axis=1) + 1
    top = rel[:, :r]
    return (first[:, None] <= np.asarray(ks)[None, :],
            (np.cumsum(top, axis=1) / np.arange(1, r + 1) * top).sum(axis=1) / r, top.mean(axis=1))


def _averaged(q, ql, g, gl, ks, self_retrieval, orders):
    """The metrics of every query with a same-label item, each averaged over the relevance lists
    (P, n) that ``orders(dist, same)`` gives for its database."""
    d = _distances(q, g)
    hits = np.zeros(len(ks))
    aps, rps = [], []
    for i in range(len(ql)):
        dist, same = _database(d, ql, gl, i, self_retrieval)
        if not same.any():
            continue
        found, ap, rp = _textbook(orders(dist, same), ks)
        hits += found.mean(axis=0)
        aps.append(ap.mean())
        rps.append(rp.mean())
    out = {'R@%d' % k: hits[j] / len(ql) for j, k in enumerate(ks)}
    out.update({'MAP@R': float(np.mean(aps)), 'RP': float(np.mean(rps))})
    return out


def every_order(q, ql, g, gl, ks, self_retrieval):
    """The metrics averaged over all n! orders of the database (tiny cases only): each order,
    sorted stably by float64 distance, is one way of breaking the ties, and each tie order
    arises equally often."""
    def orders(dist, same):
        perms = np.array(list(itertools.permutations(range(len(dist)))))
        ordered = np.take_along_axis(perms, np.argsort(dist[perms], axis=1, kind='stable'), axis=1)
        return same[ordered].astype(np.int64)
    return _averaged(q, ql, g, gl, ks, self_retrieval, orders)


def fixed_order(q, ql, g, gl, ks, self_retrieval, same_first):
    """The metrics with one fixed tie rule: same-label items first (optimistic) or last
    (pessimistic, this code's rule before ties were averaged)."""
    def orders(dist, same):
        return same[np.lexsort((~same if same_first else same, dist))].astype(np.int64)[None, :]
    return _averaged(q, ql, g, gl, ks, self_retrieval, orders)


def _assert_same(result, expected):
    assert set(result) == set(expected)
    for key in expected:
        assert isinstance(result[key], float)
        assert result[key] == pytest.approx(expected[key], abs=1e-12), key


def _data(kind, n=90, d=4, n_classes=12, seed=0):
    """Integer-valued embeddings with class structure, so float32 scores are exact and the
    float64 reference sees the same ties.  'spread': values up to about +-60, few ties;
    'ties': values in -2..2, many exact ties.  Labels include three singleton classes."""
    rng = np.random.RandomState(seed)
    labels = rng.randint(0, n_classes, size=n)
    labels[:3] = [-1, -2, -3]
    if kind == 'ties':
        emb = rng.randint(-2, 3, size=(n, d))
    else:
        centres = rng.randint(-40, 41, size=(n_classes + 3, d))
        emb = centres[np.unique(labels, return_inverse=True)[1]] + rng.randint(-20, 21, (n, d))
    return emb.astype(np.float32), labels


@pytest.fixture
def fast_path_only(monkeypatch):
    """Fail if the numpy path falls back to the full argpartition; record the group sizes."""
    import metrics.retrieval as ev
    sizes = []
    group_min = ev._group_min

    def spy(a, g):
        sizes.append(g)
        return group_min(a, g)

    def no_fallback(*args):
        raise AssertionError('fell back to _stats_plain')

    monkeypatch.setattr(ev, '_group_min', spy)
    monkeypatch.setattr(ev, '_stats_plain', no_fallback)
    return sizes


@pytest.mark.parametrize('kind', ['spread', 'ties'])
def test_retrieval_matches_brute_force(kind):
    emb, labels = _data(kind)
    expected = brute_force(emb, labels, emb, labels, KS, True)
    _assert_same(evaluate(emb, labels, metrics=RETRIEVAL, recallk=KS), expected)


@pytest.mark.parametrize('kind,n,d,coarse', [pytest.param('spread', 3000, 8, True, marks=pytest.mark.slow),
                                          ('ties', 1000, 6, False)])
def test_grouped_thresholds_match_brute_force(kind, n, d, coarse, fast_path_only):
    # Many small classes and small K: the candidate thresholds come from minima over groups of
    # 16 columns (recall), and at n = 3000 over coarser groups of those (MAP@R).
    emb, labels = _data(kind, n=n, d=d, n_classes=n // 5)
    ks = (1, 2, 4, 8)
    expected = brute_force(emb, labels, emb, labels, ks, True)
    _assert_same(evaluate(emb, labels, metrics=RETRIEVAL, recallk=ks, block_size=64), expected)
    assert 16 in fast_path_only
    assert any(1 < g < 16 for g in fast_path_only) == coarse


def test_fallback_matches_brute_force(monkeypatch):
    import metrics.retrieval as ev
    monkeypatch.setattr(ev, '_MAX_CANDIDATE_FRACTION', 0.0)
    emb, labels = _data('ties')
    _assert_same(evaluate(emb, labels, metrics=RETRIEVAL, recallk=KS, block_size=16),
                 brute_force(emb, labels, emb, labels, KS, True))


def _chance(k_values, size=10, classes=10):
    """Exact chance values of identical embeddings (classes x size), from counts of arrangements
    (Fractions): a query's database holds g = size - 1 same-label items among n = size*classes - 1,
    each set of g places equally likely."""
    n, g = size * classes - 1, size - 1
    total = comb(n, g)
    out = {'R@%d' % k: 1 - Fraction(comb(n - g, k), comb(n, k)) for k in k_values}
    # place r holds a hit preceded by h - 1 hits: C(r - 1, h - 1) C(n - r, g - h) arrangements
    out['MAP@R'] = sum(Fraction(comb(r - 1, h - 1) * comb(n - r, g - h) * h, r * total)
                       for r in range(1, g + 1) for h in range(1, g + 1)) / g
    out['RP'] = Fraction(g, n)
    return {key: float(v) for key, v in out.items()}


@pytest.mark.parametrize('path', ['numpy', 'fallback', 'mxnet'])
def test_identical_embeddings_score_chance(path, monkeypatch, capsys):
    """Every distance ties: a collapsed model scores exactly chance (R@1 = 9/99; the optimistic
    rule gave 1, the pessimistic one 0), and the warning blames a collapse."""
    import metrics.retrieval as ev
    if path == 'fallback':
        monkeypatch.setattr(ev, '_MAX_CANDIDATE_FRACTION', -1.0)     # every block
    labels = np.repeat(np.arange(10), 10)
    ks = (1, 2, 4, 8, 90, 91)
    res = evaluate(np.ones((100, 8), dtype=np.float32), labels, metrics=RETRIEVAL, recallk=ks,
                   ctx=mx.cpu() if path == 'mxnet' else None, block_size=32)
    expected = _chance(ks)
    assert expected['R@1'] == pytest.approx(9 / 99, abs=1e-15) and expected['R@91'] == 1.0
    _assert_same(res, expected)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('warning: 100 of 100 queries') and 'collapsed' in err[0]


def _tiny(seed, n, n_classes=3, levels=3):
    """1- or 2-d integer points on a small grid: small tie groups everywhere."""
    rng = np.random.RandomState(seed)
    emb = rng.randint(0, levels, size=(n, 1 + seed % 2)).astype(np.float32)
    return emb, rng.randint(0, n_classes, size=n)


def _straddles(q, ql, g, gl, ks, self_retrieval):
    """Whether some query has a tie group mixing labels across a K, and one across its R."""
    d = _distances(q, g)
    across_k = across_r = False
    for i in range(len(ql)):
        dist, same = _database(d, ql, gl, i, self_retrieval)
        r = int(same.sum())
        for value in np.unique(dist):
            tie = dist == value
            if not (same[tie].any() and (~same[tie]).any()):
                continue
            before, m = int(np.count_nonzero(dist < value)), int(np.count_nonzero(tie))
            across_k |= any(before < k < before + m for k in ks)
            across_r |= before < r < before + m
    return across_k and across_r


TINY_KS = (1, 2, 3, 5)


@functools.lru_cache(maxsize=None)
def _tiny_cases():
    """[(q, ql, g, gl, self_retrieval), every_order's metrics]: 7 points, self-retrieval, and
    3 queries against a gallery of 6 (sharing points with the queries: distance-0 ties)."""
    out = []
    for seed in range(8):
        emb, labels = _tiny(seed, 7)
        for case in ((emb, labels, emb, labels, True), (emb[:3], labels[:3], emb[1:], labels[1:], False)):
            expected = every_order(*case[:4], TINY_KS, case[4])
            _assert_same(brute_force(*case[:4], TINY_KS, case[4]), expected)
            out.append((case, expected))
    return out


@pytest.mark.parametrize('path', ['numpy', 'fallback', 'mxnet'])
@pytest.mark.parametrize('block', [None, 2])
def test_expected_value_over_every_order(path, block, monkeypatch):
    """Tiny cases, self-retrieval and query/gallery: the closed form equals the average of the
    textbook metrics over all n! orders of the database, and so does brute_force (which the
    larger tests use).  Tie groups mix labels across K and across R."""
    import metrics.retrieval as ev
    if path == 'fallback':
        monkeypatch.setattr(ev, '_MAX_CANDIDATE_FRACTION', -1.0)     # every block
    ctx = mx.cpu() if path == 'mxnet' else None
    straddled = 0
    for case, expected in _tiny_cases():
        q, ql, g, gl, self_retrieval = case
        if self_retrieval:
            res = evaluate(g, gl, metrics=RETRIEVAL, recallk=TINY_KS, ctx=ctx, block_size=block)
        else:
            res = evaluate_query_gallery(q, ql, g, gl, TINY_KS, metrics=RETRIEVAL, ctx=ctx,
                                         block_size=block)
        _assert_same(res, expected)
        straddled += _straddles(q, ql, g, gl, TINY_KS, self_retrieval)
    assert straddled >= 4


def test_untied_embeddings_score_as_before(capsys):
    """Without ties every tie rule agrees: the scores are those of the fixed orders (the
    pessimistic one being this code's rule before ties were averaged), and no warning."""
    emb, labels = _data('spread')
    emb = emb + 1e-3 * np.arange(len(emb), dtype=np.float32)[:, None]
    res = evaluate(emb, labels, metrics=RETRIEVAL, recallk=KS, block_size=16)
    for same_first in (False, True):
        _assert_same(res, fixed_order(emb, labels, emb, labels, KS, True, same_first))
    assert capsys.readouterr().err == ''
    # Not vacuous: with ties the two fixed orders part, and the average lies between them.
    emb, labels = _data('ties')
    res = evaluate(emb, labels, metrics=RETRIEVAL, recallk=KS)
    low, high = (fixed_order(emb, labels, emb, labels, KS, True, f) for f in (False, True))
    assert all(low[k] <= res[k] <= high[k] for k in res) and low['R@1'] < res['R@1'] < high['R@1']


def tied_queries(n_tied, n):
    """n items (n even, 4 x n_tied <= n) of which exactly n_tied queries have their nearest same-label item
    tied with an other-label item; groups sit 10 apart on their own axis, offsets along axis 0.

    A tied group of 4: A at 0 and B at +2 (one class), D1 at -2 and D2 at -3 (another): A's nearest
    same-label item B ties with D1 (both at 2); B, D1 (D2 at 1) and D2 are decided without a tie.
    The rest are pairs at 0 and +2. Integer coordinates: the float32 distances are exact."""
    groups = n_tied + (n - 4 * n_tied) // 2
    emb, labels = [], []
    for g in range(groups):
        offsets = [(0, 0), (2, 0), (-2, 1), (-3, 1)] if g < n_tied else [(0, 0), (2, 0)]
        for offset, cls in offsets:
            x = np.zeros(groups + 1, dtype=np.float32)
            x[0], x[g + 1] = offset, 10
            emb.append(x)
            labels.append(2 * g + cls)
    return np.array(emb), np.array(labels)


@pytest.mark.parametrize('n_tied,warned', [(11, True), (9, False)])
def test_the_tie_warning_starts_just_above_one_percent(capsys, n_tied, warned):
    """11 of 1000 queries decided by a tie (1.1%) warn, 9 (0.9%) do not."""
    emb, labels = tied_queries(n_tied, 1000)
    capsys.readouterr()
    res = evaluate(emb, labels, metrics=('recall',), recallk=(1, 2))
    assert res['R@1'] < 1 and res['R@2'] == 1.0       # the ties decide rank 1 only, whatever their convention
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert (len(err) == 1 and err[0].startswith('warning: ')) if warned else not err, err


def test_dba_copies_of_one_class_change_nothing(capsys):
    """DBA maps mutual neighbours to one vector; when they share a label, the tie is within one
    class: the metrics are those of any order, and no warning."""
    from metrics.query_expansion import expand_queries_database
    rng = np.random.RandomState(3)
    labels = np.repeat(np.arange(8), 6)
    emb = 4 * np.eye(8)[labels] + rng.randn(48, 8)
    emb = (emb / np.linalg.norm(emb, axis=1, keepdims=True)).astype(np.float32)
    _, xa = expand_queries_database(emb, None, dba=1)
    copies = [(i, j) for i in range(48) for j in range(i) if np.array_equal(xa[i], xa[j])]
    assert len(copies) >= 10 and all(labels[i] == labels[j] for i, j in copies)
    ks = (1, 2, 4, 8)
    res = evaluate(xa, labels, metrics=RETRIEVAL, recallk=ks, queries=emb)
    low, high = (fixed_order(emb, labels, xa, labels, ks, True, f) for f in (False, True))
    _assert_same(low, high)
    _assert_same(res, low)
    assert res['R@1'] < 1.0
    assert capsys.readouterr().err == ''


def test_ties_are_averaged():
    # 1-d points; the query at 0 has a same-label item and an other-label item both at distance 1.
    emb = np.array([[0.0], [1.0], [-1.0], [5.0]], dtype=np.float32)
    labels = np.array([0, 0, 1, 1])
    res = evaluate(emb, labels, metrics=RETRIEVAL, recallk=(1, 2))
    # Query 0: the tie at d=1 puts its same-label item first in half the orders -> R@1 1/2, R@2 1.
    # Query 1: neighbour 0 (same) -> hit.
    # Query 2: neighbours 0 (d=1), 1 (d=4), 3 (d=36, same) -> rank 3.
    # Query 3: neighbours 1 (d=16), 0, 2 (same) -> rank 3.
    assert res['R@1'] == 0.375 and res['R@2'] == 0.5
    # R = 1 for everybody, so MAP@R = RP = the mean chance that the nearest is same-label.
    assert res['MAP@R'] == 0.375 and res['RP'] == 0.375


def _tie_queries(n_tied, m=200):
    """m 1-d queries of label 0 against a gallery of label 0 at 1 and label 1 at -1: a query at 0
    ties the two (which decides R@1 and MAP@R), one at 0.5 does not."""
    q = np.where(np.arange(m) < n_tied, 0.0, 0.5).astype(np.float32)[:, None]
    return q, np.zeros(m, dtype=np.int64), np.array([[1.0], [-1.0]], np.float32), np.array([0, 1])


@pytest.mark.parametrize('n_tied,warns,collapse', [(2, False, False), (3, True, False),
                                                  (100, True, False), (101, True, True)])
def test_tie_warning_thresholds(n_tied, warns, collapse, capsys):
    """200 queries: more than 1% (TIE_WARN_FRACTION) tied warns, more than half
    (COLLAPSE_WARN_FRACTION, "most") asks about a collapse."""
    import metrics.retrieval as ev
    assert (ev.TIE_WARN_FRACTION, ev.COLLAPSE_WARN_FRACTION) == (0.01, 0.5)
    for metrics in (('recall',), ('map_at_r',)):
        res = evaluate_query_gallery(*_tie_queries(n_tied), recallk=(1,), metrics=metrics)
        assert list(res.values()) == [pytest.approx(1 - n_tied / 400.0, abs=1e-12)]
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == warns
        if warns:
            assert err[0].startswith('warning: %d of 200 queries (%.1f%%)' % (n_tied, n_tied / 2.0))
            assert ('collapsed' in err[0]) == collapse


@pytest.mark.parametrize('path', ['numpy', 'fallback', 'mxnet'])
def test_tie_beyond_every_k_is_not_counted(path, monkeypatch, capsys):
    # An item of another class ties at the nearest same-label distance, but 3 others are strictly
    # closer: R@1 and R@2 are 0 in every order, so the tie decides nothing, on every path (the
    # numpy path does not even count it).
    import metrics.retrieval as ev
    if path == 'fallback':
        monkeypatch.setattr(ev, '_MAX_CANDIDATE_FRACTION', -1.0)     # every block
    ctx = mx.cpu() if path == 'mxnet' else None
    q, ql, g, gl = _tie_queries(200)
    g = np.concatenate([g, [[0.5], [0.5], [-0.5]]]).astype(np.float32)
    gl = np.concatenate([gl, [1, 1, 1]])
    assert evaluate_query_gallery(q, ql, g, gl, (1, 2), metrics=('recall',), ctx=ctx) == \
        {'R@1': 0.0, 'R@2': 0.0}
    assert capsys.readouterr().err == ''
    assert evaluate_query_gallery(q, ql, g, gl, (4,), metrics=('recall',), ctx=ctx) == {'R@4': 0.5}
    assert 'warning: 200 of 200' in capsys.readouterr().err


def test_only_the_tie_at_the_deciding_distance_is_counted(capsys):
    # R = 3: the nearest two (labels 0 and 1) tie at d = 1, but the R-th neighbour (d = 4) is
    # untied, so MAP@R (whose value the tie does change) reports no tie; Recall@1 does.
    q = np.zeros((200, 1), dtype=np.float32)
    g = np.array([[1.0], [-1.0], [2.0], [3.0]], dtype=np.float32)
    gl = np.array([0, 1, 0, 0])
    res = evaluate_query_gallery(q, np.zeros(200, dtype=np.int64), g, gl, metrics=('map_at_r',))
    assert res['MAP@R'] == pytest.approx((1 / 1 + 2 / 3 + 1 / 2 + 2 / 3) / 6, abs=1e-12)
    assert capsys.readouterr().err == ''
    evaluate_query_gallery(q, np.zeros(200, dtype=np.int64), g, gl, (1,), metrics=('recall',))
    assert 'warning: 200 of 200' in capsys.readouterr().err


def test_large_k_and_singletons():
    emb, labels = _data('spread', n=20)
    res = evaluate(emb, labels, metrics=('recall',), recallk=(19, 50))
    # With K >= n - 1 every query with another same-label item scores; singletons never do.
    n_with_pos = sum(np.count_nonzero(labels == l) > 1 for l in labels)
    assert res['R@19'] == res['R@50'] == n_with_pos / 20.0 < 1.0


@pytest.mark.parametrize('kind', ['spread', 'ties'])
def test_block_size_and_mxnet_branch_agree(kind):
    emb, labels = _data(kind, n=300, n_classes=40)
    one_block = evaluate(emb, labels, metrics=RETRIEVAL, recallk=KS, block_size=300)
    _assert_same(evaluate(emb, labels, metrics=RETRIEVAL, recallk=KS, block_size=7), one_block)
    _assert_same(evaluate(mx.nd.array(emb), mx.nd.array(labels), metrics=RETRIEVAL, recallk=KS,
                          block_size=7, ctx=mx.cpu()), one_block)


@pytest.mark.parametrize('kind', ['spread', 'ties'])
def test_query_gallery_matches_brute_force(kind):
    emb, labels = _data(kind, n=120)
    q, ql, g, gl = emb[:50], labels[:50], emb[50:], labels[50:]
    ql[0] = 999  # a query whose label is not in the gallery never scores
    expected = brute_force(q, ql, g, gl, (1, 5, 100), False)
    _assert_same(evaluate_query_gallery(q, ql, g, gl, (1, 5, 100), metrics=RETRIEVAL,
                                        block_size=9), expected)
    _assert_same(evaluate_query_gallery(q, ql, g, gl, (1, 5, 100), metrics=RETRIEVAL,
                                        ctx=mx.cpu()), expected)


def test_pairwise_f1_matches_pair_count():
    rng = np.random.RandomState(1)
    labels = rng.randint(0, 6, size=40)
    clusters = rng.randint(0, 5, size=40)
    tp = fp = fn = 0
    for i in range(40):
        for j in range(i + 1, 40):
            same_c, same_l = clusters[i] == clusters[j], labels[i] == labels[j]
            tp += same_c and same_l
            fp += same_c and not same_l
            fn += same_l and not same_c
    p, r = tp / (tp + fp), tp / (tp + fn)
    assert pairwise_f1(labels, clusters) == pytest.approx(2 * p * r / (p + r), abs=1e-12)
    assert pairwise_f1(labels, labels) == 1.0


def test_nmi_and_f1_use_one_clustering(monkeypatch):
    import metrics.clustering as ev
    calls = []

    def counted(*args, **kwargs):
        calls.append(args)
        return kmeans_assign(*args, **kwargs)

    monkeypatch.setattr(ev, 'kmeans_assign', counted)
    emb, labels = _data('spread')
    res = evaluate(emb, labels, metrics=('nmi', 'f1'), seed=3)
    assert len(calls) == 1
    clusters = kmeans_assign(emb, len(np.unique(labels)), seed=3)
    assert set(res) == {'NMI', 'F1'}
    assert res['NMI'] == pytest.approx(normalized_mutual_info_score(labels, clusters), abs=1e-12)
    assert res['F1'] == pytest.approx(pairwise_f1(labels, clusters), abs=1e-12)
    assert 0.0 < res['F1'] < res['NMI'] < 1.0


def test_well_separated_classes_score_one():
    rng = np.random.RandomState(2)
    labels = np.repeat(np.arange(5), 6)
    emb = (10 * np.eye(5)[labels] + 0.01 * rng.randn(30, 5)).astype(np.float32)
    res = evaluate(emb, labels, metrics=('recall', 'map_at_r', 'r_precision', 'nmi', 'f1'))
    assert res == {'R@1': 1.0, 'R@2': 1.0, 'R@4': 1.0, 'R@8': 1.0, 'MAP@R': 1.0, 'RP': 1.0,
                   'NMI': 1.0, 'F1': 1.0}


def test_bad_arguments():
    emb, labels = _data('spread', n=10)
    with pytest.raises(ValueError, match='unknown metric'):
        evaluate(emb, labels, metrics=('recall', 'accuracy'))
    with pytest.raises(ValueError, match='positive'):
        evaluate(emb, labels, recallk=(0,))
    with pytest.raises(ValueError, match='10 rows but their labels have 9'):
        evaluate(emb, labels[:-1])
    emb[3, 1] = np.nan
    with pytest.raises(ValueError, match='NaN'):
        evaluate(emb, labels)


def _cli(*args):
    return subprocess.run([sys.executable, '-m', 'tools.evaluate'] + list(args), cwd=REPO,
                          capture_output=True, text=True, timeout=60)


def test_cli_end_to_end(tmp_path):
    emb, labels = _data('spread')
    np.save(tmp_path / 'e.npy', emb)
    np.save(tmp_path / 'l.npy', labels)
    out = tmp_path / 'out.json'
    proc = _cli('--embeddings', str(tmp_path / 'e.npy'), '--labels', str(tmp_path / 'l.npy'),
                '--recallk', '1,10,100', '--metrics', 'recall,map_at_r,r_precision,nmi,f1',
                '--json', str(out))
    assert proc.returncode == 0, proc.stderr
    got = json.loads(out.read_text())
    expected = evaluate(emb, labels, metrics=('recall', 'map_at_r', 'r_precision', 'nmi', 'f1'),
                        recallk=(1, 10, 100))
    assert list(got) == ['R@1', 'R@10', 'R@100', 'MAP@R', 'RP', 'NMI', 'F1']
    for key in got:
        assert got[key] == pytest.approx(expected[key], abs=1e-12)
        assert '%.2f' % (100 * got[key]) in proc.stdout

    np.save(tmp_path / 'ql.npy', labels[:30])
    np.save(tmp_path / 'gl.npy', labels[30:])
    np.save(tmp_path / 'qe.npy', emb[:30])
    np.save(tmp_path / 'ge.npy', emb[30:])
    proc = _cli('--query-embeddings', str(tmp_path / 'qe.npy'), '--query-labels',
                str(tmp_path / 'ql.npy'), '--gallery-embeddings', str(tmp_path / 'ge.npy'),
                '--gallery-labels', str(tmp_path / 'gl.npy'), '--recallk', '1,5',
                '--json', str(out))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(out.read_text()) == pytest.approx(
        evaluate_query_gallery(emb[:30], labels[:30], emb[30:], labels[30:], (1, 5)), abs=1e-12)


def test_cli_errors(tmp_path):
    np.save(tmp_path / 'e.npy', np.zeros((5, 3), dtype=np.float32))
    np.save(tmp_path / 'l.npy', np.zeros(4, dtype=np.int64))
    np.save(tmp_path / 'nan.npy', np.full((4, 3), np.nan, dtype=np.float32))
    missing = str(tmp_path / 'missing.npy')
    cases = [
        (['--embeddings', missing, '--labels', str(tmp_path / 'l.npy')],
         '--embeddings: no such file: ' + missing),
        (['--embeddings', str(tmp_path / 'e.npy'), '--labels', str(tmp_path / 'l.npy')],
         '--embeddings has 5 rows but --labels has 4 labels'),
        (['--embeddings', str(tmp_path / 'e.npy'), '--labels', str(tmp_path / 'l.npy'),
          '--recallk', '1,0'], '--recallk must be'),
        (['--embeddings', str(tmp_path / 'nan.npy'), '--labels', str(tmp_path / 'l.npy')],
         'nan.npy: embeddings contain NaN or inf'),
    ]
    for args, message in cases:
        proc = _cli(*args)
        assert proc.returncode == 2
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith('error: ') and message in lines[0], \
            proc.stderr


def test_kmeans_assign_seeding_by_cluster_count(monkeypatch):
    import metrics.clustering as ev
    from sklearn.cluster import KMeans
    emb, labels = _data('spread')
    k = len(np.unique(labels))
    pp = KMeans(n_clusters=k, init='k-means++', n_init=1, random_state=4).fit_predict(emb)
    rand = KMeans(n_clusters=k, init='random', n_init=1, max_iter=10,
                  random_state=4).fit_predict(emb)
    assert not np.array_equal(pp, rand)
    assert np.array_equal(kmeans_assign(emb, k, seed=4), pp)
    monkeypatch.setattr(ev, '_KMEANS_PP_MAX_CLUSTERS', k - 1)
    assert np.array_equal(kmeans_assign(emb, k, seed=4), rand)
