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
