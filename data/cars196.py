"""CARS196 (Stanford Cars): classes 1-98 train, 99-196 test; whole images, no bounding-box crop.

Two layouts of data_dir are understood, tried in this order:
  (a) the standard release: ``cars_annos.mat`` + ``car_ims/``;
  (b) the official EE meta files: ``train.txt`` and ``test.txt`` (in data_dir or data_dir/meta)
      with header ``image_id class_id view_id path`` and lines like ``1 0 0 car_ims/000001.jpg``.
Labels are 0-based (release class - 1), so both layouts give the same labels.
"""
import os

import numpy as np
import scipy.io

from utils.errors import UserError

from .splits import Splits

NUM_TRAIN_CLASSES = 98  # release classes 1..98 train, 99..196 test
MAT_NAME = 'cars_annos.mat'
MAT_FIELDS = ('relative_im_path', 'class')
META_DIRS = ('', 'meta', os.path.join('meta', 'CARS196'))


def _check_image_dir(data_dir):
    image_dir = os.path.join(data_dir, 'car_ims')
    if not os.path.isdir(image_dir):
        raise UserError("CARS196: image folder %s does not exist (expected data_dir/car_ims/)" % image_dir)


def load_from_mat(data_dir):
    """Read ``cars_annos.mat``; returns Splits(train, test) of ``(path, label 0..195)``."""
    mat_path = os.path.join(data_dir, MAT_NAME)
    expected = "a struct array 'annotations' with fields " + ', '.join(MAT_FIELDS)
    try:
        mat = scipy.io.loadmat(mat_path, squeeze_me=True)
    except Exception as err:  # scipy raises several types for truncated or non-MAT files
        raise UserError("cannot read %s: %s (expected %s)" % (mat_path, err, expected)) from None
    annotations = mat.get('annotations')
    if annotations is None:
        raise UserError("%s is malformed: no 'annotations' variable (expected %s)" % (mat_path, expected))
    names = getattr(annotations.dtype, 'names', None) or ()
    missing = [field for field in MAT_FIELDS if field not in names]
    if missing:
        raise UserError("%s is malformed: 'annotations' lacks field(s) %s "
                        "(expected %s)" % (mat_path, ', '.join(missing), expected))
    # squeeze_me turns a single annotation into a 0-d array.
    annotations = np.atleast_1d(annotations)
    train, test = [], []
    for record in annotations:
        try:
            rel_path, cls = str(record['relative_im_path']), int(record['class'])
        except (TypeError, ValueError) as err:
            raise UserError("%s is malformed: bad annotation %r (%s; expected %s)"
                            % (mat_path, record, err, expected)) from None
        item = (os.path.join(data_dir, rel_path), cls - 1)
        (train if cls <= NUM_TRAIN_CLASSES else test).append(item)
    return Splits(train, test)


def _read_meta(data_dir, meta_path):
    items = []
    with open(meta_path) as f:
        lines = f.read().splitlines()
    for line_no, line in enumerate(lines[1:], start=2):  # line 1 is the header
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != 4:
            raise UserError("%s line %d: expected 'image_id class_id view_id path', got %r"
                            % (meta_path, line_no, line))
        try:
            label = int(fields[1])
        except ValueError:
            raise UserError("%s line %d: class_id %r is not an integer" % (meta_path, line_no, fields[1])) from None
        items.append((os.path.join(data_dir, fields[3]), label))
    return items


def find_meta_dir(data_dir):
    """The folder holding train.txt and test.txt (data_dir, data_dir/meta or data_dir/meta/CARS196), or None."""
    for sub in META_DIRS:
        folder = os.path.join(data_dir, sub)
        if all(os.path.isfile(os.path.join(folder, name)) for name in ('train.txt', 'test.txt')):
            return folder
    return None


def load_from_meta(data_dir, meta_dir):
    """Read the official EE meta files; image paths are relative to data_dir."""
    return Splits(_read_meta(data_dir, os.path.join(meta_dir, 'train.txt')),
                  _read_meta(data_dir, os.path.join(meta_dir, 'test.txt')))


def load_cars196(data_dir):
    """Splits(train, test) of ``(image path, label)`` from either layout of data_dir."""
    if os.path.isfile(os.path.join(data_dir, MAT_NAME)):
        _check_image_dir(data_dir)
        return load_from_mat(data_dir)
    meta_dir = find_meta_dir(data_dir)
    if meta_dir is not None:
        _check_image_dir(data_dir)
        return load_from_meta(data_dir, meta_dir)
    raise UserError("CARS196 not found in %s: expected either %s + car_ims/ (standard release) "
                    "or train.txt + test.txt (official EE meta, in data_dir or data_dir/meta) + car_ims/"
                    % (data_dir, MAT_NAME))
