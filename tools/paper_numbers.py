"""The papers' published numbers (configs/paper_numbers.csv), looked up by ``dataset/method``.

The CSV holds one figure per line, ``paper,dataset,method,metric,value``, with the value in percent as
the papers print it (71.6, not 0.716). ``dataset`` is main.py's ``--data_name`` and ``method`` the
name of the row's config file without the data set, so ``configs/ee/cars196_ee_hphn_triplet.txt``
has the key ``cars196/ee_hphn_triplet``.
"""
import csv
import math
import os

from utils.errors import UserError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CSV = os.path.join(REPO, 'configs', 'paper_numbers.csv')
COLUMNS = ['paper', 'dataset', 'method', 'metric', 'value']
# main.py accepts the official release's spelling of CARS196 too.
DATASET_ALIASES = {'car196': 'cars196'}
MAX_CSV_BYTES = 1 << 20     # the table is a few KB


def load_paper_numbers(path=DEFAULT_CSV):
    """{'dataset/method': {'R@1': 71.6, 'NMI': 63.1, ...}} with values in percent."""
    if os.path.exists(path) and not os.path.isfile(path):     # a FIFO would block, /dev/zero never end
        raise UserError('the paper numbers %s are not a regular file' % path)
    if os.path.isfile(path) and os.path.getsize(path) > MAX_CSV_BYTES:
        raise UserError('the paper numbers %s are over %d bytes: not a table of published figures'
                        % (path, MAX_CSV_BYTES))
    try:
        with open(path, newline='') as f:
            rows = list(csv.reader(f))
    except OSError as exc:
        raise UserError('cannot read the paper numbers %s: %s' % (path, exc.strerror)) from exc
    except (UnicodeDecodeError, csv.Error) as exc:      # a binary file, a NUL byte
        raise UserError('the paper numbers %s are not a CSV text file (%s)' % (path, exc)) from None
    if not rows or rows[0] != COLUMNS:
        raise UserError('%s: the first line must be %s' % (path, ','.join(COLUMNS)))
    table = {}
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != len(COLUMNS):
            raise UserError('%s line %d: expected %d fields, got %d' % (path, line, len(COLUMNS), len(row)))
        _, dataset, method, metric, value = row
        try:
            number = float(value)
            if not math.isfinite(number):
                raise ValueError(value)
            table.setdefault('%s/%s' % (dataset, method), {})[metric] = number
        except ValueError:
            raise UserError('%s line %d: value %r is not a number' % (path, line, value)) from None
    return table


def read_flags(path):
    """{flag: value} of a main.py --config file (``--flag=value`` or ``--flag value`` tokens), read
    as main.py reads it (runner.options.read_config: a regular file of control-free values)."""
    from runner.options import read_config
    tokens = read_config(path)
    flags = {}
    for i, token in enumerate(tokens):
        if not token.startswith('--'):
            continue
        if '=' in token:
            name, value = token[2:].split('=', 1)
        else:
            following = tokens[i + 1] if i + 1 < len(tokens) else ''
            name, value = token[2:], '' if following.startswith('--') else following
        flags[name] = value
    return flags


def run_paper_key(run_dir, table):
    """The key of the paper row a run reproduces, from the ``args.txt`` main.py saves; None if unknown.

    The method is the --loss, prefixed ``ee_`` when Embedding Expansion was on and the table has such
    a row (proxy losses have none, so their --n_inner_pts does not matter).
    """
    path = os.path.join(run_dir, 'args.txt')
    if not os.path.isfile(path):
        return None
    flags = read_flags(path)
    dataset = flags.get('data_name', '').lower()
    dataset = DATASET_ALIASES.get(dataset, dataset)
    loss = flags.get('loss', '').replace('-', '_')
    try:
        expanded = int(flags.get('n_inner_pts', '0')) > 0
    except ValueError:
        expanded = False
    for method in (['ee_' + loss] if expanded else []) + [loss]:
        key = '%s/%s' % (dataset, method)
        if key in table:
            return key
    return None
