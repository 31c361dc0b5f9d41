"""dist_sync on loopback: a scheduler, one server and two workers of MXNet's parameter server."""
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import mxnet as mx

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_workers_end_with_equal_parameters(tmp_path):
    env = dict(os.environ, DMLC_PS_ROOT_URI='127.0.0.1', DMLC_PS_ROOT_PORT=str(free_port()), DMLC_NUM_SERVER='1',
               DMLC_NUM_WORKER='2', DMLC_NODE_HOST='127.0.0.1', DMLC_INTERFACE='lo')
    # importing mxnet with DMLC_ROLE scheduler or server runs that role until the workers finish
    # (the shim first, as in every entry point: MXNet 1.9.1 on Python 3.12+ needs it)
    procs = [subprocess.Popen([sys.executable, '-c', 'import utils.mxnet_compat, mxnet'], env=dict(env, DMLC_ROLE=role), cwd=REPO,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for role in ('scheduler', 'server')]
    flags = ['main.py', '--kvstore', 'dist_sync', '--epochs', '2', '--eval_epoch_term', '2', '--batch_size', '40',
             '--num_instances', '8', '--save_dir', str(tmp_path)]
    workers = [subprocess.Popen([sys.executable] + flags, env=dict(env, DMLC_ROLE='worker'), cwd=REPO,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    try:
        # a guard against a hang, not a speed claim: on a loaded machine a run took over 180 s
        outs = [w.communicate(timeout=900)[0] for w in workers]
        assert [w.returncode for w in workers] == [0, 0], outs
        for p in procs:
            p.wait(timeout=30)
    finally:
        for p in procs + workers:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert sum('best: R@1' in out for out in outs) == 1           # only the chief evaluates and logs
    ranks = [mx.nd.load(str(tmp_path / ('model_final.rank%d.params' % r))) for r in (0, 1)]
    trainable = [k for k in ranks[0] if 'running_' not in k]     # BatchNorm statistics stay per worker
    assert len(trainable) > 100
    for key in trainable:
        np.testing.assert_array_equal(ranks[0][key].asnumpy(), ranks[1][key].asnumpy())
    assert os.path.isdir(tmp_path / 'checkpoints' / 'epoch_00002')
