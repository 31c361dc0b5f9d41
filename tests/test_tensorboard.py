"""`tensorboard --logdir RUN`, the line every run ends with, serves the run's curves from the project's
own environment (requirements.txt pins tensorboard beside mxboard's protobuf 3.20.3)."""
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

from utils.events import read_scalars

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# the environment's own program; tensorboard cannot be imported beside mxboard in one process
TENSORBOARD = os.path.join(os.path.dirname(sys.executable), 'tensorboard')


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _get(port, path, **query):
    url = 'http://127.0.0.1:%d%s?%s' % (port, path, urllib.parse.urlencode(query))
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read().decode())


def _wait_for_tags(port, proc, log, expected, deadline):
    """{run: {tag: ...}} once the server has read every tag of the run's event files; fails at the deadline."""
    tags = None
    while True:
        if proc.poll() is not None:
            pytest.fail('tensorboard exited with status %d: %s' % (proc.returncode, open(log).read()[-2000:]))
        try:
            tags = _get(port, '/data/plugin/scalars/tags')
            if sorted(tag for run in tags.values() for tag in run) == sorted(expected):
                return tags
        except (urllib.error.URLError, ConnectionError, OSError):
            pass
        if time.monotonic() > deadline:
            pytest.fail('tensorboard served %s, not the tags of the event files, within the time allowed: %s'
                        % (tags, open(log).read()[-2000:]))
        time.sleep(0.5)


@pytest.mark.slow
def test_tensorboard_serves_the_curves_of_a_finished_run(tmp_path):
    assert os.path.exists(TENSORBOARD), ('tensorboard is not installed beside %s: pip install --no-deps '
                                         '-r requirements.txt' % sys.executable)
    run = tmp_path / 'run'
    done = subprocess.run([sys.executable, 'main.py', '--epochs', '2', '--eval_epoch_term', '1',
                           '--save_dir', str(run)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert 'logs: tensorboard --logdir %s' % run in done.stdout
    expected = read_scalars(str(run))
    assert expected.get('loss') and expected.get('metric/R1')

    port, log = _free_port(), str(tmp_path / 'tensorboard.log')
    with open(log, 'w') as out:
        proc = subprocess.Popen([TENSORBOARD, '--logdir', str(run), '--host', '127.0.0.1', '--port', str(port)],
                                stdout=out, stderr=subprocess.STDOUT, cwd=str(tmp_path))
    try:
        tags = _wait_for_tags(port, proc, log, expected, time.monotonic() + 90)
        assert list(tags) == ['tensorboard_log']        # the run's folder under --logdir
        assert sorted(tags['tensorboard_log']) == sorted(expected)
        for tag in ('loss', 'metric/R1'):
            # [[wall time, step, value], ...]
            served = _get(port, '/data/plugin/scalars/scalars', run='tensorboard_log', tag=tag)
            assert [(step, value) for _, step, value in served] == expected[tag]
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)
