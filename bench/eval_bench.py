"""Time and peak memory of utils.evaluation at benchmark scale, next to one fp32 GEMM X.X^T.

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
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

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


def worker(task, data_dir, recallk):
    """Run one task on the saved embeddings; returns a dict for the parent."""
    import utils.evaluation as ev
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
            ev.kmeans_assign = _kmeans(kind, int(task[len('kmeans-' + kind):]))
        result = ev.evaluate(emb, labels, metrics=('nmi', 'f1'))
    else:
        metrics = {'recall': ('recall',), 'retrieval': RETRIEVAL, 'retrieval-plain': RETRIEVAL,
                   'clustering': ('nmi', 'f1'), 'all': ALL}[task]
        if task == 'retrieval-plain':
            # Force the plain path (full compare-and-count plus argpartition) for comparison.
            ev._MAX_CANDIDATE_FRACTION = -1.0
        result = ev.evaluate(emb, labels, metrics=metrics, recallk=recallk)
    seconds = time.perf_counter() - start
    return {'seconds': seconds, 'cpu_seconds': time.process_time() - cpu_start,
            'peak_mb': vm_hwm_mb(), 'base_mb': base_mb, 'result': result}


def run_worker(task, data_dir, recallk, threads):
    cmd = [sys.executable, os.path.abspath(__file__), '--worker', task, '--data-dir', data_dir,
           '--recallk', ','.join(map(str, recallk))]
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


def bench(name, tasks, reps, tmp, threads):
    n, n_classes, noise, recallk = DATASETS[name]
    data_dir = os.path.join(tmp, name)
    os.makedirs(data_dir)
    emb, labels = make_embeddings(n, n_classes, noise)
    np.save(os.path.join(data_dir, 'emb.npy'), emb)
    np.save(os.path.join(data_dir, 'labels.npy'), labels)
    del emb, labels
    runs = {t: [] for t in tasks}
    for rep in range(reps):
        for t in tasks:
            runs[t].append(run_worker(t, data_dir, recallk, threads))
            print('  %s rep %d %-16s %7.2f s  cpu %7.1f s  peak %5.0f MB' % (
                name, rep, t, runs[t][-1]['seconds'], runs[t][-1]['cpu_seconds'],
                runs[t][-1]['peak_mb']),
                file=sys.stderr, flush=True)
    print('\n### %s: n = %d, %d classes, d = 512, noise %.1f, %d rep(s), %s, medians\n'
          % (name, n, n_classes, noise, reps,
             '%d BLAS/OpenMP thread(s)' % threads if threads else 'default threads'))
    print('| task | wall (s) | / GEMM | CPU (s) | peak RSS (MB) | RSS after load (MB) | result |')
    print('|---|---|---|---|---|---|---|')
    for t in tasks:
        sec = [r['seconds'] for r in runs[t]]
        # Ratio per round (the GEMM ran just before, under similar load), then the median.
        ratio = ('%.2f' % np.median([s / g['seconds'] for s, g in zip(sec, runs['gemm'])])
                 if 'gemm' in runs else '-')
        print('| %s | %.2f | %s | %.1f | %.0f | %.0f | %s |' % (
            t, np.median(sec), ratio, np.median([r['cpu_seconds'] for r in runs[t]]),
            max(r['peak_mb'] for r in runs[t]), runs[t][-1]['base_mb'],
            ', '.join('%s %.4f' % kv for kv in runs[t][-1]['result'].items())))
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
    parser.add_argument('--worker', help=argparse.SUPPRESS)
    parser.add_argument('--data-dir', help=argparse.SUPPRESS)
    parser.add_argument('--recallk', help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        recallk = tuple(int(k) for k in args.recallk.split(','))
        print(json.dumps(worker(args.worker, args.data_dir, recallk)))
        return
    print('Machine: %s' % machine())
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.datasets.split(','):
            tasks = tuple(args.tasks.split(',')) if args.tasks else DEFAULT_TASKS[name]
            bench(name, tasks, args.reps, tmp, args.threads)


if __name__ == '__main__':
    main()
