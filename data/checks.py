"""Checks of a data set before training: images that do not decode, classes too small to pair."""
import sys

import cv2
import numpy as np
from tqdm import tqdm

from utils.errors import UserError, warn

from .image_file import read_rgb
from .worker_pool import worker_map

# OpenCV's log level that keeps errors but drops its own warning per unreadable file, which would
# only repeat what our message says (cv2 has no named constant for it in Python).
_CV2_LOG_ERROR = 2


def _decode_error(source):
    """None when the image file decodes, else the UserError message naming it."""
    try:
        read_rgb(source)
    except UserError as err:
        return str(err)
    return None


def check_images(items, skip_bad_images=False, num_workers=0, desc='checking images'):
    """Decode every image file of items once, with a progress bar; returns the items that decode.

    skip_bad_images False: the first bad image (in item order) raises its UserError naming the file.
    True: the bad images are left out, with one warning giving their count and the first names.
    In-memory array sources are not checked. num_workers > 0 decodes in that many processes.
    Decoding is exactly what ImageList does, so every image kept will load during training.
    """
    items = list(items)
    paths = [source for source, _ in items if not isinstance(source, np.ndarray)]
    bad = []
    old_level = cv2.getLogLevel()
    cv2.setLogLevel(_CV2_LOG_ERROR)
    try:
        with worker_map(_decode_error, paths, num_workers, chunksize=64) as errors, \
                tqdm(total=len(paths), desc=desc, unit='img', file=sys.stderr, dynamic_ncols=True) as bar:
            for path, error in zip(paths, errors):
                bar.update()
                if error is not None:
                    if not skip_bad_images:
                        raise UserError("%s; pass --skip_bad_images to leave such images out" % error)
                    bad.append(path)
    finally:
        cv2.setLogLevel(old_level)
    if not bad:
        return items
    warn("skipped %d image(s) that cannot be decoded: %s%s"
         % (len(bad), ', '.join(bad[:3]), ', ...' if len(bad) > 3 else ''))
    dropped = set(bad)
    return [item for item in items if isinstance(item[0], np.ndarray) or item[0] not in dropped]


def check_splits(splits, skip_bad_images=False, num_workers=0):
    """check_images over all splits at once, each file decoded once; returns Splits of the kept items."""
    paths = list(dict.fromkeys(source for items in splits if items is not None for source, _ in items
                               if not isinstance(source, np.ndarray)))
    kept = {path for path, _ in check_images([(path, 0) for path in paths], skip_bad_images, num_workers)}
    return type(splits)(*(None if items is None else
                          [item for item in items if isinstance(item[0], np.ndarray) or item[0] in kept]
                          for items in splits))


def warn_single_image_classes(labels, split='training'):
    """Warn (one line) when classes of a split have a single image: they cannot form a positive pair.

    Not an error: the sampler draws a class's images with replacement, so such a class yields
    batches of one image repeated, which are merely uninformative.
    """
    classes, counts = np.unique(np.asarray(labels), return_counts=True)
    single = classes[counts == 1]
    if len(single):
        warn("%d of the %d %s classes have a single image and cannot form a "
             "positive pair (the sampler repeats it), e.g. label(s) %s"
             % (len(single), len(classes), split, ', '.join(map(str, single[:3]))))
