"""requirements.txt and requirements-gpu.txt, installed with --no-deps: one exact pin per package on
each supported Python, and the GPU file is the CPU file with the CUDA build and its library wheels."""
import os
import re

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYTHONS = ('3.11', '3.12', '3.13')
CUDA_WHEELS = {'nvidia-cuda-runtime-cu11', 'nvidia-cublas-cu11', 'nvidia-cudnn-cu11', 'nvidia-nccl-cu11',
               'nvidia-cufft-cu11', 'nvidia-cusolver-cu11', 'nvidia-curand-cu11', 'nvidia-cuda-nvrtc-cu11',
               'nvidia-nvtx-cu11'}


def _pins(name, python):
    """{package: version} that ``pip install -r name`` installs on ``python``."""
    pins = {}
    with open(os.path.join(REPO, name)) as f:
        for line in f:
            line = line.split('#', 1)[0].strip()
            if not line:
                continue
            req = Requirement(line)
            if req.marker is not None and not req.marker.evaluate({'python_version': python,
                                                                    'python_full_version': python + '.0'}):
                continue
            specs = list(req.specifier)
            assert len(specs) == 1 and specs[0].operator == '==', '%s: %r is not one exact pin' % (name, line)
            key = canonicalize_name(req.name)
            assert key not in pins, '%s: %s pinned twice on Python %s' % (name, key, python)
            pins[key] = specs[0].version
    return pins


@pytest.mark.parametrize('python', PYTHONS)
def test_every_package_once_and_exactly(python):
    pins = _pins('requirements.txt', python)
    for needed in ('mxnet', 'numpy', 'gluoncv', 'mxboard', 'protobuf', 'tensorboard', 'onnx', 'onnxruntime'):
        assert needed in pins, (python, needed)
    assert pins['protobuf'] == '3.20.3'             # mxboard's generated protos need protobuf 3
    assert re.match(r'(1\.|2\.[0-3]\.)', pins['numpy'])     # numpy 2.4 breaks mxboard's logging


def test_the_reference_python_keeps_the_reference_pins():
    pins = _pins('requirements.txt', '3.11')
    assert (pins['numpy'], pins['scipy'], pins['scikit-learn'], pins['matplotlib']) == \
        ('1.23.5', '1.11.4', '1.3.2', '3.8.4')


@pytest.mark.parametrize('python', PYTHONS)
def test_the_gpu_file_is_the_cpu_file_with_the_cuda_build(python):
    cpu, gpu = _pins('requirements.txt', python), _pins('requirements-gpu.txt', python)
    assert gpu.pop('mxnet-cu112') == cpu.pop('mxnet')
    assert {name: gpu.pop(name) for name in CUDA_WHEELS if name in gpu}.keys() == CUDA_WHEELS
    assert gpu == cpu
