"""utils/mxnet_compat.py: the old numpy names come back as numpy had them, only where missing, and
the CUDA wheels' libraries are found (or nothing happens without them)."""
import ast
import ctypes
import math
import os
import types
import warnings

import numpy as np
import pytest

from utils import mxnet_compat


def _restored():
    """A module with every legacy name set by the shim (an empty module lacks them all)."""
    fake = types.ModuleType('fake_numpy')
    assert sorted(mxnet_compat.restore_numpy_names(fake)) == sorted(mxnet_compat.legacy_numpy_names())
    return fake


def _old_numpy(name):
    """numpy's own old name where this numpy still has it (1.23.5, with its DeprecationWarning)."""
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        return getattr(np, name, None)


BOOLS = np.array([[True, False, True], [True, True, False]])
INTS = np.array([[3, 1, 2], [1, 5, 0]])

# name -> call on the function; the expected value is what numpy < 2 returned.
CALLS = {
    'alltrue': (lambda f: f(BOOLS, axis=0), np.array([True, False, False])),
    'sometrue': (lambda f: f(BOOLS, axis=1), np.array([True, True])),
    'round_': (lambda f: f(np.array([2.567, -1.234]), 2), np.array([2.57, -1.23])),
    'product': (lambda f: f(INTS, axis=1), np.array([6, 0])),
    'cumproduct': (lambda f: f(np.array([1, 2, 3, 4])), np.array([1, 2, 6, 24])),
    'msort': (lambda f: f(INTS), np.array([[1, 1, 0], [3, 5, 2]])),
    'in1d': (lambda f: f(np.array([[1, 2], [3, 4]]), [2, 3]), np.array([False, True, True, False])),
    'trapz': (lambda f: f(np.array([1.0, 2.0, 4.0]), x=np.array([0.0, 1.0, 3.0])), 7.5),
}


@pytest.mark.parametrize('name', sorted(CALLS))
def test_restored_functions_compute_what_numpy_did(name):
    call, expected = CALLS[name]
    got = call(getattr(_restored(), name))
    np.testing.assert_array_equal(got, expected)
    assert np.shape(got) == np.shape(expected)
    old = _old_numpy(name)
    if old is not None:
        np.testing.assert_array_equal(call(old), got)


def test_msort_returns_a_sorted_copy():
    a = INTS.copy()
    _restored().msort(a)
    np.testing.assert_array_equal(a, INTS)


@pytest.mark.parametrize('name,builtin', [('bool', bool), ('int', int), ('float', float),
                                          ('complex', complex), ('object', object), ('str', str),
                                          ('unicode', str)])
def test_type_aliases_are_the_builtins(name, builtin):
    assert getattr(_restored(), name) is builtin
    if np.lib.NumpyVersion(np.__version__) < '1.24.0':
        assert _old_numpy(name) is builtin
    assert np.zeros(2, dtype=getattr(_restored(), name)).dtype == np.zeros(2, dtype=builtin).dtype


@pytest.mark.parametrize('name,value', [('Inf', math.inf), ('Infinity', math.inf),
                                        ('infty', math.inf), ('PINF', math.inf),
                                        ('NINF', -math.inf), ('PZERO', 0.0), ('NZERO', -0.0)])
def test_constants(name, value):
    got = getattr(_restored(), name)
    assert got == value and math.copysign(1, got) == math.copysign(1, value)
    old = _old_numpy(name)
    if old is not None:
        assert old == got and math.copysign(1, old) == math.copysign(1, got)


@pytest.mark.parametrize('name', ['NaN', 'NAN'])
def test_nan_constants(name):
    assert math.isnan(getattr(_restored(), name))


@pytest.mark.parametrize('name', ['mirr', 'npv', 'pmt', 'pv', 'rate'])
def test_financial_functions_raise_when_called_as_numpy_did(name):
    """mxnet.numpy.fallback reads them at import; numpy 1.20..1.26 answered with a stub that raises."""
    with pytest.raises(RuntimeError, match='numpy_financial'):
        getattr(_restored(), name)(0.1, [1, 2])
    old = _old_numpy(name)
    if old is not None:
        with pytest.raises(RuntimeError):
            old(0.1, [1, 2])


def test_compat_basestring_is_str():
    """mxnet's np.pad checks isinstance(mode, np.compat.basestring)."""
    compat = _restored().compat
    assert compat.basestring is str and isinstance('edge', compat.basestring)


def test_names_numpy_has_are_left_alone():
    fake = types.ModuleType('fake_numpy')
    fake.alltrue = sentinel = object()
    fake.bool = np.bool_
    restored = mxnet_compat.restore_numpy_names(fake)
    assert fake.alltrue is sentinel and fake.bool is np.bool_
    assert 'alltrue' not in restored and 'bool' not in restored and 'msort' in restored


@pytest.mark.skipif(np.__version__ != '1.23.5', reason='the reference numpy (Python 3.11)')
def test_inert_on_the_reference_numpy():
    before = dict(vars(np))
    assert mxnet_compat.RESTORED == []
    assert mxnet_compat.restore_numpy_names(np) == []
    assert dict(vars(np)) == before


def test_every_name_mxnet_reads_at_import_is_there():
    """What the import of mxnet reads (mxnet.numpy.utils and .fallback), on whatever numpy runs."""
    for name in ('PZERO', 'NZERO', 'NINF', 'PINF', 'NAN', 'NaN', 'bool', 'alltrue', 'msort',
                 'mirr', 'npv', 'pmt', 'ppmt', 'pv', 'rate', 'in1d', 'trapz'):
        assert not mxnet_compat._lacks(np, name), name
    import mxnet.numpy
    assert mxnet.numpy.PINF == math.inf


# ---- the CUDA libraries of the nvidia-*-cu11 wheels ----

WHEEL_FILES = {  # folder -> files as the wheels lay them out (plus decoys that must not load)
    'cuda_runtime': ['libcudart.so.11.0'],
    'nvtx': ['libnvToolsExt.so.1'],
    'cublas': ['libcublas.so.11', 'libcublasLt.so.11', 'libnvblas.so.11'],
    'cufft': ['libcufft.so.10', 'libcufftw.so.10'],
    'curand': ['libcurand.so.10'],
    'cusolver': ['libcusolver.so.11'],
    'cuda_nvrtc': ['libnvrtc.so.11.2', 'libnvrtc-builtins.so.11.8'],
    'cudnn': ['libcudnn.so.8', 'libcudnn_ops_infer.so.8'],
    'nccl': ['libnccl.so.2'],
}
LOAD_ORDER = ['cuda_runtime/lib/libcudart.so.11.0', 'nvtx/lib/libnvToolsExt.so.1',
              'cublas/lib/libcublasLt.so.11', 'cublas/lib/libcublas.so.11',
              'cufft/lib/libcufft.so.10', 'curand/lib/libcurand.so.10',
              'cusolver/lib/libcusolver.so.11', 'cuda_nvrtc/lib/libnvrtc.so.11.2',
              'cudnn/lib/libcudnn.so.8', 'nccl/lib/libnccl.so.2']


def _site_packages(root, files=WHEEL_FILES):
    for folder, names in files.items():
        lib = root / 'nvidia' / folder / 'lib'
        lib.mkdir(parents=True)
        for name in names:
            (lib / name).write_bytes(b'')
    return root


def test_cuda_libraries_found_in_dependency_order(tmp_path):
    site = _site_packages(tmp_path / 'site-packages')
    empty = tmp_path / 'elsewhere'
    empty.mkdir()
    expected = [str(site / 'nvidia' / p) for p in LOAD_ORDER]
    assert mxnet_compat.cuda_library_files([str(empty), str(site)]) == expected
    calls = []
    loaded = mxnet_compat.preload_cuda_libraries([str(empty), str(site)],
                                                 load=lambda p, mode: calls.append((p, mode)))
    assert loaded == expected and calls == [(p, ctypes.RTLD_GLOBAL) for p in expected]


def test_first_directory_on_the_path_wins(tmp_path):
    first = _site_packages(tmp_path / 'a', {'cuda_runtime': ['libcudart.so.11.0']})
    _site_packages(tmp_path / 'b')
    files = mxnet_compat.cuda_library_files([str(first), str(tmp_path / 'b')])
    assert files[0] == str(first / 'nvidia/cuda_runtime/lib/libcudart.so.11.0')
    assert files[1] == str(tmp_path / 'b/nvidia/nvtx/lib/libnvToolsExt.so.1')


def test_nothing_loaded_without_the_wheels(tmp_path):
    (tmp_path / 'nvidia' / 'unrelated').mkdir(parents=True)
    calls = []
    assert mxnet_compat.preload_cuda_libraries([str(tmp_path), ''], load=calls.append) == []
    assert calls == []


def test_a_library_that_fails_to_load_is_skipped(tmp_path):
    site = _site_packages(tmp_path)

    def load(path, mode):
        if 'cudnn' in path:
            raise OSError('libcudnn.so.8: wrong ELF class')
    loaded = mxnet_compat.preload_cuda_libraries([str(site)], load=load)
    assert len(loaded) == len(LOAD_ORDER) - 1 and not any('cudnn' in p for p in loaded)


# ---- every entry point imports the shim before anything that imports mxnet ----

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NEEDS_IT = ('mxnet', 'gluoncv', 'mxboard', 'data', 'model', 'loss', 'metrics', 'runner', 'tools', 'utils',
            'main', 'loss_bench')
# tools/embed_onnx.py runs an exported network with ONNX Runtime alone: it imports no MXNet on purpose;
# bench/pil_resize.py measures such a network through it
WITHOUT_MXNET = {'tools/embed_onnx.py', 'bench/pil_resize.py'}


def _entry_points():
    paths = ['main.py', 'tests/conftest.py']
    for folder in ('tools', 'bench'):
        for name in sorted(os.listdir(os.path.join(REPO, folder))):
            path = '%s/%s' % (folder, name)
            if name.endswith('.py') and path not in WITHOUT_MXNET:
                with open(os.path.join(REPO, path)) as f:
                    if "__name__ == '__main__'" in f.read():
                        paths.append(path)
    return paths


@pytest.mark.parametrize('path', _entry_points())
def test_entry_point_imports_the_shim_first(path):
    with open(os.path.join(REPO, path)) as f:
        tree = ast.parse(f.read())
    first = None
    for node in tree.body:
        names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                 [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else [])
        if any(n.split('.')[0] in NEEDS_IT for n in names):
            first = names[0]
            break
    assert first == 'utils.mxnet_compat', '%s: first import of the project or mxnet is %s' % (path, first)
