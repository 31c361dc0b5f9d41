"""One convention across the commands: flags spelled with underscores, hyphen spellings as aliases."""
import importlib

import pytest

from runner import options
from utils.errors import UserError

# Every command's parser (tools whose parser is built by a function).
PARSERS = {
    'main.py': options.build_parser,
    'data.prepare': lambda: importlib.import_module('data.prepare').build_parser(),
    'tools.run': lambda: importlib.import_module('tools.run').run_parser('p', 'd'),
}
PARSERS.update({'tools.' + name: (lambda name=name: importlib.import_module('tools.' + name).build_parser())
                for name in ('compare', 'embed', 'embed_onnx', 'evaluate', 'export', 'retrieval')})


@pytest.mark.parametrize('command', sorted(PARSERS))
def test_flags_are_spelled_with_underscores(command):
    flags = [s for action in PARSERS[command]()._actions for s in action.option_strings if s.startswith('--')]
    assert flags and [f for f in flags if '-' in f[2:]] == [], command


def test_hyphen_spellings_are_aliases():
    evaluate = PARSERS['tools.evaluate']()
    args = evaluate.parse_args(['--query-embeddings', 'q.npy', '--block-size=7', '--gallery_labels', 'g.npy'])
    assert (args.query_embeddings, args.block_size, args.gallery_labels) == ('q.npy', 7, 'g.npy')
    assert options.build_parser().parse_args(['--data-name', 'cub200', '--keep-best=3']).keep_best == 3
    with pytest.raises(UserError, match='--no-such-flag'):
        evaluate.parse_args(['--no-such-flag', '1'])
    assert '--query-embeddings' not in evaluate.format_help()      # --help lists one spelling


def test_printed_metrics_are_percent_everywhere(tmp_path, capsys):
    """main.py's lines (format_metrics) and tools.evaluate print the same numbers: percent."""
    import numpy as np

    from metrics.evaluation import evaluate, format_metrics
    from tools import evaluate as evaluate_tool
    rng = np.random.RandomState(0)
    embeddings, labels = rng.randn(40, 8).astype(np.float32), np.repeat(np.arange(10), 4)
    np.save(str(tmp_path / 'e.npy'), embeddings)
    np.save(str(tmp_path / 'l.npy'), labels)
    metrics = evaluate(embeddings, labels, recallk=(1, 2), metrics=('recall',))
    assert format_metrics({'R@1': 0.716, 'NMI': 0.5}) == 'R@1 71.60  NMI 50.00'
    evaluate_tool.main(['--embeddings', str(tmp_path / 'e.npy'), '--labels', str(tmp_path / 'l.npy'),
                        '--recallk', '1,2', '--metrics', 'recall'])
    printed = capsys.readouterr().out.split()
    for key, value in metrics.items():
        assert printed[printed.index(key) + 1] == format_metrics({key: value}).split()[1]


def test_convert_timm_vit_usage_error_is_one_line(capsys):
    from tools import convert_timm_vit
    assert convert_timm_vit.main([]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('error: ') and 'source, target' in err[0]
