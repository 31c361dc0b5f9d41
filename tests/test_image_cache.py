"""Tests of --cache_images (data.image_cache): the same batches as without it, the memory refusal,
the flag's way from main.py to the loaders."""
import random
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

import data
import main
from data import image_cache
from data import transforms as T
from data.cub200 import load_cub200
from data.image_list import ImageList
from utils.errors import UserError

CUB_SUBSET = Path(__file__).resolve().parents[2] / 'shared' / 'data' / 'CUB_100_subset'

# Four classes of five images of varied shapes (none square, one greyscale), two train, two test.
SHAPES = [(37, 50), (64, 41), (29, 29), (80, 33), (45, 70)]
SIZE = 24                                   # resized to 24 and round(1.125 x 24) = 27


def make_folder(root):
    rng = np.random.RandomState(0)
    for c in range(4):
        for i, (h, w) in enumerate(SHAPES):
            image = rng.randint(0, 256, (h, w, 3)).astype(np.uint8)
            if c == 3 and i == 0:
                image = image[:, :, 0]
            (root / ('class%d' % c)).mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(root / ('class%d' % c) / ('%d.png' % i)), image)
    return root


def loaders(root, cache, num_workers=0):
    return data.build_split_loaders('folder', str(root), SIZE, batch_size=4, num_instances=2,
                                    num_workers=num_workers, cache_images=cache)


def batches(loader, epochs, seed):
    np.random.seed(seed)
    random.seed(seed)
    return [(x.asnumpy(), y.asnumpy()) for _ in range(epochs) for x, y in loader]


def assert_same_batches(a, b):
    assert len(a) == len(b) > 0
    for (xa, ya), (xb, yb) in zip(a, b):
        assert xa.dtype == xb.dtype == np.float32
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)


def test_cached_batches_are_bit_identical(tmp_path):
    root = make_folder(tmp_path / 'images')
    plain, cached = loaders(root, False), loaders(root, True)
    assert isinstance(cached.train._dataset, image_cache.CachedImageList)
    # Many epochs, so that both the resized and the enlarged-and-cropped branch, and flips, occur.
    first = batches(plain.train, 10, seed=3)
    assert_same_batches(first, batches(cached.train, 10, seed=3))
    assert_same_batches(batches(plain.test.loader, 1, 0), batches(cached.test.loader, 1, 0))
    np.testing.assert_array_equal(plain.train_labels, cached.train_labels)
    # The draws do vary: a seed that changed nothing would make the comparison vacuous.
    assert any(not np.array_equal(a[0], b[0]) for a, b in zip(first, batches(plain.train, 10, seed=4)))


def test_cached_loaders_read_memory_not_files_in_workers(tmp_path):
    root = make_folder(tmp_path / 'images')
    expected = batches(loaders(root, False).test.loader, 1, 0)
    cached = loaders(root, True, num_workers=2)
    shutil.rmtree(root)                     # every draw must now come from the shared pages
    assert_same_batches(expected, batches(cached.test.loader, 1, 0))
    train = batches(cached.train, 2, seed=0)
    assert all(x.shape == (4, 3, SIZE, SIZE) for x, _ in train)


def test_cache_refuses_in_one_line_when_memory_is_short(tmp_path, monkeypatch, capsys):
    root = make_folder(tmp_path / 'images')
    # 10 training images at 24 and 27 px, 10 test images at 24 px, 3 bytes a pixel.
    need = 10 * 3 * (24 * 24 + 27 * 27) + 10 * 3 * 24 * 24
    monkeypatch.setattr(image_cache, 'available_memory', lambda: need - 1)
    with pytest.raises(UserError) as err:
        loaders(root, True)
    message = str(err.value)
    assert '\n' not in message and '--cache_images' in message and image_cache.human_bytes(need) in message
    assert '20 images' in message
    monkeypatch.setattr(image_cache, 'available_memory', lambda: need)
    loaders(root, True)
    assert image_cache.human_bytes(need) in capsys.readouterr().out


def test_available_memory_is_plausible():
    free = image_cache.available_memory()
    assert 0 < free <= image_cache.os.sysconf('SC_PHYS_PAGES') * image_cache.os.sysconf('SC_PAGE_SIZE')


@pytest.mark.skipif(not CUB_SUBSET.is_dir(), reason='needs ../shared/data/CUB_100_subset')
def test_cached_cub_images_give_the_same_pixels():
    items = load_cub200(str(CUB_SUBSET)).train[::40]    # real JPEGs, ~75 of them
    for transform in (T.train_transform(100), T.test_transform(100)):
        plain = ImageList(items, transform)
        cached, = image_cache.cache_image_lists([plain])
        for seed in range(3):
            random.seed(seed)
            expected = [plain[i] for i in range(len(plain))]
            random.seed(seed)
            for i, (x, y) in enumerate(expected):
                got, label = cached[i]
                np.testing.assert_array_equal(got, x)
                assert label == y and label.dtype == np.int32


def test_main_passes_cache_images_to_the_loaders(tmp_path, monkeypatch):
    seen = []

    class Stop(Exception):
        pass

    def fake(*args, **kwargs):
        seen.append(kwargs.get('cache_images'))
        raise Stop

    monkeypatch.setattr(data, 'build_split_loaders', fake)
    for flags, expected in (([], False), (['--cache_images'], True)):
        with pytest.raises(Stop):
            main.main(['--save_dir', str(tmp_path / str(expected))] + flags)
    assert seen == [False, True]


@pytest.mark.slow
def test_main_trains_alike_with_and_without_the_cache(tmp_path, capsys):
    # Bit-identical batches and the same seeds: the same training, to the last printed digit.
    quick = ['--epochs', '6', '--eval_epoch_term', '3', '--batch_size', '40', '--num_instances', '8']
    best = []
    for flags in ([], ['--cache_images']):
        assert main.main(quick + flags + ['--save_dir', str(tmp_path / str(len(flags)))]) == 0
        out = capsys.readouterr().out
        assert ('caching ' in out) == bool(flags)
        best.append([line for line in out.splitlines() if line.startswith(('best:', '[epoch'))])
    assert best[0] == best[1] and len(best[0]) == 3
