"""Time and peak memory of metrics.evaluation at benchmark scale, next to one fp32 GEMM X.X^T.

Synthetic structured embeddings: unit class centres in d = 512 plus Gaussian noise (per-dimension
std noise/sqrt(d)), each row then unit-normalised.  Sizes of the test splits:
  cars: 8,131 images, 98 classes      cub: 5,924 images, 100 classes
  sop: 60,502 images, 11,316 classes (2 + multinomial, mean 5.3 per class)

Every measurement runs in its own subprocess (worker mode), which loads the embeddings from .npy,
times one call, and reports wall time and its peak RSS (VmHWM from /proc/self/status).  The
measurements of one data set are interleaved over --reps rounds and medians are reported, so
the GEMM and the metrics see the same machine load.

    python3 bench/eval_bench.py --datasets cars,cub --reps 5
    python3 bench/eval_bench.py --datasets sop --reps 3
    python3 bench/eval_bench.py --datasets sop --reps 3 --threads 1
    python3 bench/eval_bench.py --datasets sop --reps 1 \
        --tasks gemm,retrieval-plain,kmeans-default,kmeans-full1,kmeans-mb5
    python3 bench/eval_bench.py --datasets sop --reps 1 --threads 1 \
        --tasks gemm,retrieval,expand-qe4-dba4,qe4-dba4
    python3 bench/eval_bench.py --datasets sop --reps 3 --threads 1 --tasks gemm,recall,retrieval \
        --baseline 3ad607d

--baseline REV also times the metrics of git revision REV (its source copied to a temporary folder,
removed at exit) on every task but gemm: in each round the baseline's worker and ours run one
after the other on the same saved embeddings (which goes first alternates between rounds), and
the table gains the ratio ours / baseline per round (median and range over the rounds).

Tasks qeK-dbaK (either part may be left out, e.g. qe2) time metrics.query_expansion's QE/DBA plus
Recall + MAP@R + RP of the expanded embeddings; expand-qeK-dbaK the expansion alone.
"""
import argparse
import atexit
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
import utils.mxnet_compat  # noqa: F401,E402  (before mxnet: old numpy names on Python 3.12+, CUDA wheels)

# name: (images, classes, noise, recallk).  Noise gives R@1 near published values (~0.7-0.9).
DATASETS = {
    'cars': (8131, 98, 3.0, (1, 2, 4, 8)),
    'cub': (5924, 100, 3.0, (1, 2, 4, 8)),
    'sop': (60502, 11316, 2.3, (1, 10, 100, 1000)),
}
DEFAULT_TASKS = {
    'cars': ('gemm', 'recall', 'retrieval', 'retrieval-plain', 'clustering', 'all'),
    'cub': ('gemm', 'recall', 'retrieval', 'retrieval-plain', 'clustering', 'all'),
    'sop': ('gemm', 'recall', 'retrieval'),
}
RETRIEVAL = ('recall', 'map_at_r', 'r_precision')
ALL = RETRIEVAL + ('nmi', 'f1')


def make_embeddings(n, n_classes, noise, d=512, seed=0):
    """(n, d) float32 unit rows and (n,) int64 labels sorted by class."""
    rng = np.random.RandomState(seed)
    if n >= 4 * n_classes:
        sizes = np.full(n_classes, n // n_classes)
        sizes[:n % n_classes] += 1
    else:
        sizes = 2 + rng.multinomial(n - 2 * n_classes, np.full(n_classes, 1.0 / n_classes))
    labels = np.repeat(np.arange(n_classes), sizes)
    centres = rng.randn(n_classes, d).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    x = np.empty((n, d), dtype=np.float32)
    for lo in range(0, n, 8192):  # chunks keep the float64 randn temporaries small
        hi = min(lo + 8192, n)
        x[lo:hi] = centres[labels[lo:hi]] + (noise / np.sqrt(d)) * rng.randn(hi - lo, d)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x, labels


def vm_hwm_mb():
    """Peak resident set size of this process so far, in MB."""
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith('VmHWM:'):
                return int(line.split()[1]) / 1024.0
    raise RuntimeError('no VmHWM in /proc/self/status')


def _kmeans(kind, max_iter):
    """A clustering function for kmeans-* tasks: (emb, k, seed) -> (n,) cluster ids."""
    from sklearn.cluster import KMeans, MiniBatchKMeans

    def run(emb, k, seed):
        if kind == 'full':
            km = KMeans(n_clusters=k, init='random', n_init=1, max_iter=max_iter,
                        random_state=seed)
        else:
            km = MiniBatchKMeans(n_clusters=k, init='random', n_init=1, batch_size=4096,
                                 max_iter=max_iter, random_state=seed)
        return km.fit_predict(emb)
    return run


def load_baseline(rev):
    """The source tree of git revision rev (metrics/ and utils/) in a temporary folder, removed at exit."""
    root = tempfile.mkdtemp(prefix='eval_baseline_')
    atexit.register(shutil.rmtree, root, True)
    archive = subprocess.run(['git', 'archive', rev, 'metrics', 'utils'], cwd=REPO, capture_output=True)
    if archive.returncode:      # a revision from before metrics/ existed
        archive = subprocess.run(['git', 'archive', rev, 'utils'], cwd=REPO, check=True, capture_output=True)
    subprocess.run(['tar', '-x', '-C', root], input=archive.stdout, check=True)
    return root


def import_evaluation(root):
    """(evaluation, retrieval, clustering) modules: ours, or those of the source tree at root.

    A worker is its own process, so the baseline's tree simply goes first on sys.path.  Before
    the split into metrics/ (git history), utils/evaluation.py played all three parts.
    """
    if root:
        sys.path.insert(0, root)
    if not root or os.path.exists(os.path.join(root, 'metrics', 'retrieval.py')):
        import metrics.clustering as clustering
        import metrics.evaluation as ev
        import metrics.retrieval as retrieval
        return ev, retrieval, clustering
    ev = importlib.import_module('utils.evaluation')
    return ev, ev, ev


def worker(task, data_dir, recallk, module_path=None):
    """Run one task on the saved embeddings; returns a dict for the parent."""
    ev, retrieval, clustering = import_evaluation(module_path)
    emb = np.load(os.path.join(data_dir, 'emb.npy'))
    labels = np.load(os.path.join(data_dir, 'labels.npy'))
    base_mb = vm_hwm_mb()
    result = {}
    start = time.perf_counter()
    cpu_start = time.process_time()
    if task == 'gemm':
        # The same row blocks as evaluate() uses by default, into one reused output buffer:
        # a full n x n result does not fit the memory goal at SOP scale.
        n = emb.shape[0]
        block = max(1, min(n, (1 << 24) // n))
        out = np.empty((block, n), dtype=np.float32)
        for lo in range(0, n, block):
            hi = min(lo + block, n)
            np.dot(emb[lo:hi], emb.T, out=out[:hi - lo])
    elif task.startswith('kmeans-'):
        # e.g. kmeans-full10 = KMeans(init='random', n_init=1, max_iter=10);
        # kmeans-mb5 = MiniBatchKMeans(batch 4096, 5 epochs); kmeans-default = kmeans_assign.
        if task != 'kmeans-default':
            kind = 'full' if task.startswith('kmeans-full') else 'mb'
            clustering.kmeans_assign = _kmeans(kind, int(task[len('kmeans-' + kind):]))
        result = ev.evaluate(emb, labels, metrics=('nmi', 'f1'))
    elif task.startswith(('qe', 'dba', 'expand-')):
        from metrics.query_expansion import evaluate_expanded, expand_queries_database
        ks = dict((part.rstrip('0123456789'), int(part.lstrip('qeadb')))
                  for part in task.replace('expand-', '').split('-'))
        if task.startswith('expand-'):
            expand_queries_database(emb, None, ks.get('qe', 0), ks.get('dba', 0))
        else:
            result = evaluate_expanded(emb, labels, ks.get('qe', 0), ks.get('dba', 0),
                                       RETRIEVAL, recallk)
    else:
        metrics = {'recall': ('recall',), 'retrieval': RETRIEVAL, 'retrieval-plain': RETRIEVAL,
                   'clustering': ('nmi', 'f1'), 'all': ALL}[task]
        if task == 'retrieval-plain':
            # Force the plain path (full compare-and-count plus argpartition) for comparison.
            retrieval._MAX_CANDIDATE_FRACTION = -1.0
        result = ev.evaluate(emb, labels, metrics=metrics, recallk=recallk)
    seconds = time.perf_counter() - start
    return {'seconds': seconds, 'cpu_seconds': time.process_time() - cpu_start,
            'peak_mb': vm_hwm_mb(), 'base_mb': base_mb, 'result': result}


def run_worker(task, data_dir, recallk, threads, module_path=None):
    cmd = [sys.executable, os.path.abspath(__file__), '--worker', task, '--data-dir', data_dir,
           '--recallk', ','.join(map(str, recallk))]
    if module_path:
        cmd += ['--module', module_path]
    env = dict(os.environ)
    if threads:
        env.update(OPENBLAS_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode:
        raise RuntimeError('worker %s failed:\n%s' % (task, proc.stderr))
    return json.loads(proc.stdout.strip().splitlines()[-1])


def machine():
    model = 'unknown'
    with open('/proc/cpuinfo') as f:
        for line in f:
            if line.startswith('model name'):
                model = line.split(':', 1)[1].strip()
                break
    return 'nproc %d, %s, numpy %s, OPENBLAS_CORETYPE=%s' % (
        os.cpu_count(), model, np.__version__, os.environ.get('OPENBLAS_CORETYPE', '(unset)'))


def bench(name, tasks, reps, tmp, threads, baseline=None, rev=''):
    n, n_classes, noise, recallk = DATASETS[name]
    data_dir = os.path.join(tmp, name)
    os.makedirs(data_dir)
    emb, labels = make_embeddings(n, n_classes, noise)
    np.save(os.path.join(data_dir, 'emb.npy'), emb)
    np.save(os.path.join(data_dir, 'labels.npy'), labels)
    del emb, labels
    tag = ' at %s' % rev
    # (label, task, module path): ours, and the baseline's right after (before) it
    contenders = []
    for t in tasks:
        contenders.append((t, t, None))
        if baseline and t != 'gemm':
            contenders.append((t + tag, t, baseline))
    runs = {c[0]: [] for c in contenders}
    for rep in range(reps):
        order = list(contenders)
        if baseline and rep % 2:
            # swap each (ours, baseline) pair, so neither always runs first
            for i in range(len(order) - 1):
                if order[i][0] + tag == order[i + 1][0]:
                    order[i], order[i + 1] = order[i + 1], order[i]
        for label, t, path in order:
            runs[label].append(run_worker(t, data_dir, recallk, threads, path))
            print('  %s rep %d %-24s %7.2f s  cpu %7.1f s  peak %5.0f MB' % (
                name, rep, label, runs[label][-1]['seconds'], runs[label][-1]['cpu_seconds'],
                runs[label][-1]['peak_mb']),
                file=sys.stderr, flush=True)
    print('\n### %s: n = %d, %d classes, d = 512, noise %.1f, %d rep(s), %s, medians\n'
          % (name, n, n_classes, noise, reps,
             '%d BLAS/OpenMP thread(s)' % threads if threads else 'default threads'))
    print('| task | wall (s) | / GEMM | %sCPU (s) | %speak RSS (MB) | RSS after load (MB) | result |'
          % (('ours / baseline | ', 'CPU ours / baseline | ') if baseline else ('', '')))
    print('|---|---|---|%s---|---|---|---|' % ('---|---|' if baseline else ''))
    for label, t, path in contenders:
        sec = [r['seconds'] for r in runs[label]]
        # Ratio per round (the GEMM ran just before, under similar load), then the median.
        ratio = ('%.2f' % np.median([s / g['seconds'] for s, g in zip(sec, runs['gemm'])])
                 if 'gemm' in runs else '-')
        vs = cpu_vs = ''
        if baseline:
            vs = cpu_vs = '| '
            if path is None and t != 'gemm':
                vs, cpu_vs = ('| %.3f (%.3f-%.3f) ' % (np.median(r), min(r), max(r)) for r in (
                    [a[key] / b[key] for a, b in zip(runs[label], runs[label + tag])]
                    for key in ('seconds', 'cpu_seconds')))
        print('| %s | %.2f | %s %s| %.1f %s| %.0f | %.0f | %s |' % (
            label, np.median(sec), ratio, vs, np.median([r['cpu_seconds'] for r in runs[label]]), cpu_vs,
            max(r['peak_mb'] for r in runs[label]), runs[label][-1]['base_mb'],
            ', '.join('%s %.4f' % kv for kv in runs[label][-1]['result'].items())))
    sys.stdout.flush()


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--datasets', default='cars,cub,sop')
    parser.add_argument('--tasks', default=None,
                        help='comma-separated tasks (default: per data set, see DEFAULT_TASKS)')
    parser.add_argument('--reps', type=int, default=3)
    parser.add_argument('--threads', type=int, default=0,
                        help='set OPENBLAS_NUM_THREADS and OMP_NUM_THREADS for the workers '
                             '(default: leave the environment alone)')
    parser.add_argument('--baseline', metavar='REV',
                        help="also time the metrics of this git revision, interleaved with ours")
    parser.add_argument('--worker', help=argparse.SUPPRESS)
    parser.add_argument('--module', help=argparse.SUPPRESS)
    parser.add_argument('--data-dir', help=argparse.SUPPRESS)
    parser.add_argument('--recallk', help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        recallk = tuple(int(k) for k in args.recallk.split(','))
        print(json.dumps(worker(args.worker, args.data_dir, recallk, args.module)))
        return
    baseline = load_baseline(args.baseline) if args.baseline else None
    print('Machine: %s; load average %.1f' % (machine(), os.getloadavg()[0]))
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.datasets.split(','):
            tasks = tuple(args.tasks.split(',')) if args.tasks else DEFAULT_TASKS[name]
            bench(name, tasks, args.reps, tmp, args.threads, baseline, args.baseline)
    print('load average after: %.1f' % os.getloadavg()[0])


if __name__ == '__main__':
    main()
