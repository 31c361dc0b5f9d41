"""R@1 and MAP@R of runs' saved test embeddings with and without QE / DBA, as a markdown table.

    python3 bench/qe_dba_report.py RUN_DIR [RUN_DIR ...] [--ks 1,2,4]

Each RUN_DIR is a main.py --save_dir trained with --save_embeddings (self-retrieval test split).
Per run and K: no expansion, QE K, DBA K, and both (metrics.query_expansion).
"""
import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import utils.mxnet_compat  # noqa: F401,E402  (before mxnet: old numpy names on Python 3.12+, CUDA wheels)

from metrics.query_expansion import evaluate_expanded  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('runs', nargs='+')
    parser.add_argument('--ks', default='1,2,4')
    args = parser.parse_args()
    ks = [int(k) for k in args.ks.split(',')]
    print('| run | K | R@1 | R@1 QE | R@1 DBA | R@1 QE+DBA | MAP@R | MAP@R QE | MAP@R DBA | '
          'MAP@R QE+DBA |')
    print('|---|---|---|---|---|---|---|---|---|---|')
    for run in args.runs:
        folder = os.path.join(run, 'embeddings')
        emb = np.load(os.path.join(folder, 'test_embeddings.npy'))
        labels = np.load(os.path.join(folder, 'test_labels.npy'))
        plain = evaluate_expanded(emb, labels, 0, 0, ('recall', 'map_at_r'), (1,))
        for k in ks:
            cells = {}
            for qe, dba, tag in ((k, 0, '_qe'), (0, k, '_dba'), (k, k, '_qe_dba')):
                r = evaluate_expanded(emb, labels, qe, dba, ('recall', 'map_at_r'), (1,))
                cells[tag] = (r['R@1' + tag], r['MAP@R' + tag])
            print('| %s | %d | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f |' % (
                (os.path.basename(os.path.normpath(run)), k, 100 * plain['R@1'])
                + tuple(100 * cells[t][0] for t in ('_qe', '_dba', '_qe_dba'))
                + (100 * plain['MAP@R'],) + tuple(100 * cells[t][1] for t in ('_qe', '_dba', '_qe_dba'))))


if __name__ == '__main__':
    main()
