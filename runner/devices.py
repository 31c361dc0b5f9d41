"""Devices and distributed training: --ctx / --gpu_idx, whether the installed MXNet can run on the
GPUs named, the kvstore, and this process's rank."""
import ctypes
import importlib.metadata
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
        raise UserError('%s: MXNet sees %d GPU(s); a GPU run needs requirements-gpu.txt (mxnet-cu112 and '
                        'the CUDA 11 library wheels) and an NVIDIA driver' % (flag, available))
    for i in gpus:
        check_gpu(i)
    return [mx.gpu(i) if kind == 'gpu' else mx.cpu(i) for kind, i in spec]


# The pip wheel mxnet-cu112 1.9.1 carries kernels for these compute capabilities only, and no PTX
# that a newer GPU could compile: a GPU runs it when a kernel of its own major version and an equal
# or lower minor version is there.
WHEEL = 'mxnet-cu112'
WHEEL_KERNELS = ((5, 0), (6, 0), (7, 0), (8, 0), (8, 6))
INSTEAD = ("NVIDIA's MXNet container (24.06: MXNet 1.9.1, CUDA 12.4) or MXNet 1.9.1 built from source "
           "with CUDA 11.8 for that architecture")


def installed_wheel():
    """True when the MXNet imported is the pip wheel mxnet-cu112 (not a source build or a container's)."""
    try:
        importlib.metadata.version(WHEEL)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def _cuda_call(lib, name, *args):
    return getattr(lib, name)(*args) == 0


def compute_capability(gpu_id):
    """(major, minor) of GPU ``gpu_id`` from the NVIDIA driver (libcuda), None where it cannot be asked."""
    try:
        cuda = ctypes.CDLL('libcuda.so.1')
    except OSError:
        return None
    device, major, minor = ctypes.c_int(), ctypes.c_int(), ctypes.c_int()
    # CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75, _MINOR = 76
    if (_cuda_call(cuda, 'cuInit', 0) and _cuda_call(cuda, 'cuDeviceGet', ctypes.byref(device), gpu_id)
            and _cuda_call(cuda, 'cuDeviceGetAttribute', ctypes.byref(major), 75, device)
            and _cuda_call(cuda, 'cuDeviceGetAttribute', ctypes.byref(minor), 76, device)):
        return major.value, minor.value
    return None


def nvrtc_version():
    """(major, minor) of the NVRTC MXNet compiles its fused operators with, None without one."""
    try:
        nvrtc = ctypes.CDLL('libnvrtc.so.11.2')   # the soname of every NVRTC 11.x, the wheel's or the system's
    except OSError:
        return None
    major, minor = ctypes.c_int(), ctypes.c_int()
    if _cuda_call(nvrtc, 'nvrtcVersion', ctypes.byref(major), ctypes.byref(minor)):
        return major.value, minor.value
    return None


def check_gpu(gpu_id):
    """Stop with one line when the mxnet-cu112 wheel has no kernels for GPU ``gpu_id`` (compute capability
    below 5.0, or 9.0 and up: H100 and newer), rather than at the first operator with "no kernel image
    is available"; for 8.9 (RTX 40xx, L4, L40) with an NVRTC older than 11.8, which cannot compile for
    it, turn MXNet's runtime-compiled operator fusion off (MXNET_USE_FUSION=0) unless already set, and
    say so. Nothing is checked for other MXNet builds, or where the driver cannot be asked."""
    if not installed_wheel():
        return
    capability = compute_capability(gpu_id)
    if capability is None:
        return
    major, minor = capability
    if not any(k_major == major and k_minor <= minor for k_major, k_minor in WHEEL_KERNELS):
        raise UserError('GPU %d has compute capability %d.%d, for which the %s wheel has no kernels '
                        '(it has %s); use %s' % (gpu_id, major, minor, WHEEL,
                                                 ', '.join('%d.%d' % k for k in WHEEL_KERNELS), INSTEAD))
    nvrtc = nvrtc_version()
    if capability == (8, 9) and (nvrtc or (0, 0)) < (11, 8) and 'MXNET_USE_FUSION' not in os.environ:
        os.environ['MXNET_USE_FUSION'] = '0'
        print('GPU %d has compute capability 8.9, which NVRTC %s cannot compile for: running with '
              'MXNET_USE_FUSION=0 (unfused operators); nvidia-cuda-nvrtc-cu11==11.8.89 '
              '(requirements-gpu.txt) keeps the fusion'
              % (gpu_id, '%d.%d' % nvrtc if nvrtc else '(none found)'), file=sys.stderr, flush=True)


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
