"""metrics.query_expansion (QE / DBA) against a brute-force NumPy reference, loop by loop."""
import numpy as np
import pytest

from tests.test_evaluation import _data as _int_data
from tests.test_evaluation import brute_force
from metrics.evaluation import evaluate
from metrics.query_expansion import evaluate_expanded, expand_queries_database, suffix


def _unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def ref_neighbours(q, x, k, exclude_self):
    """Per query the k most similar rows of x (float64 inner product), ties to the lower index."""
    out = []
    for i in range(len(q)):
        sims = [(-float(np.dot(q[i].astype(np.float64), x[j])), j) for j in range(len(x))
                if not (exclude_self and j == i)]
        out.append([j for _, j in sorted(sims)[:k]])
    return out


def ref_expand(x, q, qe, dba):
    """The issue's definitions written directly: DBA within the database, then QE over it."""
    self_retrieval = q is None
    x = x.astype(np.float64)
    q = x.copy() if self_retrieval else q.astype(np.float64)
    if dba:
        nb = ref_neighbours(x, x, dba, True)
        x = _unit(np.array([x[i] + x[nb[i]].sum(0) for i in range(len(x))]))
    if qe:
        nb = ref_neighbours(q, x, qe, self_retrieval)
        q = _unit(np.array([q[i] + x[nb[i]].sum(0) for i in range(len(q))]))
    return q, x


def _data(n=70, d=8, classes=9, seed=0):
    rng = np.random.RandomState(seed)
    labels = rng.randint(0, classes, n)
    centres = rng.randn(classes, d)
    x = _unit(centres[labels] + 0.9 * rng.randn(n, d)).astype(np.float32)
    return x, labels


@pytest.mark.parametrize('qe,dba', [(1, 0), (0, 1), (2, 0), (0, 4), (4, 2), (2, 4), (1, 1)])
@pytest.mark.parametrize('block', [None, 7])
def test_self_retrieval_expansion_matches_reference(qe, dba, block):
    x, _ = _data()
    q, xa = expand_queries_database(x, None, qe, dba, block_size=block)
    rq, rx = ref_expand(x, None, qe, dba)
    np.testing.assert_allclose(xa, rx, atol=2e-6)
    np.testing.assert_allclose(q, rq, atol=2e-6)
    # A skipped step leaves its side untouched.
    if not dba:
        np.testing.assert_array_equal(xa, x)
    if not qe:
        np.testing.assert_array_equal(q, x)


@pytest.mark.parametrize('qe,dba', [(3, 0), (0, 2), (2, 3)])
def test_query_gallery_expansion_matches_reference(qe, dba):
    g, _ = _data(n=50, seed=1)
    qs, _ = _data(n=23, seed=2)
    q, xa = expand_queries_database(g, qs, qe, dba, block_size=5)
    rq, rx = ref_expand(g, qs, qe, dba)
    np.testing.assert_allclose(xa, rx, atol=2e-6)
    np.testing.assert_allclose(q, rq, atol=2e-6)


def test_ties_go_to_the_lower_index():
    # Query row 0 has similarity 0 with rows 1..4 alike: the two lowest rows must be taken.
    x = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [0, -1, 0], [0, 0, -1]], dtype=np.float32)
    q, _ = expand_queries_database(x, None, qe=2)
    np.testing.assert_allclose(q[0], _unit(np.array([[1.0, 1, 1]]))[0], atol=1e-6)
    rq, _ = ref_expand(x, None, 2, 0)
    np.testing.assert_allclose(q, rq, atol=1e-6)


@pytest.mark.parametrize('kind', ['spread', 'ties'])
def test_evaluate_with_separate_queries_matches_brute_force(kind):
    # evaluate(queries=...): row i of the queries searches every database row but row i.
    emb, labels = _int_data(kind, seed=0)
    queries, _ = _int_data(kind, seed=1)
    ks = (1, 2, 4, 100)
    result = evaluate(emb, labels, ('recall', 'map_at_r', 'r_precision'), ks, queries=queries,
                      block_size=13)
    expected = brute_force(queries, labels, emb, labels, ks, True)
    for key, value in expected.items():
        assert result[key] == pytest.approx(value, abs=1e-12), key


@pytest.mark.parametrize('qe,dba', [(2, 0), (0, 1), (0, 2), (2, 2), (1, 4)])
def test_metrics_of_expanded_self_retrieval(qe, dba):
    x, labels = _data(n=80)
    result = evaluate_expanded(x, labels, qe, dba, recallk=(1, 2, 4))
    q, xa = expand_queries_database(x, None, qe, dba)       # checked against ref_expand above
    # The (expanded) queries search the (augmented) database, each without its own row: with
    # DBA alone the queries are the original items.
    tag = suffix(qe, dba)
    exact = evaluate(xa, labels, ('recall', 'map_at_r', 'r_precision'), (1, 2, 4), queries=q)
    assert result == {k + tag: v for k, v in exact.items()}
    # DBA maps mutual neighbours to one vector; float32 GEMM scores of such copies may differ in
    # the last bit, which orders a tie that float64 sees as exact: hence the tolerance.
    expected = brute_force(q, labels, xa, labels, (1, 2, 4), True)
    for key, value in expected.items():
        assert result[key + tag] == pytest.approx(value, abs=3e-3), key
    wrong = brute_force(x, labels, xa, labels, (1, 2, 4), True) if qe else \
        brute_force(xa, labels, xa, labels, (1, 2, 4), True)
    assert any(abs(wrong[k] - result[k + tag]) > 3e-3 for k in wrong)


def test_dba_copies_of_a_neighbourhood_are_equal():
    # Mutual nearest neighbours (k = 1) get one vector, bitwise, whatever the summation order.
    x, _ = _data(n=200, d=5)
    _, xa = expand_queries_database(x, None, dba=1)
    sims = x @ x.T
    np.fill_diagonal(sims, -np.inf)
    nn = sims.argmax(1)
    mutual = [i for i in range(len(x)) if nn[nn[i]] == i and i < nn[i]]
    assert mutual
    for i in mutual:
        assert np.array_equal(xa[i], xa[nn[i]])


def test_no_expansion_is_the_plain_evaluation():
    x, labels = _data(n=60)
    plain = brute_force(x, labels, x, labels, (1, 2), True)
    result = evaluate_expanded(x, labels, 0, 0, recallk=(1, 2))
    for key, value in plain.items():
        assert result[key] == pytest.approx(value, abs=1e-9)


def test_query_gallery_metrics():
    from metrics.evaluation import evaluate_query_gallery
    g, gl = _data(n=50, seed=3)
    qs, ql = _data(n=30, seed=3)
    metrics = ('recall', 'map_at_r', 'r_precision')
    result = evaluate_expanded(g, gl, 2, 1, metrics, recallk=(1, 5), query_emb=qs, query_labels=ql)
    q, xa = expand_queries_database(g, qs, 2, 1)         # checked against ref_expand above
    exact = evaluate_query_gallery(q, ql, xa, gl, (1, 5), metrics)
    assert result == {k + '_qe_dba': v for k, v in exact.items()}
    # QE alone makes no copies (see test_metrics_of_expanded_self_retrieval), so float32 and the
    # float64 reference agree exactly.
    result = evaluate_expanded(g, gl, 2, 0, metrics, recallk=(1, 5), query_emb=qs, query_labels=ql)
    rq, rx = ref_expand(g, qs, 2, 0)
    expected = brute_force(rq, ql, rx, gl, (1, 5), False)
    for key, value in expected.items():
        assert result[key + '_qe'] == pytest.approx(value, abs=1e-9), key
    plain = brute_force(qs, ql, g, gl, (1, 5), False)
    assert any(abs(plain[k] - result[k + '_qe']) > 1e-3 for k in plain)


def test_bad_k():
    x, _ = _data(n=5)
    with pytest.raises(ValueError, match='qe'):
        expand_queries_database(x, None, qe=5)
    with pytest.raises(ValueError, match='dba'):
        expand_queries_database(x, None, dba=-1)


def test_evaluate_cli_flags(tmp_path, capsys):
    from tools.evaluate import main as cli
    x, labels = _data(n=40)
    np.save(str(tmp_path / 'e.npy'), x)
    np.save(str(tmp_path / 'l.npy'), labels)
    base = ['--embeddings', str(tmp_path / 'e.npy'), '--labels', str(tmp_path / 'l.npy'),
            '--metrics', 'recall,map_at_r', '--recallk', '1']
    assert cli(base + ['--qe', '1', '--json', str(tmp_path / 'o.json')]) == 0
    import json
    got = json.loads((tmp_path / 'o.json').read_text())
    assert got == pytest.approx(dict(evaluate(x, labels, ('recall', 'map_at_r'), (1,)),
                                     **evaluate_expanded(x, labels, 1, 0, recallk=(1,),
                                                         metrics=('recall', 'map_at_r'))))
    assert set(got) == {'R@1', 'MAP@R', 'R@1_qe', 'MAP@R_qe'}
    capsys.readouterr()
    for flags, message in ((['--qe', '-1'], '--qe and --dba must be >= 0'),
                           (['--dba', '40'], 'dba 40 asks for more neighbours than the 39')):
        assert cli(base + flags) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith('error: ') and message in err[0], err


def test_nan_is_refused():
    x, _ = _data(n=10)
    x[3, 0] = np.nan
    with pytest.raises(ValueError, match='NaN'):
        expand_queries_database(x, None, qe=2)
