"""--init_from: a run starts from an earlier run's network; files that do not fit are one line."""
import mxnet as mx
import numpy as np
import pytest

import main
from model import get_model
from runner.checkpoint import init_from
from utils.errors import UserError

CTX = [mx.cpu()]
QUICK = ['--epochs', '1', '--eval_epoch_term', '1', '--batch_size', '40', '--num_instances', '8',
         '--checkpoint_epochs', '0', '--num_workers', '0']


def arrays(net):
    """{structural name: numpy array} of every parameter of net, the names save_parameters writes."""
    return {name: p.data().asnumpy() for name, p in net._collect_params_with_prefix().items()}


def built(embed_dim=16, seed=0, backbone='googlenet'):
    """A random-init EmbeddingNet whose deferred shapes are fixed by one (2, 3, 32, 32) forward."""
    mx.random.seed(seed)
    net = get_model(backbone, embed_dim, pretrained=False, ctx=CTX)
    net(mx.nd.zeros((2, 3, 32, 32)))
    return net


@pytest.fixture(scope='module')
def saved(tmp_path_factory):
    """(run folder holding model_final.params, the saved net's arrays)."""
    folder = tmp_path_factory.mktemp('first')
    net = built(seed=1)
    net.save_parameters(str(folder / 'model_final.params'))
    return folder, arrays(net)


@pytest.mark.parametrize('as_folder', [False, True])
def test_every_parameter_is_loaded(saved, as_folder):
    folder, expected = saved
    net = built(seed=2)                        # another random init: every array differs before the load
    before = arrays(net)
    assert any(not np.array_equal(before[k], expected[k]) for k in expected if 'running' not in k)
    path = folder if as_folder else folder / 'model_final.params'
    assert init_from(net, str(path), CTX) == str(folder / 'model_final.params')
    after = arrays(net)
    assert set(after) == set(expected)
    for name in expected:                      # trunk, embedding layer and BatchNorm statistics
        np.testing.assert_array_equal(after[name], expected[name], err_msg=name)


def test_other_embed_dim_is_one_line_naming_file_and_flags(saved):
    folder, _ = saved
    net = get_model('googlenet', 32, pretrained=False, ctx=CTX)
    with pytest.raises(UserError) as info:
        init_from(net, str(folder), CTX, '--backbone googlenet --embed_dim 32')
    message = str(info.value)
    assert '\n' not in message and 'model_final.params' in message and '--embed_dim 32' in message


@pytest.mark.parametrize('name', ['missing.params', 'empty_run'])
def test_missing_file_or_unfinished_run_is_named(tmp_path, name):
    (tmp_path / 'empty_run').mkdir()
    with pytest.raises(UserError) as info:
        init_from(built(), str(tmp_path / name), CTX)
    assert '--init_from' in str(info.value) and name in str(info.value)


@pytest.mark.slow
def test_second_run_starts_where_the_first_ended(tmp_path, monkeypatch):
    """main.py wiring: the parameters at the second run's first step are the first run's final ones,
    also for a loss with parameters of its own (Proxy-Anchor's proxies start fresh), and the
    optimiser starts fresh."""
    first = str(tmp_path / 'first')
    assert main.main(QUICK + ['--save_dir', first]) == 0
    final = {k: v.asnumpy() for k, v in mx.nd.load(first + '/model_final.params').items()}
    import runner.trainer
    seen = []
    original = runner.trainer.train_step

    def spy(net, loss_fn, trainer, *args):
        if not seen:                                     # before the first update of the second run
            try:
                start = arrays(net)
            except mx.gluon.parameter.DeferredInitializationError:
                start = None                             # nothing loaded: shapes wait for the first forward
            seen.append((start, dict(trainer._optimizer._index_update_count)))
        return original(net, loss_fn, trainer, *args)
    monkeypatch.setattr(runner.trainer, 'train_step', spy)
    assert main.main(QUICK + ['--loss', 'proxy_anchor', '--init_from', first, '--seed', '5',
                              '--save_dir', str(tmp_path / 'second')]) == 0
    start, updates = seen[0]
    assert start is not None, 'the network was not loaded before the first step'
    assert set(start) == set(final)
    for name in final:
        np.testing.assert_array_equal(start[name], final[name], err_msg=name)
    assert not updates                                   # no Adam step counts carried over


@pytest.mark.parametrize('flags,expected', [
    (['--init_from', '/nonexistent/run'], '--init_from /nonexistent/run does not exist'),
])
def test_main_refuses_a_missing_path_in_one_line(tmp_path, capsys, flags, expected):
    status = main.main(flags + ['--save_dir', str(tmp_path)])
    err = [l for l in capsys.readouterr().err.splitlines() if l.strip()]
    assert status == 2 and len(err) == 1 and err[0].startswith('error: ') and expected in err[0], err


@pytest.mark.slow
def test_main_refuses_another_embed_dim_in_one_line(saved, tmp_path, capsys):
    folder, _ = saved                                    # embed_dim 16
    status = main.main(QUICK + ['--init_from', str(folder), '--save_dir', str(tmp_path)])
    err = [l for l in capsys.readouterr().err.splitlines() if l.strip()]
    assert status == 2 and len(err) == 1, err
    assert 'model_final.params' in err[0] and '--backbone googlenet --embed_dim 512' in err[0], err


def test_other_backbone_names_the_first_parameter_that_does_not_fit(saved):
    folder, _ = saved                                    # a GoogLeNet file into a ResNet-50
    net = get_model('resnet50', 16, pretrained=False, ctx=CTX)
    with pytest.raises(UserError) as info:
        init_from(net, str(folder), CTX, '--backbone resnet50 --embed_dim 16')
    message = str(info.value)
    assert '\n' not in message and '--backbone resnet50' in message and 'is missing in file' in message
    assert len(message) < 400                            # not the list of every parameter in the file
