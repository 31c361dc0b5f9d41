"""Data sets, transforms and loaders.

Every data set is a function ``load(data_dir) -> (train_items, test_items)``: lists of
``(source, label)`` for ``ImageList``, with class-disjoint train and test splits.
"""
import os

import mxnet as mx

from utils.errors import UserError

from .cars196 import load_cars196
from .cub200 import load_cub200
from .digits import DIGITS_DEFAULTS, load_digits_split
from .image_list import ImageList
from .sampler import ClassBalancedSampler
from .transforms import test_transform, train_transform

DATASETS = {
    'cars196': load_cars196,
    'car196': load_cars196,  # the official code's default spelling
    'cub200': load_cub200,
    'digits': load_digits_split,
}

# Names whose loader reads nothing from --data_dir.
_BUNDLED = {'digits'}

# Per-data-set defaults of main.py's flags, for the flags the command line does not set.
DEFAULTS = {'digits': DIGITS_DEFAULTS}


def get_dataset(name, data_dir):
    """(train_items, test_items) of data set ``name`` read from data_dir."""
    key = name.lower()
    if key not in DATASETS:
        raise UserError(f"unknown data set {name!r} (--data_name); choose one of {', '.join(sorted(DATASETS))}")
    if key not in _BUNDLED:
        if not os.path.isdir(data_dir):
            raise UserError(f"data directory {data_dir} does not exist (--data_dir)")
        if not os.listdir(data_dir):
            raise UserError(f"data directory {data_dir} is empty (--data_dir)")
    train, test = DATASETS[key](data_dir)
    for split, items in (('training', train), ('test', test)):
        if not items:
            raise UserError(f"data set {name!r} in {data_dir} has no {split} images")
    return train, test


def build_loaders(name, data_dir, image_size, batch_size, num_instances, num_workers, test_batch_size=None):
    """Training and test DataLoaders in the official configuration.

    Returns (train_loader, test_loader, train_labels, test_labels). Train batches are
    ``(batch_size x 3 x S x S float32, (batch_size,) int32)`` with num_instances consecutive images
    per class; an epoch is (training classes x num_instances) images, the incomplete last batch
    dropped. Test batches follow the test split's order, the last batch kept.
    """
    train_items, test_items = get_dataset(name, data_dir)
    train_set = ImageList(train_items, train_transform(image_size))
    test_set = ImageList(test_items, test_transform(image_size))
    sampler = ClassBalancedSampler(train_set.labels, batch_size, num_instances)
    train_loader = mx.gluon.data.DataLoader(train_set, sampler=sampler, batch_size=batch_size,
                                            last_batch='discard', num_workers=num_workers)
    test_loader = mx.gluon.data.DataLoader(test_set, batch_size=test_batch_size or batch_size, shuffle=False,
                                           last_batch='keep', num_workers=num_workers)
    return train_loader, test_loader, train_set.labels, test_set.labels
