"""Images per second per core of the training pipeline: the release's, ours, ours with --cache_images.

    python3 bench/data_bench.py --images DIR [--image_size 227] [--resize_to 700x470] [--rounds 5]

One training draw = what a DataLoader worker does for one image: read it and apply the train
transform (random resize or enlarge-and-crop, flip, to tensor, normalise); the batching after it is
the same for all three. (a) the release's pipeline: mx.image.imread, mx.image.imresize, a random
fixed_crop and gluon's RandomFlipLeftRight, ToTensor and Normalize (rebuilt here from the release's
description, docs/official_setup.md); (b) ours (data.ImageList with data.train_transform); (c) ours from the
image cache (data.image_cache, built once before the rounds, its build time printed). All in this
one process with one engine and one OpenCV thread, timed in CPU seconds of the process, so the
rates are per core whatever else the machine runs. Each round draws the same --draws random images
through each pipeline in turn (interleaved); medians over the rounds, brackets the range of the
per-round ratios. --resize_to re-encodes the images (JPEG, quality 95) at that size in a temporary
folder first, e.g. 700x470 for the size of CARS196's photos. The last line is
``cached/uncached R1x; uncached/release R2x`` (medians).
"""
import os

# Per core: one engine worker and one OpenCV / OpenMP thread (set before mxnet and cv2 load).
os.environ.setdefault('MXNET_CPU_WORKER_NTHREADS', '1')
os.environ.setdefault('OMP_NUM_THREADS', '1')

import argparse  # noqa: E402
import platform  # noqa: E402
import random  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import cv2  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import utils.mxnet_compat  # noqa: F401,E402  (before mxnet: old numpy names on Python 3.12+, CUDA wheels)
import mxnet as mx  # noqa: E402
import numpy as np  # noqa: E402
from mxnet.gluon.data.vision import transforms  # noqa: E402

from data import ImageList, train_transform  # noqa: E402
from data.image_cache import cache_image_lists  # noqa: E402
from data.transforms import IMAGENET_MEAN, IMAGENET_STD, TRANSLATION_SCALE  # noqa: E402

cv2.setNumThreads(1)


class ReleaseTrainTransform:
    """The release's train transform on an HxWx3 uint8 NDArray -> 3xSxS float32 NDArray."""

    def __init__(self, image_size):
        self.size = image_size
        self.big = int(round(image_size * TRANSLATION_SCALE))
        self.tail = transforms.Compose([transforms.RandomFlipLeftRight(), transforms.ToTensor(),
                                        transforms.Normalize(IMAGENET_MEAN.tolist(), IMAGENET_STD.tolist())])

    def __call__(self, image):
        size, big = self.size, self.big
        if random.random() < 0.5:
            image = mx.image.imresize(image, size, size, interp=1)
        else:
            image = mx.image.imresize(image, big, big, interp=1)
            x0, y0 = (int(round(random.uniform(0, big - size))) for _ in range(2))
            image = mx.image.fixed_crop(image, x0, y0, size, size)
        return self.tail(image)


def release_draw(paths, transform):
    def draw(i):
        out = transform(mx.image.imread(paths[i]))
        out.wait_to_read()      # the engine computes asynchronously
        return out
    return draw


def list_images(folder):
    return sorted(os.path.join(d, f) for d, _, files in os.walk(folder) for f in files
                  if f.lower().endswith(('.jpg', '.jpeg', '.png')))


def reencode(paths, shape, folder):
    """Copies of the images resized to shape (w, h), as JPEG quality 95 in folder."""
    out = []
    for i, path in enumerate(paths):
        target = os.path.join(folder, '%06d.jpg' % i)
        cv2.imwrite(target, cv2.resize(cv2.imread(path), shape, interpolation=cv2.INTER_LINEAR),
                    [cv2.IMWRITE_JPEG_QUALITY, 95])
        out.append(target)
    return out


def rate(draw, indices):
    """Draws per CPU second of this process."""
    start = time.process_time()
    for i in indices:
        draw(i)
    return len(indices) / (time.process_time() - start)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--images', required=True, help='a folder (searched recursively) of JPEG or PNG images')
    p.add_argument('--image_size', type=int, default=227)
    p.add_argument('--max_images', type=int, default=400, help='use the first this many images (sorted paths)')
    p.add_argument('--resize_to', default=None, help='WxH: benchmark re-encoded copies of that size')
    p.add_argument('--rounds', type=int, default=5)
    p.add_argument('--draws', type=int, default=200, help='images per pipeline per round')
    args = p.parse_args()
    cpu = next((l.split(':', 1)[1].strip() for l in open('/proc/cpuinfo') if l.startswith('model name')), '?')
    print('machine: %s, %d cores (load average %.1f), Python %s, mxnet %s, OpenCV %s' % (
        cpu, os.cpu_count(), os.getloadavg()[0], platform.python_version(), mx.__version__, cv2.__version__))
    paths = list_images(args.images)[:args.max_images]
    if not paths:
        sys.exit('error: no images under %s' % args.images)
    with tempfile.TemporaryDirectory() as tmp:
        if args.resize_to:
            paths = reencode(paths, tuple(int(v) for v in args.resize_to.lower().split('x')), tmp)
        shape = cv2.imread(paths[0]).shape
        print('%d images, the first %dx%d, to %d px' % (len(paths), shape[1], shape[0], args.image_size))
        ours = ImageList([(path, 0) for path in paths], train_transform(args.image_size))
        start = time.perf_counter()
        cached, = cache_image_lists([ours])
        print('cache built in %.1f s' % (time.perf_counter() - start))
        draws = {'release': release_draw(paths, ReleaseTrainTransform(args.image_size)),
                 'ours uncached': ours.__getitem__, 'ours cached': cached.__getitem__}
        rng = np.random.RandomState(0)
        rates = {name: [] for name in draws}
        for name, draw in draws.items():        # warm-up: imports, first allocations
            rate(draw, range(5))
        for _ in range(args.rounds):
            indices = rng.randint(len(paths), size=args.draws)
            for name, draw in draws.items():
                rates[name].append(rate(draw, indices))
    rates = {name: np.array(r) for name, r in rates.items()}
    print('| pipeline | images/s per core (median of %d rounds of %d) | / release |' % (args.rounds, args.draws))
    print('|---|---|---|')
    for name, r in rates.items():
        ratio = r / rates['release']
        print('| %s | %.0f | %.2fx (%.2f-%.2f) |' % (name, np.median(r), np.median(ratio), ratio.min(), ratio.max()))
    cached_ratio = rates['ours cached'] / rates['ours uncached']
    release_ratio = rates['ours uncached'] / rates['release']
    print('cached/uncached per round: %s; uncached/release: %s' % (
        ' '.join('%.2f' % v for v in cached_ratio), ' '.join('%.2f' % v for v in release_ratio)))
    print('cached/uncached %.2fx; uncached/release %.2fx' % (np.median(cached_ratio), np.median(release_ratio)))


if __name__ == '__main__':
    main()
