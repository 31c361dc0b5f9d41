"""main.py's --help tells what a run does: defaults per data set and per loss, groups, each default once."""
import re
from pathlib import Path

import pytest

import main
from data.registry import DATA_DIRS, DEFAULTS, PREPARED
from runner import options

REPO = Path(__file__).resolve().parents[1]


def rendered_helps():
    """{dest: the help text --help prints for that flag} (whitespace as written, unwrapped)."""
    parser = options.build_parser()
    formatter = parser._get_formatter()
    return {action.dest: formatter._expand_help(action) for action in parser._actions if action.help}


def shown(value):
    return ','.join(str(v) for v in value) if isinstance(value, list) else str(value)


@pytest.mark.parametrize('flags, digits', [([], True), (['--data_name', 'cars196'], False)])
def test_help_defaults_are_what_a_run_uses(flags, digits):
    """Every '(default: X; digits: Y)' of --help is the value a run without that flag gets.
    (Defaults said in words, of flags whose parser default is None, are tested one by one below.)"""
    args = vars(main.parse_args(flags))
    worded = {action.dest for action in options.build_parser()._actions if action.default is None}
    checked = 0
    for dest, text in rendered_helps().items():
        match = re.search(r'\(default: ([^;()]*)(?:; digits: ([^()]*))?\)$', text)
        if dest in worded or dest == 'data_name' or not match:
            continue
        expected = match.group(2) if digits and match.group(2) is not None else match.group(1)
        assert shown(args[dest]) == expected, (dest, text, args[dest])
        checked += 1
    assert checked >= 40


def test_every_digits_default_is_shown():
    helps = rendered_helps()
    for dest, value in DEFAULTS['digits'].items():
        assert helps[dest].endswith('; digits: %s)' % value), helps[dest]


def test_each_default_once():
    for dest, text in rendered_helps().items():
        assert text.count('default') <= 1, (dest, text)


def test_flag_groups():
    parser = options.build_parser()
    groups = {action.dest: group.title for group in parser._action_groups for action in group._group_actions}
    assert groups['debug'] == groups['config'] == 'general'
    assert {groups[name] for name in ('alpha', 'beta', 'sigma')} == {'compatibility'}
    compatibility = next(g for g in parser._action_groups if g.title == 'compatibility')
    assert 'only for compatibility with the official command line' in compatibility.description
    assert 'devices' not in {groups[name] for name in ('debug', 'alpha', 'beta', 'sigma')}


@pytest.mark.parametrize('loss, margin', [('hphn_triplet', 1e-5), ('triplet', 0.2)])
def test_margin_defaults_to_the_loss_own(loss, margin):
    args = main.parse_args(['--data_name', 'cars196', '--loss', loss])
    assert args.margin == margin
    assert main.build_loss(args, 98).margin == margin          # reaches the loss
    assert main.parse_args(['--loss', loss, '--margin', '0.3']).margin == 0.3
    assert '%g with %s' % (margin, loss) in rendered_helps()['margin']


def test_margin_defaults_agree_with_the_configs():
    """configs/ee: the triplet rows set the margin main.py now gives each loss by default."""
    for path in sorted((REPO / 'configs' / 'ee').glob('*triplet*.txt')):
        loss = 'hphn_triplet' if 'hphn' in path.name else 'triplet'
        values = re.findall(r'^--margin=(\S+)', path.read_text(), re.M)
        assert [float(v) for v in values] == [options.MARGIN_DEFAULTS[loss]], path


def test_data_dir_defaults_per_data_set():
    for name in PREPARED:
        assert main.parse_args(['--data_name', name]).data_dir == DATA_DIRS[name]
        assert DATA_DIRS[name] in rendered_helps()['data_dir']
    assert main.parse_args(['--data_name', 'folder']).data_dir is None
    assert main.parse_args(['--data_name', 'sop', '--data_dir', 'x']).data_dir == 'x'


def test_missing_default_data_dir_names_the_data_set(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    status = main.main(['--data_name', 'cub200', '--save_dir', str(tmp_path / 'results' / 'run')])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1, err
    assert err[0].startswith('error: data directory ./datasets/CUB_200_2011 of data set cub200 does not exist')
    assert 'python3 -m data.prepare cub200' in err[0] and 'CARS196' not in err[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == []     # the failed start-up left no folders


def test_failed_start_up_keeps_a_folder_it_did_not_make(tmp_path, capsys):
    save_dir = tmp_path / 'mine'
    save_dir.mkdir()
    (save_dir / 'notes.txt').write_text('keep')
    assert main.main(['--data_name', 'sop', '--data_dir', str(tmp_path / 'none'), '--save_dir', str(save_dir)]) == 2
    assert (save_dir / 'notes.txt').read_text() == 'keep'
