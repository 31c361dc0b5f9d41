"""What MXNet 1.9.1 needs from today's machines, set up before the first ``import mxnet``.

Every entry point (main.py, each tool, bench scripts, tests/conftest.py) imports this module
before anything that imports mxnet, gluoncv or mxboard. It does two things, each only where it is
needed, so that on the reference environment (Python 3.11, numpy 1.23.5, CPU mxnet) it sets
nothing at all.

1. **numpy names.** MXNet 1.9.1 (2022), gluoncv 0.10.5 and mxboard 0.1.0 were written against
   numpy < 1.24. numpy 1.23.5, their last compatible release, has no wheel for Python 3.12 or 3.13,
   so there requirements.txt installs numpy 1.26.4 (3.12) or 2.2.6 (3.13), which have dropped names
   these packages still read, some of them at import time (``mxnet.numpy.utils`` reads ``np.PINF``,
   ``mxnet.numpy.fallback`` reads ``np.alltrue``, ``np.msort``, ``np.mirr``...; ``import mxnet``
   imports both). The names put back, each as numpy's old one was, and only where numpy lacks it:

   - removed in 1.24: the builtin-type aliases ``np.bool``, ``np.int``, ``np.float``,
     ``np.complex``, ``np.object``, ``np.str`` (the builtins themselves) and ``np.unicode`` (str);
     numpy 2 has ``np.bool`` again (as ``np.bool_``) and keeps it;
   - removed in 2.0: the constants ``Inf``, ``Infinity``, ``infty``, ``PINF``, ``NINF``, ``NaN``,
     ``NAN``, ``PZERO``, ``NZERO``; the functions ``alltrue`` (all), ``sometrue`` (any),
     ``round_`` (round), ``product`` (prod), ``cumproduct`` (cumprod), ``msort`` (a sorted copy
     along axis 0); the financial functions (``mirr``, ``npv``...), which numpy < 2 still answered
     with a stub that raises RuntimeError when called (they moved to numpy_financial in 1.20);
   - the module attribute ``np.compat`` (its ``basestring``, which mxnet's ``pad`` checks), no
     longer imported by numpy 2 and removed in 2.3;
   - removed in 2.4: ``in1d`` (isin, flattened) and ``trapz`` (trapezoid). requirements.txt keeps
     numpy below 2.4 anyway: 2.4 breaks mxboard's scalar logging, which no shim here mends.

2. **CUDA libraries from wheels.** The CUDA build (requirements-gpu.txt: mxnet-cu112) links
   against libcudart 11, cuBLAS, cuDNN 8, NCCL 2, cuFFT, cuSOLVER, cuRAND, NVRTC and nvToolsExt,
   which it does not bundle. The ``nvidia-*-cu11`` wheels install them under
   ``site-packages/nvidia/<name>/lib``, a folder the dynamic loader does not search, and setting
   LD_LIBRARY_PATH inside a running process is too late for it. Loading each library once by its
   full path (RTLD_GLOBAL) before mxnet is imported makes the loader reuse it when libmxnet.so
   asks for the same soname. Where the folders are absent (the CPU build) nothing is loaded.
"""
import builtins
import ctypes
import glob
import os
import sys
import types
import warnings

import numpy

_BUILTIN_ALIASES = {"bool": builtins.bool, "int": builtins.int, "float": builtins.float,
                    "complex": builtins.complex, "object": builtins.object, "str": builtins.str,
                    "unicode": builtins.str}
_CONSTANTS = {"Inf": numpy.inf, "Infinity": numpy.inf, "infty": numpy.inf, "PINF": numpy.inf,
              "NINF": -numpy.inf, "NaN": numpy.nan, "NAN": numpy.nan, "PZERO": 0.0, "NZERO": -0.0}
_FINANCIAL = ("fv", "ipmt", "irr", "mirr", "nper", "npv", "pmt", "ppmt", "pv", "rate")


def _msort(a):
    """numpy's msort: a sorted copy of ``a`` along its first axis."""
    b = numpy.array(a, subok=True, copy=True)
    b.sort(0)
    return b


def _in1d(ar1, ar2, assume_unique=False, invert=False, **kwargs):
    """numpy's in1d: ``isin`` of ``ar1`` flattened, a 1-D boolean array."""
    return numpy.isin(numpy.asarray(ar1).ravel(), ar2, assume_unique=assume_unique,
                      invert=invert, **kwargs)


def _expired(name):
    def expired(*args, **kwargs):
        raise RuntimeError("In accordance with NEP 32, the function %s was removed from NumPy "
                           "version 1.20. A replacement for this function is available in the "
                           "numpy_financial library: https://pypi.org/project/numpy-financial" % name)
    expired.__name__ = name
    return expired


def _lacks(module, name):
    # numpy 1.23.5 answers the deprecated aliases through a module __getattr__ with a
    # DeprecationWarning: present, so left alone (and the warning is not shown here).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            getattr(module, name)
        except AttributeError:
            return True
    return False


def legacy_numpy_names():
    """{name: value} of the old numpy names that mxnet, gluoncv and mxboard read, as numpy had them."""
    names = dict(_BUILTIN_ALIASES)
    names.update(_CONSTANTS)
    names.update(alltrue=numpy.all, sometrue=numpy.any, round_=numpy.round, product=numpy.prod,
                 cumproduct=numpy.cumprod, msort=_msort, in1d=_in1d,
                 trapz=getattr(numpy, "trapezoid", None) or numpy.trapz)
    names.update((name, _expired(name)) for name in _FINANCIAL)
    compat = types.ModuleType("numpy.compat", "numpy.compat's Python 2/3 names that mxnet reads")
    compat.basestring = builtins.str
    compat.unicode = builtins.str
    compat.long = builtins.int
    names["compat"] = compat
    return names


def restore_numpy_names(module=numpy):
    """Set on ``module`` each legacy name it lacks; returns the names set (none on numpy 1.23.5)."""
    restored = []
    for name, value in legacy_numpy_names().items():
        if _lacks(module, name):
            setattr(module, name, value)
            restored.append(name)
    return restored


# The libraries libmxnet.so (mxnet-cu112 1.9.1) links against, in an order in which each one's
# own dependencies come first: (folder under site-packages/nvidia, file name pattern).
CUDA_LIBRARIES = (
    ("cuda_runtime", "libcudart.so.11*"),
    ("nvtx", "libnvToolsExt.so.1*"),
    ("cublas", "libcublasLt.so.11*"),
    ("cublas", "libcublas.so.11*"),
    ("cufft", "libcufft.so.10*"),
    ("curand", "libcurand.so.10*"),
    ("cusolver", "libcusolver.so.11*"),
    ("cuda_nvrtc", "libnvrtc.so.11*"),
    ("cudnn", "libcudnn.so.8*"),
    ("nccl", "libnccl.so.2*"),
)


def cuda_library_files(search_dirs):
    """Full paths of the nvidia-*-cu11 wheels' libraries found under ``search_dirs`` (sys.path
    entries), in CUDA_LIBRARIES' load order; the first directory holding a library wins. Empty
    when no such wheel is installed."""
    found = []
    for folder, pattern in CUDA_LIBRARIES:
        for base in search_dirs:
            matches = sorted(glob.glob(os.path.join(base or ".", "nvidia", folder, "lib", pattern)))
            if matches:
                found.append(matches[0])
                break
    return found


def preload_cuda_libraries(search_dirs=None, load=ctypes.CDLL):
    """Load the wheels' CUDA libraries (RTLD_GLOBAL) so that libmxnet.so finds them; returns the
    files loaded. A library that fails to load is left to mxnet's own import error."""
    loaded = []
    for path in cuda_library_files(sys.path if search_dirs is None else search_dirs):
        try:
            load(path, mode=ctypes.RTLD_GLOBAL)
        except OSError:
            continue
        loaded.append(path)
    return loaded


RESTORED = restore_numpy_names()
CUDA_LOADED = preload_cuda_libraries()
