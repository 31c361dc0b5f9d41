"""main.py end to end on the offline digits data, and its one-line errors for bad input."""
import glob
import json
import os
import subprocess
import sys

import mxnet as mx
import numpy as np
import pytest
import scipy.io

import main
from utils.events import read_scalars

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICK = ['--epochs', '12', '--eval_epoch_term', '6', '--batch_size', '40', '--num_instances', '8']


@pytest.mark.slow
def test_digits_run_logs_saves_and_lowers_the_loss(tmp_path, capsys):
    assert main.main(QUICK + ['--save_dir', str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert '[epoch 12] R@1' in out and 'NMI' in out
    scalars = read_scalars(str(tmp_path))
    losses = [v for _, v in scalars['loss']]
    assert len(losses) == 12                       # summary_step 1: every iteration of 12 one-batch epochs
    assert np.mean(losses[-4:]) < np.mean(losses[:4])
    assert [s for s, _ in scalars['metric/R1']] == [6, 12] and [s for s, _ in scalars['metric_epoch/NMI']] == [6, 12]
    assert all(0 <= v <= 1 for _, v in scalars['metric/R1'])
    assert 'metric/R1/best' in scalars
    synthetic = [v for _, v in scalars['ee/synthetic_negative_fraction']]     # logged with the loss
    assert len(synthetic) == 12 and all(0 <= v <= 1 for v in synthetic) and max(synthetic) > 0
    assert 'synthetic=' in out                                                # in the progress bar
    saved = sorted(os.path.basename(p) for p in glob.glob(str(tmp_path / '*.params')))
    assert 'model_final.params' in saved and any(p.startswith('model_epoch_000') for p in saved)
    assert not glob.glob(str(tmp_path / '.tmp-*')) and not glob.glob(str(tmp_path / '*.tmp-*'))   # utils/atomic.py's names


@pytest.mark.slow
def test_same_seed_same_losses(tmp_path):
    runs = []
    for name in ('a', 'b'):
        main.main(['--epochs', '3', '--eval_epoch_term', '3', '--batch_size', '40', '--num_instances', '8',
                   '--save_dir', str(tmp_path / name)])
        runs.append([v for _, v in read_scalars(str(tmp_path / name))['loss']])
    assert runs[0] == runs[1]


def test_soft_margin_reaches_the_loss():
    args = main.parse_args(['--soft_margin', 'true', '--margin', '0.3'])
    loss = main.build_loss(args, 5)
    assert loss.soft_margin is True and loss.margin == 0.3


def test_negative_grad_reaches_the_loss():
    assert main.build_loss(main.parse_args([]), 5).negative_grad == 'release'
    assert main.build_loss(main.parse_args(['--ee_negative_grad', 'exact']), 5).negative_grad == 'exact'


def test_official_spellings_and_digits_defaults():
    args = main.parse_args(['--loss', 'hphn-triplet'])
    assert args.loss == 'hphn_triplet' and args.image_size == 32 and args.pretrained is False
    args = main.parse_args(['--data_name', 'cars196'])
    assert args.image_size == 227 and args.epochs == 5000 and args.margin == 1e-5 and args.pretrained is True
    assert args.lr_decay_epochs == [10, 20, 40, 80] and args.recallk == [1, 2, 4, 8]


def run_cli(capsys, *flags):
    """main.main in this process, as ``python3 main.py FLAGS`` runs it: (exit status, stderr lines).
    In-process because a fresh interpreter costs 1.5 s of imports per case;
    test_error_is_one_line_in_a_fresh_process covers what only a new process shows."""
    capsys.readouterr()
    try:
        status = main.main(list(flags))
    except SystemExit as exc:                     # argparse's own errors
        status = exc.code
    return status, [l for l in capsys.readouterr().err.splitlines() if l.strip()]


@pytest.mark.slow
def test_error_is_one_line_in_a_fresh_process(tmp_path):
    """Nothing that importing mxnet, gluoncv or our modules prints may join the one line."""
    proc = subprocess.run([sys.executable, 'main.py', '--data_name', 'cars196', '--data_dir', '/nonexistent/cars',
                           '--save_dir', str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=120)
    err = [l for l in proc.stderr.splitlines() if l.strip()]
    assert proc.returncode == 2
    assert len(err) == 1 and err[0].startswith('error: ') and '/nonexistent/cars' in err[0], err


@pytest.mark.parametrize('flags,expected', [
    (['--data_name', 'cars196', '--data_dir', '/nonexistent/cars'], '/nonexistent/cars'),
    (['--batch_size', '42', '--num_instances', '7'], '--num_instances must be even'),
    (['--batch_size', '50', '--num_instances', '8'], '--batch_size (50) must be a multiple of --num_instances (8)'),
    (['--loss', 'contrastive'], '--loss'),
    (['--backbone', 'vgg'], '--backbone'),
    (['--save_dir', '/proc/nope'], '--save_dir'),
    (['--gpu_idx', '0'], '--gpu_idx'),
])
def test_bad_input_is_one_line(tmp_path, capsys, flags, expected):
    if '--save_dir' not in flags:
        flags = flags + ['--save_dir', str(tmp_path)]
    status, err = run_cli(capsys, *flags)
    assert status == 2
    assert len(err) == 1 and err[0].startswith('error: ') and expected in err[0], err


def test_malformed_cars_annos_is_named(tmp_path, capsys):
    (tmp_path / 'car_ims').mkdir()
    scipy.io.savemat(str(tmp_path / 'cars_annos.mat'), {'something_else': np.zeros(3)})
    status, err = run_cli(capsys, '--data_name', 'cars196', '--data_dir', str(tmp_path), '--save_dir', str(tmp_path / 'out'))
    assert status == 2 and len(err) == 1 and 'cars_annos.mat' in err[0], err


def test_bad_recallk_is_refused_by_the_parser(capsys):
    status, err = run_cli(capsys, '--recallk', '1,0')
    assert status == 2 and '--recallk' in err[-1]


def test_config_file_with_command_line_override(tmp_path, capsys):
    config = tmp_path / 'row.txt'
    config.write_text('# a paper row\n--data_name=cars196\n--n_inner_pts=0   # baseline\n--lr 0.0002\n')
    args = main.parse_args(['--config', str(config), '--lr', '0.5'])
    assert args.data_name == 'cars196' and args.n_inner_pts == 0 and args.lr == 0.5 and args.image_size == 227
    status, err = run_cli(capsys, '--config', str(tmp_path / 'missing.txt'))
    assert status == 2 and 'missing.txt' in err[-1]


@pytest.mark.slow
def test_saved_args_repeat_the_run(tmp_path):
    flags = ['--soft_margin', 'true', '--epochs', '2', '--eval_epoch_term', '2', '--batch_size', '40',
             '--num_instances', '8', '--recallk', '1,3', '--save_dir', str(tmp_path)]
    assert main.main(flags) == 0
    first = main.parse_args(flags)
    again = main.parse_args(['--config', str(tmp_path / 'args.txt')])
    assert {k: v for k, v in vars(again).items() if k != 'config'} == \
        {k: v for k, v in vars(first).items() if k != 'config'}


@pytest.mark.slow
def test_validation_split_chooses_the_epoch_and_embeddings_match_the_cli(tmp_path):
    flags = ['--val_class_ratio', '0.4', '--batch_size', '24', '--num_instances', '8', '--epochs', '6',
             '--eval_epoch_term', '2', '--eval_metrics', 'recall,map_at_r,nmi', '--save_embeddings',
             '--save_dir', str(tmp_path)]
    assert main.main(flags) == 0
    s = read_scalars(str(tmp_path))
    val = dict(s['val_metric_epoch/R1'])
    test = dict(s['metric_epoch/R1'])
    assert sorted(val) == sorted(test) == [2, 4, 6]
    best_epoch = max(sorted(val), key=lambda e: (val[e], -e))        # the first epoch with the best val R@1
    assert s['metric_epoch/R1/best'][-1] == (best_epoch, test[best_epoch])
    assert os.path.exists(tmp_path / ('model_epoch_%05d.params' % best_epoch))
    # the saved embeddings are those of the best epoch: the CLI gives the logged numbers
    out = tmp_path / 'cli.json'
    subprocess.run([sys.executable, '-m', 'tools.evaluate', '--embeddings', str(tmp_path / 'embeddings' / 'test_embeddings.npy'),
                    '--labels', str(tmp_path / 'embeddings' / 'test_labels.npy'), '--recallk', '1,2,4,8',
                    '--metrics', 'recall,map_at_r,nmi', '--json', str(out)], cwd=REPO, check=True,
                   capture_output=True)
    cli = json.loads(out.read_text())
    assert cli['R@1'] == pytest.approx(test[best_epoch], abs=1e-6)
    assert cli['MAP@R'] == pytest.approx(dict(s['metric_epoch/MAP_R'])[best_epoch], abs=1e-6)
    assert cli['NMI'] == pytest.approx(dict(s['metric_epoch/NMI'])[best_epoch], abs=1e-6)


@pytest.mark.slow
def test_inshop_evaluates_queries_against_the_gallery(tmp_path, capsys):
    from tests.test_datasets import write_inshop
    root = tmp_path / 'inshop'
    write_inshop(root)
    assert main.main(['--data_name', 'inshop', '--data_dir', str(root), '--batch_size', '4', '--num_instances', '2',
                      '--n_inner_pts', '1', '--epochs', '1', '--eval_epoch_term', '1', '--recallk', '1,2',
                      '--eval_metrics', 'recall,nmi,map_at_r', '--pretrained', 'false', '--image_size', '32',
                      '--save_dir', str(tmp_path / 'out')]) == 0
    out = capsys.readouterr().out
    assert 'query' in out and 'gallery' in out and '[epoch 1] R@1' in out and 'NMI' not in out.split('[epoch 1]')[1]


@pytest.mark.slow
@pytest.mark.parametrize('name', ['triplet', 'lifted', 'npair', 'ms'])
def test_each_pair_loss_trains_from_main(tmp_path, name):
    flags = ['--loss', name, '--epochs', '6', '--eval_epoch_term', '6', '--batch_size', '40', '--num_instances', '8',
             '--save_dir', str(tmp_path)]
    assert main.main(flags) == 0
    scalars = read_scalars(str(tmp_path))
    losses = [v for _, v in scalars['loss']]
    assert len(losses) == 6 and all(np.isfinite(losses))
    assert np.mean(losses[-3:]) < losses[0]
    assert len(scalars['ee/synthetic_negative_fraction']) == 6


@pytest.mark.slow
@pytest.mark.parametrize('name', ['proxy_anchor', 'see_proxy_anchor'])
def test_proxy_losses_train_from_main(tmp_path, name):
    flags = ['--loss', name, '--optim', 'adamw', '--lr', '1e-3', '--epochs', '8', '--eval_epoch_term', '8',
             '--batch_size', '10', '--num_instances', '2', '--n_expansion', '4',
             # a constant expanded fraction: the SEE total grows with it by design
             '--max_thresh', '0.5', '--min_thresh', '0.5', '--pooling', 'avg+max', '--save_dir', str(tmp_path)]
    assert main.main(flags) == 0
    scalars = read_scalars(str(tmp_path))
    losses = [v for _, v in scalars['loss']]
    assert len(losses) == 8 and all(np.isfinite(losses))
    assert 'ee/synthetic_negative_fraction' not in scalars      # no mined negatives to count
    assert np.mean(losses[-3:]) < losses[0]
    saved = mx.nd.load(str(tmp_path / 'checkpoints' / 'epoch_00008' / 'loss.params'))
    assert list(saved) == ['proxies'] and saved['proxies'].shape == (5, 512)


@pytest.mark.slow
def test_warmup_freezes_the_trunk_only(tmp_path, monkeypatch):
    """During --warmup_epochs the trunk keeps its weights while the embedding layer learns."""
    import runner.trainer
    snapshots = []
    original = runner.trainer.train_step

    def spy(net, *args):
        first = list(net.backbone[0].collect_params().values())[0].data().copy()   # before the step
        value = original(net, *args)
        snapshots.append((first, net.embedding_layer.weight.data().copy()))         # head after it
        return value
    monkeypatch.setattr(runner.trainer, 'train_step', spy)
    assert main.main(['--loss', 'proxy_anchor', '--warmup_epochs', '2', '--epochs', '3', '--eval_epoch_term', '3',
                      '--batch_size', '40', '--num_instances', '8', '--save_dir', str(tmp_path)]) == 0
    trunk = [a.asnumpy() for a, _ in snapshots]
    head = [b.asnumpy() for _, b in snapshots]
    assert np.array_equal(trunk[0], trunk[1]) and np.array_equal(trunk[1], trunk[2])   # epochs 1, 2: frozen
    assert not np.array_equal(head[0], head[1])
    final = mx.nd.load(str(tmp_path / 'model_final.params'))
    key = [k for k in final if k.startswith('backbone.0.')][0]
    assert not np.array_equal(final[key].asnumpy(), trunk[2])                          # epoch 3: trains


@pytest.mark.slow
def test_lr_schedule_steps_per_iteration(tmp_path):
    """Two iterations per epoch (batches of 2 of the 5 digit classes), decays at epochs 1 and 2: the
    logged lr follows MXNet's MultiFactorScheduler over the global iteration, not the epoch."""
    import mxnet as mx
    assert main.main(['--batch_size', '16', '--num_instances', '8', '--epochs', '3', '--eval_epoch_term', '3',
                      '--summary_step', '1', '--lr', '0.01', '--lr_decay_epochs', '1,2', '--lr_decay_factor', '0.5',
                      '--save_dir', str(tmp_path)]) == 0
    logged = read_scalars(str(tmp_path))['lr']
    expected = mx.lr_scheduler.MultiFactorScheduler(step=[2, 4], factor=0.5, base_lr=0.01)
    assert [s for s, _ in logged] == [1, 2, 3, 4, 5, 6]
    np.testing.assert_allclose([v for _, v in logged], [expected(t) for t in range(6)], rtol=1e-6)
    assert len({v for _, v in logged[2:4]}) == 2          # it changes inside an epoch


@pytest.mark.slow
def test_see_schedule_reaches_the_loss(tmp_path, monkeypatch):
    """SEE's expanded fraction follows its epoch schedule in a main.py run."""
    from loss.see_proxy_anchor import SEEProxyAnchorLoss, selected_fraction
    seen = []
    real = SEEProxyAnchorLoss.forward

    def spy(self, embeddings, labels):
        seen.append(self.fraction)
        return real(self, embeddings, labels)
    monkeypatch.setattr(SEEProxyAnchorLoss, 'forward', spy)
    assert main.main(['--loss', 'see_proxy_anchor', '--epochs', '4', '--eval_epoch_term', '4', '--batch_size', '10',
                      '--num_instances', '2', '--n_expansion', '4', '--min_thresh', '0.1', '--max_thresh', '0.5',
                      '--save_dir', str(tmp_path)]) == 0
    per_epoch = [selected_fraction(e, 4, 0.5, 0.1) for e in range(4)]
    assert len(set(per_epoch)) == 4
    assert sorted(set(seen)) == sorted(per_epoch)
    assert seen == sorted(seen)                           # one value per epoch, rising


@pytest.mark.slow
def test_the_validation_classes_are_the_same_under_every_seed(tmp_path, monkeypatch):
    """--init_from's two-stage recipe (README) holds out the same classes in both runs, whatever --seed."""
    import runner.trainer
    held_out = []

    def record(loop):
        held_out.append(sorted(set(loop.loaders.val.labels.tolist())))
        loop.net(next(iter(loop.loaders.train))[0])        # shapes known: main.py saves the network
        return {}
    monkeypatch.setattr(runner.trainer.TrainingLoop, 'run', record)
    for seed in ('0', '1'):     # drawn with --seed instead, they would hold out classes {0, 2} and {1, 2}
        assert main.main(['--val_class_ratio', '0.4', '--seed', seed, '--batch_size', '16', '--num_instances', '8',
                          '--num_workers', '0', '--save_dir', str(tmp_path / seed)]) == 0
    assert len(held_out) == 2 and len(held_out[0]) == 2            # 2 of digits' 5 training classes
    assert held_out[0] == held_out[1]


def test_each_parameter_gets_its_learning_rate_multiplier(tmp_path, monkeypatch):
    """One SGD step (no momentum, no weight decay) of a main.py run: the step of every parameter over
    its gradient is --lr x --base_lr_mult for the trunk, --lr for the embedding layer and
    --lr x --proxy_lr_mult for Proxy-Anchor's proxies."""
    import runner.trainer
    seen = {}

    def one_step(loop):
        groups = {'trunk': loop.net.backbone.collect_params(), 'embedding': loop.net.embedding_layer.collect_params(),
                  'proxies': loop.loss_fn.collect_params()}
        images, labels = next(iter(loop.loaders.train))
        runner.trainer.train_step(loop.net, loop.loss_fn, loop.trainer, images, labels, loop.ctx)  # shapes known
        before = {g: {n: p.data().asnumpy() for n, p in ps.items() if p.grad_req != 'null'} for g, ps in groups.items()}
        runner.trainer.train_step(loop.net, loop.loss_fn, loop.trainer, images, labels, loop.ctx)
        for g, ps in groups.items():
            step = np.concatenate([(before[g][n] - ps[n].data().asnumpy()).ravel() for n in before[g]])
            grad = np.concatenate([ps[n].grad().asnumpy().ravel() for n in before[g]])
            seen[g] = float(np.dot(step, grad) / np.dot(grad, grad))     # least squares: step = lr x grad
        return {}
    monkeypatch.setattr(runner.trainer.TrainingLoop, 'run', one_step)
    assert main.main(['--loss', 'proxy_anchor', '--optim', 'sgd', '--momentum', '0', '--wd', '0', '--lr', '0.5',
                      '--base_lr_mult', '0.25', '--proxy_lr_mult', '4', '--batch_size', '16', '--num_instances', '8',
                      '--num_workers', '0', '--save_dir', str(tmp_path)]) == 0
    assert seen == {'trunk': pytest.approx(0.125, rel=1e-3), 'embedding': pytest.approx(0.5, rel=1e-3),
                    'proxies': pytest.approx(2.0, rel=1e-3)}
