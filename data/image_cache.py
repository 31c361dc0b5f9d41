"""--cache_images: every image decoded once and kept, resized, in memory the DataLoader workers share.

A draw from the cache is only the transform's crop, flip and normalisation; the resizing is the
transform's own (data.transforms.resize of the full decode), done once per image and size, so the
pixels are those of the uncached path. The images live in one anonymous shared mmap created before
any worker forks: every worker reads the same physical pages, nothing is pickled or written to disk.
"""
import mmap
import os
import sys

import mxnet as mx
import numpy as np
from tqdm import tqdm

from utils.errors import UserError

from .image_list import decode
from .transforms import resize
from .worker_pool import worker_map

# What the filling processes read: set just before they fork (they inherit it), cleared after.
_FILL = None


def image_bytes(sizes):
    """Bytes of one image kept at every side in sizes: sum of 3 x side x side (uint8 RGB)."""
    return sum(3 * side * side for side in sizes)


def human_bytes(n):
    """'4.07 GB' or '12.3 MB' (decimal units)."""
    return '%.2f GB' % (n / 1e9) if n >= 1e9 else '%.1f MB' % (n / 1e6)


def available_memory():
    """Bytes that can be allocated without swapping: MemAvailable of /proc/meminfo, else the free pages."""
    try:
        with open('/proc/meminfo') as f:
            for line in f:
                if line.startswith('MemAvailable:'):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf('SC_AVPHYS_PAGES') * os.sysconf('SC_PAGE_SIZE')


class CachedImageList(mx.gluon.data.Dataset):
    """An ImageList whose images are read from the shared cache; ``dataset[i]`` is the same
    ``(transform output, np.int32 label)`` as the ImageList's for the same random state.

    Item i's images sit at ``offset + i * image_bytes(sizes)``, one side x side x 3 uint8 block per
    side in the transform's ``sizes``, in that order.
    """

    def __init__(self, images, buffer, offset):
        self.transform = images.transform
        self.sizes = tuple(images.transform.sizes)
        self._labels = images.labels
        self._buffer = buffer
        self._offset = offset
        self._stride = image_bytes(self.sizes)

    @property
    def labels(self):
        """(N,) int64 class label of every item, in item order."""
        return self._labels

    def __len__(self):
        return len(self._labels)

    def image(self, idx, side):
        """Item idx resized to side x side x 3 uint8: a read-only view of the shared pages."""
        start = self._offset + idx * self._stride
        for s in self.sizes:
            if s == side:
                view = np.frombuffer(self._buffer, np.uint8, 3 * s * s, start).reshape(s, s, 3)
                view.flags.writeable = False
                return view
            start += 3 * s * s
        raise KeyError('side %d is not cached (cached: %s)' % (side, self.sizes))

    def __getitem__(self, idx):
        return self.transform.from_resized(lambda side: self.image(idx, side)), np.int32(self._labels[idx])

    def __getstate__(self):
        # Only forked processes share the pages; a pickled copy would have to copy the whole cache.
        raise TypeError('a CachedImageList lives in shared memory and reaches DataLoader workers by fork only')


def _fill(job):
    """Decode one image and write it at each of its sides into the shared buffer."""
    buffer, jobs = _FILL
    source, start, sizes = jobs[job]
    image = decode(source)
    for side in sizes:
        block = np.frombuffer(buffer, np.uint8, 3 * side * side, start).reshape(side, side, 3)
        block[...] = resize(image, side)
        start += 3 * side * side
    return job


def cache_image_lists(image_lists, num_workers=0):
    """CachedImageLists of the given ImageLists (each with a transform that has ``sizes``), all in
    one shared buffer, each image decoded once; num_workers > 0 decodes in that many processes.

    Prints the cache's size first and shows a progress bar; raises a one-line UserError when the
    cache would not fit in the available memory.
    """
    global _FILL
    strides = [image_bytes(images.transform.sizes) for images in image_lists]
    total = sum(len(images) * stride for images, stride in zip(image_lists, strides))
    count = sum(len(images) for images in image_lists)
    kinds = ', '.join('%d at %s px' % (len(images), '+'.join(map(str, images.transform.sizes)))
                      for images in image_lists)
    available = available_memory()
    if total > available:
        raise UserError('--cache_images needs %s for %d images (%s) but only %s of memory is available; '
                        'train without --cache_images' % (human_bytes(total), count, kinds, human_bytes(available)))
    print('caching %d images (%s): %s of the %s available' % (count, kinds, human_bytes(total),
                                                              human_bytes(available)), flush=True)
    buffer = mmap.mmap(-1, max(total, 1))      # anonymous, MAP_SHARED: forked workers see the same pages
    jobs, cached, offset = [], [], 0
    for images, stride in zip(image_lists, strides):
        sizes = tuple(images.transform.sizes)
        jobs.extend((source, offset + i * stride, sizes) for i, (source, _) in enumerate(images.items))
        cached.append(CachedImageList(images, buffer, offset))
        offset += len(images) * stride
    _FILL = (buffer, jobs)
    try:
        with worker_map(_fill, range(len(jobs)), num_workers, chunksize=16) as done:
            for _ in tqdm(done, total=len(jobs), desc='caching images', unit='img', file=sys.stderr,
                          dynamic_ncols=True):
                pass
    finally:
        _FILL = None
    return cached
