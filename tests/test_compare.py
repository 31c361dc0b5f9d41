"""tools.compare on two short digits runs, the paper numbers and every config file of configs/."""
import csv
import glob
import os
import re
import subprocess
import sys

import matplotlib.image
import pytest

import main
from runner.summary import Summary
from tools import compare
from tools.paper_numbers import DEFAULT_CSV, load_paper_numbers, read_flags
from utils.errors import UserError
from utils.events import read_scalars

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(glob.glob(os.path.join(REPO, 'configs', '*', '*.txt')))
QUICK = ['--epochs', '2', '--eval_epoch_term', '1', '--batch_size', '40', '--num_instances', '8',
         '--checkpoint_epochs', '0']
EE_DATASETS = {'cub200': ['NMI', 'F1', 'R@1', 'R@2', 'R@4', 'R@8'],
               'cars196': ['NMI', 'F1', 'R@1', 'R@2', 'R@4', 'R@8'],
               'sop': ['NMI', 'F1', 'R@1', 'R@10', 'R@100']}
EE_METHODS = ['triplet', 'hphn_triplet', 'npair', 'lifted', 'ms']
SEE_DATASETS = {'cub200': ['R@1', 'R@2', 'R@4'], 'cars196': ['R@1', 'R@2', 'R@4'],
                'sop': ['R@1', 'R@10', 'R@100'], 'inshop': ['R@1', 'R@10', 'R@20']}


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    """Two digits runs, without and with EE: {'baseline': dir, 'ee': dir}."""
    root = tmp_path_factory.mktemp('runs')
    dirs = {}
    for name, n_inner_pts in (('baseline', '0'), ('ee', '2')):
        dirs[name] = str(root / name)
        assert main.main(QUICK + ['--n_inner_pts', n_inner_pts, '--save_dir', dirs[name]]) == 0
    return dirs


def logged(run_dir, tag='R1'):
    """(best epoch, best, final epoch, final) of metric_epoch/<tag>, straight from the event files."""
    points = read_scalars(run_dir)['metric_epoch/' + tag]
    best = max(v for _, v in points)
    return min(e for e, v in points if v == best), best, points[-1][0], points[-1][1]


def table_row(out, run_dir, metric):
    """The cells of one metric's row in the table printed for run_dir."""
    section = out.split('== %s ' % run_dir, 1)[1].split('\n\n', 1)[0]
    return next(line.split() for line in section.splitlines() if line.split()[0] == metric)


def fake_csv(tmp_path, rows):
    path = tmp_path / 'numbers.csv'
    path.write_text('paper,dataset,method,metric,value\n' + ''.join('test,%s,%s,%s,%s\n' % r for r in rows))
    return str(path)


@pytest.mark.slow
def test_table_shows_what_main_logged(runs, capsys):
    assert compare.main([runs['baseline'], runs['ee']]) == 0     # no paper value for digits: no check
    out = capsys.readouterr().out
    for run_dir in runs.values():
        assert set(compare.read_curves(run_dir)) == {'R@1', 'R@2', 'R@4', 'R@8', 'NMI'}
        selected = logged(run_dir)[0]       # the epoch of the best R@1
        for tag, name in (('R1', 'R@1'), ('R2', 'R@2'), ('R4', 'R@4'), ('R8', 'R@8'), ('NMI', 'NMI')):
            best_epoch, best, final_epoch, final = logged(run_dir, tag)
            assert compare.summarize(compare.read_curves(run_dir)[name]) == (best_epoch, best, final_epoch, final)
            at_selected = dict(read_scalars(run_dir)['metric_epoch/' + tag])[selected]
            assert table_row(out, run_dir, name)[1:6] == [
                '%.2f' % (100 * best), str(best_epoch), '%.2f' % (100 * final), str(final_epoch),
                '%.2f' % (100 * at_selected)]


@pytest.mark.slow
def test_plot_is_a_png(runs, tmp_path):
    out = tmp_path / 'r1.png'
    assert compare.main([runs['baseline'], runs['ee'], '--plot', str(out)]) == 0
    data = out.read_bytes()
    assert data.startswith(b'\x89PNG\r\n\x1a\n') and len(data) > 0
    image = matplotlib.image.imread(str(out))
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100


@pytest.mark.slow
def test_exit_status_follows_the_tolerance(runs, tmp_path, capsys):
    best = 100 * logged(runs['ee'])[1]
    paper = fake_csv(tmp_path, [('digits', 'ee_hphn_triplet', 'R@1', '%.1f' % (best + 0.55))])  # 0.5-0.6 above
    flags = [runs['ee'], '--paper', 'digits/ee_hphn_triplet', '--paper-csv', paper]
    assert compare.main(flags + ['--tolerance', '1']) == 0
    assert compare.main(flags + ['--tolerance', '0.4']) == 1
    assert compare.main(flags + ['--tolerance', '0.4', '--metric', 'NMI']) == 0     # no paper NMI: no check
    out = capsys.readouterr().out
    assert 'FAIL' in out and table_row(out, runs['ee'], 'R@1')[6] == '%.1f' % (best + 0.55)


@pytest.mark.slow
def test_paper_row_inferred_from_saved_args(runs, tmp_path, capsys):
    """Without --paper each run finds its own row: EE on -> ee_<loss>, off -> <loss>."""
    paper = fake_csv(tmp_path, [('digits', 'ee_hphn_triplet', 'R@1', '100'),
                                ('digits', 'hphn_triplet', 'R@1', '1')])
    assert compare.main([runs['baseline'], runs['ee'], '--paper-csv', paper]) == 1   # EE run is far below 100
    out = capsys.readouterr().out
    assert '(paper: digits/hphn_triplet)' in out and '(paper: digits/ee_hphn_triplet)' in out
    assert table_row(out, runs['baseline'], 'R@1')[6] == '1.0' and table_row(out, runs['ee'], 'R@1')[6] == '100.0'


def test_resumed_run_keeps_the_last_value_of_an_epoch(tmp_path):
    summary = Summary(str(tmp_path))
    for epoch, r1 in ((2, 0.5), (4, 0.7), (6, 0.6)) + ((6, 0.65), (8, 0.66)):    # resumed from epoch 4
        summary.metrics({'R@1': r1}, epoch * 10, epoch)
    summary.close()
    curve = compare.read_curves(str(tmp_path))['R@1']
    assert [e for e, _ in curve] == [2, 4, 6, 8]
    assert curve[2][1] == pytest.approx(0.65) and compare.summarize(curve).best_epoch == 4


def test_corrupt_event_file_is_one_error_line(tmp_path, capsys):
    summary = Summary(str(tmp_path))
    summary.metrics({'R@1': 0.5}, 10, 1)
    summary.close()
    path = glob.glob(str(tmp_path / 'tensorboard_log' / 'events.out.tfevents.*'))[0]
    data = bytearray(open(path, 'rb').read())
    data[12:40] = b'\xff' * 28                   # the first record's payload: garbage, framing intact
    open(path, 'wb').write(bytes(data))
    assert compare.main([str(tmp_path)]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and 'is corrupt' in err[0] and path in err[0], err


@pytest.mark.slow
@pytest.mark.parametrize('make_flags,expected', [
    (lambda runs, empty: [empty], 'no mxboard event files'),
    (lambda runs, empty: [empty + '/missing'], 'does not exist'),
    (lambda runs, empty: [runs['ee'], '--paper', 'cars196/no_such_row'], "'cars196/no_such_row'"),
    (lambda runs, empty: [runs['ee'], '--metric', 'R@x'], "'R@x'"),
    (lambda runs, empty: [runs['ee'], '--metric', 'MAP@R'], 'logged no MAP@R'),
    (lambda runs, empty: [runs['ee'], '--paper-csv', empty + '/none.csv'], 'none.csv'),
])
def test_bad_input_is_one_error_line(runs, tmp_path, capsys, make_flags, expected):
    assert compare.main(make_flags(runs, str(tmp_path))) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith('error: ') and expected in err[0], err


@pytest.mark.slow
def test_command_line_exit_status(tmp_path):
    proc = subprocess.run([sys.executable, '-m', 'tools.compare', str(tmp_path)], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip() == 'error: no mxboard event files with scalars under %s' % tmp_path


# ---- configs/ and configs/paper_numbers.csv ----

def config_key(path):
    """'configs/ee/cars196_ee_hphn_triplet.txt' -> 'cars196/ee_hphn_triplet'."""
    dataset, method = os.path.basename(path)[:-len('.txt')].split('_', 1)
    return '%s/%s' % (dataset, method)


def test_paper_numbers_are_complete_and_sane():
    with open(DEFAULT_CSV, newline='') as f:
        rows = list(csv.DictReader(f))
    seen = [(r['paper'], r['dataset'], r['method'], r['metric']) for r in rows]
    assert len(seen) == len(set(seen))
    assert all(0 < float(r['value']) <= 100 for r in rows)
    table = load_paper_numbers()
    expected = {}
    for dataset, metrics in EE_DATASETS.items():
        for method in EE_METHODS:
            expected['%s/%s' % (dataset, method)] = expected['%s/ee_%s' % (dataset, method)] = metrics
    for dataset, metrics in SEE_DATASETS.items():
        expected['%s/proxy_anchor' % dataset] = expected['%s/see_proxy_anchor' % dataset] = metrics
        expected['%s/see_proxy_anchor_dino_vits16_384' % dataset] = ['R@1']
    assert len([k for k in expected if k.split('/')[0] in EE_DATASETS and 'proxy' not in k]) == 30
    assert {k: sorted(v) for k, v in table.items()} == {k: sorted(v) for k, v in expected.items()}
    assert len(rows) == 30 * 6 - 10 + 8 * 3 + 4         # SOP rows have 5 EE metrics, not 6
    for values in table.values():                       # recall grows with K
        recalls = [values[m] for m in sorted(values, key=compare.metric_order) if m.startswith('R@')]
        assert recalls == sorted(recalls)
    assert table['cars196/ee_hphn_triplet']['R@1'] == 71.6 and table['inshop/see_proxy_anchor']['R@20'] == 98.8


def test_every_row_has_a_config():
    keys = {config_key(p) for p in CONFIGS}
    assert keys == {k for k in load_paper_numbers() if 'dino' not in k}       # the ViT row has no config
    assert len(CONFIGS) == 38


@pytest.mark.parametrize('path', CONFIGS, ids=[os.path.relpath(p, REPO) for p in CONFIGS])
def test_config_matches_its_paper_row(path):
    """Flags, header and published numbers agree with the file name and paper_numbers.csv."""
    key = config_key(path)
    dataset, method = key.split('/')
    flags = read_flags(path)
    paper = load_paper_numbers()[key]
    assert flags['data_name'] == dataset and flags['data_dir'].startswith('datasets/')
    assert flags['save_dir'] == 'results/%s/%s' % (os.path.basename(os.path.dirname(path)), key.replace('/', '_'))
    header = open(path).read()
    published = dict(re.findall(r'([\w@]+) (\d+\.\d)', header.split('# published (%):', 1)[1].split('\n', 1)[0]))
    assert {m: float(v) for m, v in published.items()} == paper
    recallk = {'R@' + k for k in flags['recallk'].split(',')}
    assert {m for m in paper if m.startswith('R@')} <= recallk
    assert {m.lower() for m in paper if not m.startswith('R@')} <= set(flags['eval_metrics'].split(','))
    if os.path.basename(os.path.dirname(path)) == 'ee':
        assert flags['loss'] == method.replace('ee_', '')
        assert int(flags['n_inner_pts']) == (2 if method.startswith('ee_') else 0)
        assert (flags['backbone'], flags['image_size']) == ('googlenet', '227')
        if dataset == 'sop':        # the release gives no SOP schedule; classes of 2-12 images (see the files)
            assert flags['num_instances'] == ('2' if 'npair' in method else '4')
            assert (flags['lr_decay_epochs'], flags['epochs']) == ('40,60,80', '100')
        else:                       # the official README command
            assert flags['num_instances'] == ('2' if 'npair' in method else '32')
            assert (flags['lr_decay_epochs'], flags['epochs']) == ('400,800,1200,1600', '4000')
    else:
        assert flags['loss'] == method and flags['backbone'] == 'resnet50' and flags['optim'] == 'adamw'
        assert (flags['warmup_epochs'], flags['epochs']) == {'cub200': ('1', '100'), 'cars196': ('1', '100'),
                                                             'sop': ('5', '150'), 'inshop': ('5', '300')}[dataset]


@pytest.mark.parametrize('path', CONFIGS, ids=[os.path.relpath(p, REPO) for p in CONFIGS])
def test_config_parses_with_main(path, capsys):
    """The acceptance test: main.py knows every flag, loss and backbone of the config."""
    try:
        args = main.parse_args(['--config', path])
    except (SystemExit, UserError):
        # argparse names only its first complaint: list every flag main.py lacks as well
        known = {action.dest for action in main.build_parser()._actions}
        lacking = ['--' + flag for flag in read_flags(path) if flag not in known]
        pytest.fail('main.py lacks %s; %s' % (', '.join(lacking) or 'no flag',
                                              capsys.readouterr().err.strip().splitlines()[-1]))
    main.check_args(args, 1)
    assert args.data_name == config_key(path).split('/')[0]
