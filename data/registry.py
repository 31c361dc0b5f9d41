"""The data set registry: ``--data_name`` -> loader.

A loader is ``load(data_dir, **options) -> Splits``. get_dataset passes each loader only the
options its signature names, so main.py can hand every option (``train_class_ratio``,
``skip_bad_images``, ...) to every data set.
"""
import inspect
import os

from utils.errors import UserError

from .cars196 import load_cars196
from .cub200 import load_cub200
from .digits import DIGITS_DEFAULTS, load_digits_split
from .folder import load_folder
from .inshop import load_inshop
from .sop import load_sop

DATASETS = {
    'cars196': load_cars196,
    'car196': load_cars196,  # the official code's default spelling
    'cub200': load_cub200,
    'sop': load_sop,
    'inshop': load_inshop,
    'folder': load_folder,
    'digits': load_digits_split,
}

# Names whose loader reads nothing from --data_dir.
_BUNDLED = {'digits'}

# Per-data-set defaults of main.py's flags, for the flags the command line does not set.
DEFAULTS = {'digits': DIGITS_DEFAULTS}

# Default --data_dir of each data set read from disk: the folder its release unpacks to, under
# ./datasets (what python3 -m data.prepare makes). folder has none: --data_dir names it.
DATA_DIRS = {
    'cars196': './datasets/CARS196',
    'car196': './datasets/CARS196',
    'cub200': './datasets/CUB_200_2011',
    'sop': './datasets/Stanford_Online_Products',
    'inshop': './datasets/InShop',
}

# The data sets python3 -m data.prepare makes from their archives.
PREPARED = ('cars196', 'cub200', 'sop', 'inshop')


def check_nonempty(splits, name, data_dir):
    """UserError naming the first split (of those the data set has) without images."""
    for split, items in zip(('training', 'test', 'query', 'gallery'), splits):
        if items is not None and not items:
            raise UserError("data set %r in %s has no %s images" % (name, data_dir, split))


def get_dataset(name, data_dir, **options):
    """Splits of data set ``name`` read from data_dir; options go to the loaders that accept them."""
    key = name.lower()
    if key not in DATASETS:
        raise UserError("unknown data set %r (--data_name); choose one of %s" % (name, ', '.join(sorted(DATASETS))))
    if key not in _BUNDLED:
        if data_dir is None:
            raise UserError("data set %r has no default folder: name it with --data_dir" % name)
        prepared = 'cars196' if key == 'car196' else key
        hint = ('; python3 -m data.prepare %s SRC --data_dir %s makes it from the archives'
                % (prepared, data_dir)) if prepared in PREPARED else ''
        if not os.path.isdir(data_dir):
            raise UserError("data directory %s of data set %s does not exist (--data_dir%s)" % (data_dir, name, hint))
        if not os.listdir(data_dir):
            raise UserError("data directory %s of data set %s is empty (--data_dir%s)" % (data_dir, name, hint))
    load = DATASETS[key]
    accepted = inspect.signature(load).parameters
    splits = load(data_dir, **{k: v for k, v in options.items() if k in accepted})
    check_nonempty(splits, name, data_dir)
    return splits
