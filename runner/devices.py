"""Devices and distributed training: --ctx / --gpu_idx, the kvstore, and this process's rank."""
import os
import sys
import threading

import mxnet as mx

from utils.errors import UserError, first_line


def parse_contexts(ctx=None, gpu_idx=None):
    """Contexts from ``--ctx cpu | cpu:0,cpu:1 | gpu:0,gpu:1`` or the official alias ``--gpu_idx 0,1``."""
    if gpu_idx is not None and str(gpu_idx).strip().lower() not in ('', 'none'):
        if ctx:
            raise UserError('give --ctx or --gpu_idx, not both')
        try:
            ids = [int(i) for i in str(gpu_idx).split(',')]
        except ValueError:
            raise UserError('--gpu_idx expects GPU ids like 0 or 0,1, got %r' % gpu_idx) from None
        spec = [('gpu', i) for i in ids]
        flag = '--gpu_idx %s' % gpu_idx
    else:
        spec = []
        for part in (ctx or 'cpu').split(','):
            kind, _, index = part.strip().lower().partition(':')
            if kind not in ('cpu', 'gpu') or (index and not index.isdigit()):
                raise UserError('--ctx expects cpu, cpu:0,cpu:1 or gpu:0,gpu:1, got %r' % ctx)
            spec.append((kind, int(index or 0)))
        flag = '--ctx %s' % ctx
    if len(set(spec)) != len(spec):
        raise UserError('%s names a device twice' % flag)
    gpus = [i for kind, i in spec if kind == 'gpu']
    available = mx.context.num_gpus() if gpus else 0
    if any(i >= available for i in gpus):
        raise UserError('%s: MXNet sees %d GPU(s); a GPU run needs requirements-gpu.txt (mxnet-cu112) '
                        'and CUDA 11.2' % (flag, available))
    return [mx.gpu(i) if kind == 'gpu' else mx.cpu(i) for kind, i in spec]


# --kvstore values MXNet 1.9.1 creates
KVSTORES = ('device', 'local', 'nccl', 'dist_sync', 'dist_async', 'dist_sync_device', 'dist_async_device',
            'dist_device_sync')
_DMLC = ('DMLC_ROLE', 'DMLC_PS_ROOT_URI', 'DMLC_PS_ROOT_PORT', 'DMLC_NUM_SERVER', 'DMLC_NUM_WORKER')


def create_kvstore(name, timeout=300.0):
    """(kvstore for gluon.Trainer, rank, number of workers). ``dist_*`` joins MXNet's parameter server,
    whose addresses come from the DMLC_* environment variables that MXNet's launcher sets.

    Joining waits inside MXNet (ps-lite) until the scheduler and every server and worker have
    registered, without a word and without end when one of them never comes: this says what it
    waits for, and a watchdog thread ends the process with one line and status 2 after ``timeout``
    seconds (--dist_timeout)."""
    if name not in KVSTORES:
        raise UserError('unknown --kvstore %r; choose one of %s' % (name, ', '.join(KVSTORES)))
    if not name.startswith('dist'):
        return name, 0, 1
    hint = "launch with MXNet's tools/launch.py or set %s" % ', '.join(_DMLC)
    missing = [v for v in _DMLC if v not in os.environ]
    if missing:
        raise UserError('--kvstore %s needs a parameter server, but %s %s not set: %s'
                        % (name, ', '.join(missing), 'is' if len(missing) == 1 else 'are', hint))
    if not 0 < timeout < float('inf'):
        raise UserError('--dist_timeout must be a positive number of seconds, got %s' % timeout)
    waiting = ('the scheduler at %s:%s, %s server(s) and %s worker(s) (DMLC_*)'
               % tuple(os.environ[v] for v in _DMLC[1:]))
    print('--kvstore %s: waiting for %s to join' % (name, waiting), flush=True)
    joined = threading.Event()

    def give_up():
        if not joined.wait(timeout):
            print('error: --kvstore %s: %s did not all join within %g s (--dist_timeout); is the scheduler '
                  'running? %s' % (name, waiting, timeout, hint), file=sys.stderr, flush=True)
            os._exit(2)     # the main thread is stuck inside MXNet, where no exception reaches it

    threading.Thread(target=give_up, name='dist_timeout', daemon=True).start()
    try:
        kv = mx.kv.create(name)
    except mx.base.MXNetError as exc:
        raise UserError('--kvstore %s: cannot join the parameter server (%s); %s'
                        % (name, first_line(exc), hint)) from exc
    finally:
        joined.set()
    return kv, kv.rank, kv.num_workers


def start_kvstore(trainer):
    """Set up ``trainer``'s kvstore and wait until this worker holds rank 0's initial parameters.
    Call it once, before the first step() and after a forward pass (every shape known).

    gluon.Trainer does this setup inside its first step(), right before it pushes that step's
    gradients. A dist kvstore pulls the initial values asynchronously, on engine variables of its
    own, so the gradient push may overtake the pull; the server then answers the late pull with
    the first round's summed gradients (no optimiser runs there), which the worker takes as its
    weights, and the workers train apart from then on (tests/test_distributed.py failed so).
    Waiting for the pulls before any push closes the race."""
    trainer._init_kvstore()
    trainer._init_params()
    mx.nd.waitall()
