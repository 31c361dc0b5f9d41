"""runner/devices.py's GPU check, on the CPU: the compute capability is stubbed, as if the mxnet-cu112
wheel ran on that GPU."""
import os

import pytest

from runner import devices
from utils.errors import UserError


@pytest.fixture
def gpu(monkeypatch):
    """Two GPUs of the capability the test sets, the mxnet-cu112 wheel installed, NVRTC 11.2."""
    state = {'capability': (8, 6), 'nvrtc': (11, 2)}
    monkeypatch.setattr(devices.mx.context, 'num_gpus', lambda: 2)
    monkeypatch.setattr(devices, 'installed_wheel', lambda: True)
    monkeypatch.setattr(devices, 'compute_capability', lambda i: state['capability'])
    monkeypatch.setattr(devices, 'nvrtc_version', lambda: state['nvrtc'])
    monkeypatch.delenv('MXNET_USE_FUSION', raising=False)
    return state


@pytest.mark.parametrize('capability', [(9, 0), (10, 0), (12, 0), (3, 7)])
@pytest.mark.parametrize('flags', [{'gpu_idx': '1'}, {'ctx': 'gpu:1'}, {'ctx': 'gpu:0,gpu:1'}])
def test_no_kernels_for_the_gpu_stops_with_one_line(gpu, capability, flags):
    gpu['capability'] = capability
    with pytest.raises(UserError) as err:
        devices.parse_contexts(**flags)
    line = str(err.value)
    assert '\n' not in line
    assert 'compute capability %d.%d' % capability in line and 'mxnet-cu112' in line
    assert "NVIDIA's MXNet container" in line and 'from source' in line
    assert 'MXNET_USE_FUSION' not in os.environ


@pytest.mark.parametrize('capability', [(5, 0), (5, 2), (6, 1), (7, 0), (7, 5), (8, 0), (8, 6), (8, 7)])
def test_gpus_with_kernels_run_untouched(gpu, capability, capsys):
    gpu['capability'] = capability
    assert [str(c) for c in devices.parse_contexts(gpu_idx='0,1')] == ['gpu(0)', 'gpu(1)']
    assert 'MXNET_USE_FUSION' not in os.environ
    assert capsys.readouterr() == ('', '')


def test_ada_with_an_old_nvrtc_runs_without_fusion(gpu, capsys):
    gpu['capability'] = (8, 9)
    assert [str(c) for c in devices.parse_contexts(ctx='gpu:0')] == ['gpu(0)']
    assert os.environ['MXNET_USE_FUSION'] == '0'
    err = capsys.readouterr().err.strip()
    assert '\n' not in err and '8.9' in err and 'NVRTC 11.2' in err and 'MXNET_USE_FUSION=0' in err


def test_ada_with_nvrtc_11_8_keeps_the_fusion(gpu, capsys):
    gpu['capability'], gpu['nvrtc'] = (8, 9), (11, 8)
    devices.parse_contexts(ctx='gpu:0')
    assert 'MXNET_USE_FUSION' not in os.environ and capsys.readouterr().err == ''


def test_a_fusion_setting_of_the_user_is_kept(gpu, monkeypatch, capsys):
    gpu['capability'] = (8, 9)
    monkeypatch.setenv('MXNET_USE_FUSION', '1')
    devices.parse_contexts(ctx='gpu:0')
    assert os.environ['MXNET_USE_FUSION'] == '1' and capsys.readouterr().err == ''


def test_other_builds_are_not_judged_by_the_wheel(gpu, monkeypatch):
    """A source build or NVIDIA's container may carry sm_90 kernels: only the pip wheel is checked."""
    gpu['capability'] = (9, 0)
    monkeypatch.setattr(devices, 'installed_wheel', lambda: False)
    assert [str(c) for c in devices.parse_contexts(gpu_idx='0')] == ['gpu(0)']


def test_a_driver_that_cannot_be_asked_checks_nothing(gpu):
    gpu['capability'] = None
    assert [str(c) for c in devices.parse_contexts(gpu_idx='0')] == ['gpu(0)']


def test_cpu_runs_ask_no_gpu(gpu, monkeypatch):
    monkeypatch.setattr(devices, 'compute_capability', lambda i: pytest.fail('asked a GPU'))
    assert [str(c) for c in devices.parse_contexts(ctx='cpu:0,cpu:1')] == ['cpu(0)', 'cpu(1)']


def test_this_machine_has_the_cpu_build():
    """The real probes, where there is no GPU: the CPU wheel, and no driver to ask."""
    assert devices.installed_wheel() is False
    if not os.path.exists('/proc/driver/nvidia'):
        assert devices.compute_capability(0) is None
