"""DataLoaders for every split of a data set, in the official EE configuration."""
import contextlib
import io
import multiprocessing
from collections import defaultdict
from itertools import count
from typing import NamedTuple, Optional

import mxnet as mx
import numpy as np

from utils.errors import UserError

from .checks import check_splits, warn_single_image_classes
from .image_cache import cache_image_lists
from .image_list import ImageList
from .registry import check_nonempty, get_dataset
from .sampler import ClassBalancedSampler
from .splits import label_map
from .transforms import test_transform, train_transform
from .validation import split_validation


# Seconds a DataLoader waits for a worker's batch (MXNet's default): a worker that died (OOM killer,
# a crash in a decoder) is replaced by the pool, but its batch never comes.
WORKER_TIMEOUT = 120


class DataLoader(mx.gluon.data.DataLoader):
    """MXNet's DataLoader whose wait for a worker's batch ends after WORKER_TIMEOUT seconds with one
    line (a UserError) instead of MXNet's note on stdout and a traceback; so does a batch that
    cannot be fetched from a worker that died after making it (its shared memory is gone)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, timeout=WORKER_TIMEOUT, **kwargs)

    def __iter__(self):
        batches = super().__iter__()
        quiet = contextlib.redirect_stdout(io.StringIO()) if self._num_workers else contextlib.nullcontext()
        while True:
            try:
                with quiet:
                    batch = next(batches)
            except StopIteration:
                return
            except multiprocessing.TimeoutError:
                raise UserError('a DataLoader worker gave no batch within %d s: it died (killed, e.g. for lack of '
                                'memory, or crashed in an image decoder) or is stuck; run with --num_workers 0 '
                                'to see the image' % self._timeout) from None
            except (OSError, EOFError) as exc:      # the images' own errors come as UserError
                # a dead worker's batch: its connection refused (OSError) or cut mid-message (EOFError)
                if not self._num_workers:
                    raise
                raise UserError('lost a DataLoader worker (%s): it died (killed, e.g. for lack of memory, or '
                                'crashed in an image decoder); run with --num_workers 0 to see the image'
                                % (getattr(exc, 'strerror', None) or exc or type(exc).__name__)) from None
            yield batch


class EvalSet(NamedTuple):
    """An evaluation split: its DataLoader (in item order, last batch kept) and (N,) int64 labels."""
    loader: DataLoader
    labels: np.ndarray


class SplitLoaders(NamedTuple):
    """What build_split_loaders returns; a split the data set does not have is None.

    train: the class-balanced training DataLoader; train_labels: (N,) labels 0..C-1 of its items
        (relabelled densely if skipped images or the validation split left gaps).
    test: the test split, evaluated by self-retrieval; None for In-Shop, whose query and gallery
        are set instead (Recall@K of each query against the gallery).
    val: the validation split held out of the training classes (val_class_ratio > 0), evaluated by
        self-retrieval like test.
    """
    train: DataLoader
    train_labels: np.ndarray
    test: Optional[EvalSet]
    query: Optional[EvalSet] = None
    gallery: Optional[EvalSet] = None
    val: Optional[EvalSet] = None


def build_split_loaders(name, data_dir, image_size, batch_size, num_instances, num_workers, test_batch_size=None,
                        val_class_ratio=0.0, val_seed=0, check_images=False, skip_bad_images=False, part=(0, 1),
                        cache_images=False, **options):
    """Read data set ``name`` and wrap every split in a DataLoader.

    Train batches are ``(batch_size x 3 x S x S float32, (batch_size,) int32)`` with num_instances
    consecutive images per class; an epoch is (training classes x num_instances) images, the
    incomplete last batch dropped. Evaluation batches (test_batch_size, default batch_size) follow
    the split's order.

    val_class_ratio, val_seed: hold out that fraction of the training classes (split_validation).
    check_images: decode every image once before training (progress bar, num_workers processes),
        so a bad image stops the run at once rather than at the first evaluation, hours in.
    skip_bad_images: implies check_images, and leaves the bad images out with one warning instead
        of raising a UserError naming the first.
    Without either, a bad image raises its UserError when first read; from a DataLoader worker
    (num_workers > 0) multiprocessing re-raises it in the main process as the same UserError.
    part: (rank, parts) of distributed training: this worker trains on every parts-th image of each
        class, starting at its rank; labels stay those of the whole training set.
    cache_images: decode every image of every split once into memory shared by the workers, at the
        sides the transforms resize to (data.image_cache); the batches are those of the uncached
        loaders, bit for bit. A UserError when the cache would not fit in the available memory.
    options: passed to the loaders that accept them, e.g. train_class_ratio for 'folder'.
    Warns (one line) about training classes with a single image.
    """
    splits = get_dataset(name, data_dir, skip_bad_images=skip_bad_images, **options)
    if check_images or skip_bad_images:
        splits = check_splits(splits, skip_bad_images, num_workers)
        check_nonempty(splits, name, data_dir)
    train_items, val_items = split_validation(splits.train, val_class_ratio, val_seed)
    # Proxy-Anchor indexes proxies by label: a class emptied by skip_bad_images must leave no gap.
    dense = label_map(label for _, label in train_items)
    train_items = [(source, dense[label]) for source, label in train_items]
    warn_single_image_classes(np.array([label for _, label in train_items]))
    rank, parts = part
    if parts > 1:
        position = defaultdict(count)       # an image's index within its class
        train_items = [item for item in train_items if next(position[item[1]]) % parts == rank]
    has_gallery = splits.gallery is not None
    eval_items = [None if has_gallery else splits.test, splits.query, splits.gallery, val_items]
    datasets = [ImageList(train_items, train_transform(image_size))] + [
        ImageList(items, test_transform(image_size)) if items else None for items in eval_items]
    if cache_images:
        cached = iter(cache_image_lists([d for d in datasets if d is not None], num_workers))
        datasets = [None if d is None else next(cached) for d in datasets]
    train_set = datasets[0]
    sampler = ClassBalancedSampler(train_set.labels, batch_size, num_instances)
    train_loader = DataLoader(train_set, sampler=sampler, batch_size=batch_size,
                                            last_batch='discard', num_workers=num_workers)

    def eval_set(images):
        if images is None:
            return None
        loader = DataLoader(images, batch_size=test_batch_size or batch_size, shuffle=False,
                                          last_batch='keep', num_workers=num_workers)
        return EvalSet(loader, images.labels)

    return SplitLoaders(train_loader, train_set.labels, *map(eval_set, datasets[1:]))


def build_loaders(name, data_dir, image_size, batch_size, num_instances, num_workers, test_batch_size=None,
                  **options):
    """(train_loader, test_loader, train_labels, test_labels): build_split_loaders for callers that
    know one test split only; a query/gallery data set (In-Shop) raises a UserError."""
    loaders = build_split_loaders(name, data_dir, image_size, batch_size, num_instances, num_workers,
                                  test_batch_size, **options)
    if loaders.test is None:
        raise UserError("data set %r is evaluated as queries against a gallery, which this "
                        "caller does not support (it needs data.build_split_loaders)" % name)
    return loaders.train, loaders.test.loader, loaders.train_labels, loaders.test.labels
