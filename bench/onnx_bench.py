"""Embedding throughput: MXNet against onnxruntime on the exported ONNX model (tools.onnx_export).

    python3 bench/onnx_bench.py [--batch 32] [--rounds 5] [--threads 1]

Models: GoogLeNet at 227 px and ResNet-50 at 224 px (--pooling avg, embed_dim 512, random weights:
the speed does not depend on their values). Three ways to run one forward pass of a (batch, 3, S, S)
float32 batch: (a) MXNet, the hybridised EmbeddingNet (static_alloc), result copied to numpy;
(b) onnxruntime on tools.onnx_export's model; (c) onnxruntime on the same model with every weight
also listed as a graph input, as MXNet's exporter writes it (which keeps onnxruntime from folding
constants). All with --threads threads (MXNet's OpenMP and engine, onnxruntime's intra-op pool,
spinning off), in this one process; each round runs (a), (b), (c) once each in turn (interleaved),
after one warm-up pass of each. Reported: medians over the rounds of the wall time and of the
process's CPU time per batch (the CPU time is the fair figure on a shared machine: other
processes' load lengthens the wall time only), images per CPU second, and the ratios of the
medians, onnxruntime / MXNet, brackets the range of the per-round ratios. The benchmark checks
that (b) and (c) equal (a) to 1e-5.
"""
import argparse
import os
import sys

ARGS = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
ARGS.add_argument('--batch', type=int, default=32)
ARGS.add_argument('--rounds', type=int, default=5)
ARGS.add_argument('--threads', type=int, default=1)
OPTIONS = ARGS.parse_args()
# Before mxnet loads: its OpenMP pool and engine workers.
os.environ['OMP_NUM_THREADS'] = os.environ['MXNET_CPU_WORKER_NTHREADS'] = str(OPTIONS.threads)

import platform  # noqa: E402
import time  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import utils.mxnet_compat  # noqa: F401,E402  (before mxnet: old numpy names on Python 3.12+, CUDA wheels)
import mxnet as mx  # noqa: E402
import numpy as np  # noqa: E402
import onnxruntime  # noqa: E402

from model import get_model  # noqa: E402
from tools.onnx_export import preprocessing_metadata, to_onnx  # noqa: E402

MODELS = (('googlenet', 227), ('resnet50', 224))


def session(model, threads):
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = threads
    options.add_session_config_entry('session.intra_op.allow_spinning', '0')
    options.log_severity_level = 3    # no warning per weight listed as an input (c)
    return onnxruntime.InferenceSession(model.SerializeToString(), options, providers=['CPUExecutionProvider'])


def with_weights_as_inputs(model):
    """A copy of model whose graph also lists every initializer as an input (mx.onnx's output)."""
    from onnx import helper
    copy = type(model)()
    copy.CopyFrom(model)
    copy.graph.input.extend(helper.make_tensor_value_info(w.name, w.data_type, w.dims)
                            for w in copy.graph.initializer)
    return copy


def timed(run):
    """(wall seconds, CPU seconds of this process, result) of run()."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = run()
    return time.perf_counter() - wall, time.process_time() - cpu, out


def bench(backbone, size):
    net = get_model(backbone, 512, False, None, [mx.cpu()])
    x = np.random.RandomState(0).uniform(-2, 2, (OPTIONS.batch, 3, size, size)).astype(np.float32)
    model = to_onnx(net, size, preprocessing_metadata(size, 512))
    ways = {'MXNet': lambda: net(mx.nd.array(x)).asnumpy()}
    for name, m in (('onnxruntime', model), ('onnxruntime, weights as inputs', with_weights_as_inputs(model))):
        s = session(m, OPTIONS.threads)
        ways[name] = lambda s=s: s.run(None, {'data': x})[0]
    reference = ways['MXNet']()
    for name, run in ways.items():
        np.testing.assert_allclose(run(), reference, rtol=0, atol=1e-5, err_msg=name)
    times = {name: [] for name in ways}
    for _ in range(OPTIONS.rounds):
        for name, run in ways.items():
            times[name].append(timed(run)[:2])
    rows = []
    mx_wall, mx_cpu = (np.array([t[i] for t in times['MXNet']]) for i in (0, 1))
    for name, samples in times.items():
        wall, cpu = np.array([t[0] for t in samples]), np.array([t[1] for t in samples])
        ratio = cpu / mx_cpu
        rows.append('| %s %d px | %s | %.3f | %.3f | %.1f | %.2fx (%.2f-%.2f) | %.2fx |'
                    % (backbone, size, name, np.median(wall), np.median(cpu), OPTIONS.batch / np.median(cpu),
                       np.median(cpu) / np.median(mx_cpu), ratio.min(), ratio.max(),
                       np.median(wall) / np.median(mx_wall)))
    return rows


def main():
    print('batch %d, %d rounds, %d thread(s); mxnet %s, onnxruntime %s, Python %s, %s, %d cores, load %s'
          % (OPTIONS.batch, OPTIONS.rounds, OPTIONS.threads, mx.__version__, onnxruntime.__version__,
             platform.python_version(), platform.processor() or platform.machine(), os.cpu_count(),
             ' '.join('%.1f' % v for v in os.getloadavg())))
    print('| model | runtime | wall (s/batch) | CPU (s/batch) | images per CPU s | CPU / MXNet | wall / MXNet |')
    print('|---|---|---|---|---|---|---|')
    for backbone, size in MODELS:
        for row in bench(backbone, size):
            print(row, flush=True)


if __name__ == '__main__':
    main()
