"""metrics.evaluation and the tools.evaluate CLI against brute-force references."""
import json
import os
import subprocess
import sys

import mxnet as mx
import numpy as np
import pytest
from sklearn.metrics import normalized_mutual_info_score

from metrics.clustering import kmeans_assign, pairwise_f1
from metrics.evaluation import evaluate, evaluate_query_gallery

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RETRIEVAL = ('recall', 'map_at_r', 'r_precision')
KS = (1, 2, 4, 8, 1000)


def brute_force(q, ql, g, gl, ks, self_retrieval):
    """Full float64 distance matrix, one full sort per query, pessimistic ties (other label first)."""
    d = ((q.astype(np.float64)[:, None, :] - g.astype(np.float64)[None, :, :]) ** 2).sum(-1)
    hits = {k: 0 for k in ks}
    aps, rps = [], []
    for i in range(len(ql)):
        keep = np.arange(len(gl)) != (i if self_retrieval else -1)
        same = gl[keep] == ql[i]
        rel = same[np.lexsort((same, d[i, keep]))]
        r = int(rel.sum())
        if r == 0:
            continue
        rank = int(np.argmax(rel)) + 1
        for k in ks:
            hits[k] += rank <= k
        top = rel[:r]
        rps.append(top.mean())
        aps.append((np.cumsum(top) / np.arange(1, r + 1) * top).sum() / r)
    out = {'R@%d' % k: hits[k] / len(ql) for k in ks}
    out['MAP@R'] = float(np.mean(aps))
    out['RP'] = float(np.mean(rps))
    return out


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


@pytest.mark.parametrize('ctx', [None, 'cpu'])
def test_collapsed_embeddings_score_at_chance_or_below(ctx, capsys):
    """Every distance ties: a collapsed model must not look good (the optimistic rule gave 1.0),
    and the warning names the share of queries decided by a tie."""
    import mxnet as mx
    labels = np.repeat(np.arange(10), 10)
    res = evaluate(np.ones((100, 8), dtype=np.float32), labels, metrics=RETRIEVAL, recallk=(1, 2, 4, 8, 91),
                   ctx=None if ctx is None else mx.cpu())
    chance_r1 = 9 / 99.0          # a random neighbour shares the label
    assert res['R@1'] <= chance_r1 and res['R@8'] == 0.0 and res['R@91'] == 1.0
    assert res['MAP@R'] <= chance_r1 and res['RP'] <= chance_r1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('warning: 100 of 100 queries')


def test_no_tie_warning_for_distinct_embeddings(capsys):
    emb, labels = _data('spread')
    evaluate(emb.astype(np.float32) + 1e-3 * np.arange(len(emb))[:, None], labels, metrics=RETRIEVAL)
    assert 'warning' not in capsys.readouterr().err


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


def test_ties_are_pessimistic():
    # 1-d points; the query at 0 has a same-label item and an other-label item both at distance 1.
    emb = np.array([[0.0], [1.0], [-1.0], [5.0]], dtype=np.float32)
    labels = np.array([0, 0, 1, 1])
    res = evaluate(emb, labels, metrics=RETRIEVAL, recallk=(1, 2))
    # Query 0: the tie at d=1 puts the other-label item first -> rank 2.  Query 1: neighbours 0
    # (same) -> hit.  Query 2: neighbours 0 (d=1), 1 (d=4), 3 (d=36) -> rank 3.
    # Query 3: neighbours 1 (d=16), 0, 2 -> rank 3.
    assert res['R@1'] == 0.25 and res['R@2'] == 0.5
    # R = 1 for everybody, so MAP@R = RP = fraction of queries whose nearest is same-label.
    assert res['MAP@R'] == 0.25 and res['RP'] == 0.25


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
