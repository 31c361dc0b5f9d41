"""Which flags a resumed run may change: every flag of main.py has a class, and the flags the loss is
built from are refused (runner/resume.py, ON_RESUME)."""
import os

import mxnet as mx
import pytest

import main
from loss import HPHNTripletLoss, build_loss
from runner.checkpoint import Checkpointer
from runner.options import build_parser
from runner.resume import APPLIED, IGNORED, ON_RESUME, REFUSED, compare_flags, flag_values
from utils.errors import UserError


def test_every_flag_of_main_has_a_resume_class():
    flags = {a.dest for a in build_parser()._actions if a.dest != 'help'}
    missing = sorted(flags - set(ON_RESUME))
    assert not missing, ('%s of main.py %s no class in runner/resume.py ON_RESUME: add %s as REFUSED (it changes '
                         'the model, the loss or the data), APPLIED (a resumed run may change it) or IGNORED'
                         % (', '.join('--' + f for f in missing), 'has' if len(missing) == 1 else 'have',
                            'it' if len(missing) == 1 else 'each'))
    stale = sorted(set(ON_RESUME) - flags)
    assert not stale, 'runner/resume.py ON_RESUME classifies %s, which main.py does not have' % ', '.join(
        '--' + f for f in stale)
    assert set(ON_RESUME.values()) <= {REFUSED, APPLIED, IGNORED}


class Recorder:
    """main.py's default flags, recording which ones are read."""

    def __init__(self, args):
        self.__dict__['_args'], self.__dict__['read'] = args, set()

    def __getattr__(self, name):
        self.read.add(name)
        return getattr(self._args, name)


def changed(value):
    """Another value of a flag's type."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 1
    if isinstance(value, list):
        return value + [value[-1] + 1]
    return 'other' if value != 'other' else 'another'


def loss_flags():
    """The flags build_loss reads for any --loss, except --epochs: SEE's schedule spans the run, which a
    resumed run may lengthen (its fraction per epoch is then that of the longer run)."""
    seen = set()
    for name in ('hphn_triplet', 'proxy_anchor', 'see_proxy_anchor', 'ms', 'lifted', 'npair', 'triplet'):
        args = Recorder(main.parse_args(['--loss', name]))
        build_loss(args, 5)
        seen |= args.read
    return sorted(seen - {'epochs', 'loss'}) + ['loss']


@pytest.mark.parametrize('flag', loss_flags())
def test_a_flag_of_the_loss_is_refused_on_resume(flag):
    saved = flag_values(main.parse_args([]))
    current = dict(saved, **{flag: changed(saved[flag])})
    with pytest.raises(UserError, match='--%s ' % flag):
        compare_flags(saved, current, 'ckpt')


def fake_checkpoint(save_dir, flags):
    """A checkpoint folder of a tiny network that records main.py's ``flags``: enough for --resume to
    compare the flags, which it does before reading any data."""
    net = mx.gluon.nn.Dense(2, in_units=3)
    net.initialize()
    trainer = mx.gluon.Trainer(net.collect_params(), 'adam')
    state = {'best': {}, 'best_chosen': None, 'global_step': 1, 'args': flag_values(main.parse_args(flags))}
    return Checkpointer(save_dir).save(1, net, trainer, HPHNTripletLoss(), state)


@pytest.mark.parametrize('flags,named', [
    (['--margin', '0.2'], '--margin 1e-05 -> 0.2'),
    # --margin follows --loss when not given (each triplet loss's own default), so it changes too
    (['--loss', 'triplet', '--n_inner_pts', '1'], '--loss hphn_triplet -> triplet; --margin 1e-05 -> 0.2; --n_inner_pts 2 -> 1'),
    (['--seed', '3'], '--seed 0 -> 3'),
])
def test_a_resumed_run_with_a_refused_flag_stops_in_one_line(tmp_path, capsys, flags, named):
    base = ['--epochs', '2', '--save_dir', str(tmp_path), '--num_workers', '0']
    path = fake_checkpoint(str(tmp_path), base)
    capsys.readouterr()
    assert main.main(base + ['--resume'] + flags) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith('error: --resume %s' % path) and named in err[0], err
    assert not os.path.exists(os.path.join(str(tmp_path), 'model_final.params'))
