"""Tests of the data package: sampler, transforms, data set readers, registry."""
import os
import pickle
import random
from pathlib import Path

import cv2
import mxnet as mx
import numpy as np
import pytest
import scipy.io

import data
from data import transforms as T  # not `from ... import test_transform`: pytest would collect it
from data.cars196 import load_cars196
from data.cub200 import load_cub200
from data.digits import load_digits_split
from data.image_list import ImageList
from data.sampler import ClassBalancedSampler
from runner.options import flag_errors
from utils.errors import UserError

CUB_SUBSET = Path(__file__).resolve().parents[2] / 'shared' / 'data' / 'CUB_100_subset'


# ---------------------------------------------------------------- sampler

def reference_sampler(labels, batch_size, num_instances, max_examples):
    """A plain restatement of the official procedure, to compare against draw for draw."""
    by_class = {}
    for idx, label in enumerate(labels):
        by_class.setdefault(label, []).append(idx)
    out = []
    while True:
        seen = set()
        for i in np.random.permutation(len(labels)):
            if labels[i] in seen:
                continue
            seen.add(labels[i])
            pool = by_class[labels[i]]
            out += [i] + list(np.random.choice(pool, num_instances - 1, replace=len(pool) < num_instances - 1))
            if len(out) >= max_examples:
                return [int(x) for x in out]
            if len(out) % batch_size == 0:
                seen = set()


def shuffled_labels(num_classes, per_class, seed=0):
    labels = np.repeat(np.arange(num_classes), per_class)
    return np.random.RandomState(seed).permutation(labels)


@pytest.mark.parametrize('max_examples', [None, 400])
def test_sampler_batches_hold_distinct_classes_in_groups(max_examples):
    labels = shuffled_labels(10, 20)
    sampler = ClassBalancedSampler(labels, batch_size=8, num_instances=4, max_examples=max_examples)
    np.random.seed(0)
    order = list(sampler)
    assert len(order) == len(sampler) == (max_examples or 10 * 4)
    for start in range(0, len(order), 8):
        batch = labels[order[start:start + 8]]
        groups = batch.reshape(2, 4)
        assert (groups == groups[:, :1]).all()  # 4 consecutive images of one class
        assert groups[0, 0] != groups[1, 0]  # 2 distinct classes per batch
        assert (batch[0::2] == batch[1::2]).all()  # EE's partner rows share a class


@pytest.mark.parametrize('seed', [0, 1, 7])
def test_sampler_matches_reference_draw_for_draw(seed):
    # Small classes (1 and 3 images), several permutation passes, an uneven max_examples.
    labels = [0, 1, 1, 1, 2, 2, 3, 3, 3, 3, 3, 0, 4]
    np.random.seed(seed)
    expected = reference_sampler(labels, 4, 2, 50)
    np.random.seed(seed)
    got = list(ClassBalancedSampler(labels, 4, 2, max_examples=50))
    assert got == expected
    assert len(got) == len(ClassBalancedSampler(labels, 4, 2, max_examples=50)) == 50


def test_sampler_same_seed_same_order():
    sampler = ClassBalancedSampler(shuffled_labels(6, 5), 4, 2)
    np.random.seed(3)
    first = list(sampler)
    np.random.seed(3)
    assert list(sampler) == first
    np.random.seed(4)
    assert list(sampler) != first


def test_sampler_replacement_only_for_small_classes():
    # Class 0 has 2 images (< num_instances-1 = 3): drawn with replacement, so repeats are certain.
    # Class 1 has exactly 3: drawn without replacement, so its 3 extra images are all distinct.
    labels = [0, 0, 1, 1, 1] + [2] * 10
    sampler = ClassBalancedSampler(labels, 4, 4, max_examples=400)
    np.random.seed(0)
    order = np.array(list(sampler)).reshape(-1, 4)
    cls = np.asarray(labels)[order[:, 0]]
    assert (np.asarray(labels)[order] == cls[:, None]).all()
    small, exact = order[cls == 0], order[cls == 1]
    assert len(small) and len(exact)
    assert all(len(set(g)) < 4 for g in small)
    assert all(sorted(g[1:]) == [2, 3, 4] for g in exact)


@pytest.mark.parametrize('batch_size, num_instances, flag', [
    (10, 4, '--batch_size'), (10, 4, '--num_instances'), (2, 4, '--batch_size'), (8, 0, '--num_instances'),
])
def test_sampler_rejects_bad_flags(batch_size, num_instances, flag):
    """The sampler's ValueError reaches the command line naming the flags."""
    with pytest.raises(UserError, match=flag), flag_errors():
        ClassBalancedSampler(shuffled_labels(10, 5), batch_size, num_instances)


def test_sampler_rejects_too_few_classes():
    with pytest.raises(ValueError, match='classes'):
        ClassBalancedSampler(shuffled_labels(3, 5), batch_size=8, num_instances=2)


def test_sampler_in_dataloader_discards_last_batch():
    labels = shuffled_labels(5, 4)
    items = [(np.full((4, 4, 3), 10 * label, np.uint8), int(label)) for label in labels]
    sampler = ClassBalancedSampler(labels, batch_size=4, num_instances=2)  # 10 indices -> 2 batches
    loader = mx.gluon.data.DataLoader(ImageList(items, T.test_transform(4)), sampler=sampler,
                                      batch_size=4, last_batch='discard')
    batches = list(loader)
    assert len(batches) == 2
    images, batch_labels = batches[0]
    assert images.shape == (4, 3, 4, 4) and batch_labels.dtype == np.int32


# ---------------------------------------------------------------- transforms

def random_image(h=40, w=30, seed=0):
    return np.random.RandomState(seed).randint(0, 256, (h, w, 3)).astype(np.uint8)


@pytest.mark.parametrize('make', [T.train_transform, T.test_transform])
def test_transform_output_shape_and_type(make):
    out = make(24)(random_image())
    assert out.shape == (3, 24, 24) and out.dtype == np.float32 and out.flags['C_CONTIGUOUS']


def test_test_transform_of_constant_image_is_normalised_constant():
    out = T.test_transform(16)(np.full((20, 33, 3), 100, np.uint8))
    x = np.float32(100) / np.float32(255)
    for c, (mean, std) in enumerate(zip((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))):
        expected = (x - np.float32(mean)) / np.float32(std)
        assert (out[c] == out[c, 0, 0]).all()
        np.testing.assert_allclose(out[c], expected, rtol=0, atol=1e-6)


def test_normalisation_table_gives_the_formulas_bits():
    # Every level in every channel, through a cropped and a flipped view as the train transform makes.
    levels = np.stack([np.roll(np.arange(256, dtype=np.uint8), 85 * c) for c in range(3)], axis=-1)
    image = np.concatenate([levels.reshape(16, 16, 3), random_image(16, 16)], axis=1)
    for view in (image, image[2:14, 3:], image[:, ::-1]):
        x = view.astype(np.float32) / np.float32(255.0)
        expected = ((x - T.IMAGENET_MEAN) / T.IMAGENET_STD).transpose(2, 0, 1)
        out = T.to_normalised_chw(view)
        assert out.dtype == np.float32 and out.flags['C_CONTIGUOUS']
        np.testing.assert_array_equal(out, expected)


def test_train_transform_repeatable_with_seed():
    transform, image = T.train_transform(20), random_image()
    random.seed(5)
    first = [transform(image) for _ in range(4)]
    random.seed(5)
    again = [transform(image) for _ in range(4)]
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(first[0], other) for other in first[1:])


def test_train_transform_flips_left_right():
    image = random_image()
    plain = T.test_transform(20)(image)
    outcomes = set()
    for seed in range(30):
        random.seed(seed)
        out = T.train_transform(20)(image)
        if np.array_equal(out, plain):
            outcomes.add('plain')
        elif np.array_equal(out, plain[:, :, ::-1]):
            outcomes.add('flipped')
    assert outcomes == {'plain', 'flipped'}


def test_transforms_are_picklable():
    for transform in (T.train_transform(8), T.test_transform(8)):
        clone = pickle.loads(pickle.dumps(transform))
        assert clone.image_size == 8


# ---------------------------------------------------------------- image list

def test_image_list_reads_rgb_and_grey(tmp_path):
    red = tmp_path / 'red.png'
    cv2.imwrite(str(red), np.tile(np.array([0, 0, 255], np.uint8), (5, 6, 1)))  # BGR on disk
    grey = tmp_path / 'grey.png'
    cv2.imwrite(str(grey), np.full((5, 6), 77, np.uint8))
    images = ImageList([(str(red), 3), (str(grey), 4)])
    image, label = images[0]
    assert image.shape == (5, 6, 3) and (image == [255, 0, 0]).all() and label == 3
    image, _ = images[1]
    assert image.shape == (5, 6, 3) and (image == 77).all()
    assert images.labels.dtype == np.int64 and images.labels.tolist() == [3, 4]


def test_image_list_corrupt_or_missing_file_names_path(tmp_path):
    bad = tmp_path / 'x.jpg'
    bad.write_bytes(b'this is not a jpeg at all' * 10)
    with pytest.raises(UserError, match='cannot decode image .*x.jpg'):
        ImageList([(str(bad), 0)])[0]
    with pytest.raises(UserError, match='nothere.jpg'):
        ImageList([(str(tmp_path / 'nothere.jpg'), 0)])[0]


# ---------------------------------------------------------------- CARS196

CARS_CLASSES = [1, 1, 2, 98, 99, 99, 150, 196]


def write_car_images(root, classes=CARS_CLASSES):
    (root / 'car_ims').mkdir()
    paths = []
    for i, _ in enumerate(classes, start=1):
        rel = f'car_ims/{i:06d}.jpg'
        cv2.imwrite(str(root / rel), np.full((12 + i, 20, 3), 10 * i, np.uint8))
        paths.append(rel)
    return paths


def write_cars_mat(root, fields=('relative_im_path', 'bbox_x1', 'bbox_y1', 'bbox_x2', 'bbox_y2', 'class', 'test')):
    paths = write_car_images(root)
    annotations = np.zeros((1, len(paths)), dtype=[(f, 'O') for f in fields])
    for i, (rel, cls) in enumerate(zip(paths, CARS_CLASSES)):
        values = dict(relative_im_path=rel, bbox_x1=1, bbox_y1=2, bbox_x2=10, bbox_y2=11, test=i % 2)
        values['class'] = np.array([[cls]], np.uint8)
        for f in fields:
            annotations[0, i][f] = values[f]
    scipy.io.savemat(str(root / 'cars_annos.mat'), {'annotations': annotations})


def check_cars_split(root, train, test):
    # Class 98 is the last training class; labels are 0-based in both layouts.
    assert [label for _, label in train] == [0, 0, 1, 97]
    assert [label for _, label in test] == [98, 98, 149, 195]
    assert train[0][0] == os.path.join(str(root), 'car_ims/000001.jpg')
    image, label = ImageList(test, T.test_transform(16))[2]
    assert image.shape == (3, 16, 16) and label == 149
    assert ImageList(train)[3][0].shape == (16, 20, 3)


def test_cars196_release_mat(tmp_path):
    write_cars_mat(tmp_path)
    train, test = load_cars196(str(tmp_path))[:2]
    check_cars_split(tmp_path, train, test)
    assert data.get_dataset('car196', str(tmp_path)) == data.Splits(train, test)


@pytest.mark.parametrize('meta_sub', ['', 'meta'])
def test_cars196_official_meta_text(tmp_path, meta_sub):
    paths = write_car_images(tmp_path)
    meta_dir = tmp_path / meta_sub
    meta_dir.mkdir(exist_ok=True)
    for name, keep in (('train.txt', lambda c: c <= 98), ('test.txt', lambda c: c > 98)):
        lines = ['image_id class_id view_id path']
        lines += [f'{i} {c - 1} 0 {p}' for i, (p, c) in enumerate(zip(paths, CARS_CLASSES), 1) if keep(c)]
        (meta_dir / name).write_text('\n'.join(lines) + '\n')
    train, test = load_cars196(str(tmp_path))[:2]
    check_cars_split(tmp_path, train, test)


def test_cars196_missing_layout_names_directory(tmp_path):
    (tmp_path / 'car_ims').mkdir()
    with pytest.raises(UserError) as err:
        load_cars196(str(tmp_path))
    message = str(err.value)
    assert str(tmp_path) in message and 'cars_annos.mat' in message and 'train.txt' in message
    assert '\n' not in message


def test_cars196_needs_image_folder(tmp_path):
    write_cars_mat(tmp_path)
    for f in (tmp_path / 'car_ims').iterdir():
        f.unlink()
    (tmp_path / 'car_ims').rmdir()
    with pytest.raises(UserError, match='car_ims'):
        load_cars196(str(tmp_path))


def test_cars196_malformed_mat_names_file(tmp_path):
    write_cars_mat(tmp_path, fields=('relative_im_path', 'test'))
    mat = str(tmp_path / 'cars_annos.mat')
    with pytest.raises(UserError, match=r'cars_annos\.mat.*class'):
        load_cars196(str(tmp_path))
    scipy.io.savemat(mat, {'something_else': np.zeros(3)})
    with pytest.raises(UserError, match=r'cars_annos\.mat.*annotations'):
        load_cars196(str(tmp_path))
    Path(mat).write_bytes(b'garbage' * 20)
    with pytest.raises(UserError, match=r'cars_annos\.mat'):
        load_cars196(str(tmp_path))


# ---------------------------------------------------------------- CUB-200-2011

def test_cub200_subset_split_by_class():
    if not CUB_SUBSET.is_dir():
        pytest.skip(f'{CUB_SUBSET} not present')
    for data_dir in (CUB_SUBSET, CUB_SUBSET / 'CUB_200_2011'):
        train, test = load_cub200(str(data_dir))[:2]
        rows = (CUB_SUBSET / 'CUB_200_2011' / 'image_class_labels.txt').read_text().split('\n')
        classes = [int(row.split()[1]) for row in rows if row.strip()]
        assert len(train) == sum(c <= 50 for c in classes) and len(test) == sum(c > 50 for c in classes)
        assert {label for _, label in train} == set(range(50))
        assert {label for _, label in test} == set(range(50, 100))
    image, label = ImageList(test, T.test_transform(32))[0]
    assert image.shape == (3, 32, 32) and image.dtype == np.float32 and label >= 50


def test_cub200_missing_files_name_file(tmp_path):
    with pytest.raises(UserError, match='images.txt'):
        load_cub200(str(tmp_path))
    root = tmp_path / 'CUB_200_2011'
    (root / 'images').mkdir(parents=True)
    (root / 'images.txt').write_text('1 a/b.jpg\n')
    with pytest.raises(UserError, match='image_class_labels.txt'):
        load_cub200(str(tmp_path))


# ---------------------------------------------------------------- digits and registry

def test_digits_split_is_class_disjoint():
    train, test = load_digits_split()[:2]
    assert len(train) + len(test) == 1797
    assert {label for _, label in train} == {0, 1, 2, 3, 4}
    assert {label for _, label in test} == {5, 6, 7, 8, 9}
    images = np.stack([image for image, _ in train + test])
    assert images.dtype == np.uint8 and images.shape == (1797, 8, 8, 3)
    assert images.min() == 0 and images.max() == 255  # 0..16 scaled to the full byte range
    assert (images[..., 0] == images[..., 2]).all()


def test_registry_errors(tmp_path):
    with pytest.raises(UserError, match='cars196.*cub200.*digits.*folder.*inshop.*sop'):
        data.get_dataset('mnist', str(tmp_path))
    with pytest.raises(UserError, match=r'of data set cub200 does not exist \(--data_dir; python3 -m data.prepare cub200'):
        data.get_dataset('cub200', str(tmp_path / 'missing'))
    with pytest.raises(UserError, match=r'of data set car196 is empty \(--data_dir; python3 -m data.prepare cars196'):
        data.get_dataset('car196', str(tmp_path))
    with pytest.raises(UserError, match=r"data set 'folder' has no default folder: name it with --data_dir"):
        data.get_dataset('folder', None)
    assert set(data.DATASETS) == {'cars196', 'car196', 'cub200', 'digits', 'sop', 'inshop', 'folder'}


def test_build_loaders_on_digits():
    train_loader, test_loader, train_labels, test_labels = data.build_loaders(
        'digits', None, image_size=16, batch_size=4, num_instances=2, num_workers=0, test_batch_size=500)
    assert len(train_loader) == 5 * 2 // 4
    images, labels = next(iter(train_loader))
    assert images.shape == (4, 3, 16, 16)
    assert len(test_loader) == 2 and len(test_labels) == 1797 - len(train_labels)


def test_forked_workers_draw_different_augmentations():
    """Two DataLoader workers, each a batch of the same image: their crops and flips differ. A
    worker start-up that reseeded every worker alike (or forked without Python's own reseed)
    would give two identical batches."""
    import random
    from data import transforms as T
    t = T.train_transform(16)
    image = np.random.RandomState(0).randint(0, 255, (20, 20, 3)).astype(np.uint8)
    random.seed(0)
    dataset = mx.gluon.data.SimpleDataset([image] * 16).transform(t)
    batches = [b.asnumpy() for b in mx.gluon.data.DataLoader(dataset, batch_size=8, num_workers=2)]
    assert len(batches) == 2 and not np.array_equal(batches[0], batches[1])
