"""Tests of the benchmark-scale data sets (SOP, In-Shop, folder), bad-image checks and the validation split."""
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

import data
from data import transforms as T  # not `from ... import test_transform`: pytest would collect it
from data.folder import load_folder
from data.image_list import ImageList
from data.inshop import load_inshop
from data.sop import load_sop
from tests.test_data import CARS_CLASSES, write_cars_mat
from utils.errors import UserError

OMNIGLOT = Path(__file__).resolve().parents[2] / 'shared' / 'data' / 'omniglot_small'


def write_jpeg(path, shade=0):
    """A small image at path (JPEG, or the format its extension names)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((10, 14, 3), shade, np.uint8))


def one_line_error(call, *fragments):
    """Run call, expect a UserError of one line containing every fragment; return its message."""
    with pytest.raises(UserError) as err:
        call()
    message = str(err.value)
    assert '\n' not in message
    for fragment in fragments:
        assert str(fragment) in message, message
    return message


# ---------------------------------------------------------------- Stanford Online Products

SOP_TRAIN = [(1, 'bicycle'), (1, 'bicycle'), (2, 'bicycle'), (5, 'chair')]
SOP_TEST = [(11319, 'sofa'), (11319, 'sofa'), (11320, 'mug')]


def write_sop(root, train=SOP_TRAIN, test=SOP_TEST):
    root.mkdir(parents=True, exist_ok=True)
    for name, rows in (('Ebay_train.txt', train), ('Ebay_test.txt', test)):
        lines = ['image_id class_id super_class_id path']
        for i, (cid, sup) in enumerate(rows, start=1):
            rel = f'{sup}_final/{cid}_{i}.JPG'
            write_jpeg(root / rel, i)
            lines.append(f'{i} {cid} 1 {rel}')
        (root / name).write_text('\n'.join(lines) + '\n')


def test_sop_release_lists(tmp_path):
    root = tmp_path / 'Stanford_Online_Products'
    write_sop(root)
    for data_dir in (tmp_path, root):  # the release folder or its parent
        splits = data.get_dataset('sop', str(data_dir))
        assert [label for _, label in splits.train] == [0, 0, 1, 2]
        assert [label for _, label in splits.test] == [3, 3, 4]
        assert splits.query is None and splits.gallery is None
        assert splits.train[0][0] == os.path.join(str(root), 'bicycle_final/1_1.JPG')
    image, label = ImageList(splits.test, T.test_transform(8))[2]
    assert image.shape == (3, 8, 8) and label == 4


def test_sop_bad_lists_name_file(tmp_path):
    one_line_error(lambda: load_sop(str(tmp_path)), 'Ebay_train.txt', 'Stanford_Online_Products/{')
    write_sop(tmp_path)
    lst = tmp_path / 'Ebay_test.txt'
    good = lst.read_text()
    lst.write_text(good.replace('image_id class_id', 'id class'))
    one_line_error(lambda: load_sop(str(tmp_path)), 'Ebay_test.txt line 1', 'header')
    lst.write_text(good + '9 x 1 a.JPG\n')
    one_line_error(lambda: load_sop(str(tmp_path)), 'Ebay_test.txt line 5', 'class_id')
    lst.write_text(good.replace('11320 1', '2 1'))
    one_line_error(lambda: load_sop(str(tmp_path)), 'share 1 class_id', 'class-disjoint')
    lst.write_text(good)
    (tmp_path / 'bicycle_final' / '1_1.JPG').unlink()
    one_line_error(lambda: load_sop(str(tmp_path)), '1_1.JPG', 'Ebay_train.txt', 'relative to')


# ---------------------------------------------------------------- In-Shop

INSHOP_ROWS = [('id_00000001', 'train'), ('id_00000001', 'train'), ('id_00000003', 'train'),
               ('id_00000008', 'query'), ('id_00000002', 'query'), ('id_00000002', 'gallery'),
               ('id_00000008', 'gallery'), ('id_00000008', 'gallery')]


def write_inshop(root, rows=INSHOP_ROWS, count=None):
    lines = [str(len(rows) if count is None else count), 'image_name item_id evaluation_status']
    for i, (item, status) in enumerate(rows):
        rel = f'img/WOMEN/Dresses/{item}/{i:02d}_1_front.jpg'
        write_jpeg(root / rel, 20 * i)
        lines.append(f'{rel}   {item} {status}')
    (root / 'Eval').mkdir(exist_ok=True)
    (root / 'Eval' / 'list_eval_partition.txt').write_text('\n'.join(lines) + '\n')


def test_inshop_query_and_gallery_share_item_labels(tmp_path):
    write_inshop(tmp_path)
    splits = data.get_dataset('inshop', str(tmp_path))
    assert [label for _, label in splits.train] == [0, 0, 1]
    # Test items id_00000002 -> 2 and id_00000008 -> 3, the same in query and gallery.
    assert [label for _, label in splits.query] == [3, 2]
    assert [label for _, label in splits.gallery] == [2, 3, 3]
    assert splits.test == splits.query + splits.gallery
    assert splits.query[0][0] == os.path.join(str(tmp_path), 'img/WOMEN/Dresses/id_00000008/03_1_front.jpg')
    assert ImageList(splits.gallery)[0][0].shape == (10, 14, 3)


def test_inshop_bad_list_names_file(tmp_path):
    one_line_error(lambda: load_inshop(str(tmp_path)), 'list_eval_partition.txt', 'image_name item_id')
    write_inshop(tmp_path, count=9)
    one_line_error(lambda: load_inshop(str(tmp_path)), 'list_eval_partition.txt', 'announces 9', '8 rows')
    write_inshop(tmp_path, INSHOP_ROWS + [('id_00000009', 'validation')])
    one_line_error(lambda: load_inshop(str(tmp_path)), 'line 11', 'train, query, gallery')
    write_inshop(tmp_path, INSHOP_ROWS + [('id_00000003', 'gallery')])
    one_line_error(lambda: load_inshop(str(tmp_path)), 'id_00000003', 'class-disjoint')
    write_inshop(tmp_path, [row for row in INSHOP_ROWS if row[1] != 'query'])
    one_line_error(lambda: load_inshop(str(tmp_path)), "no 'query' rows")


def test_inshop_loaders_are_query_and_gallery(tmp_path):
    write_inshop(tmp_path)
    loaders = data.build_split_loaders('inshop', str(tmp_path), image_size=8, batch_size=2, num_instances=1,
                                       num_workers=0)
    assert loaders.test is None and loaders.val is None
    assert loaders.query.labels.tolist() == [3, 2] and loaders.gallery.labels.tolist() == [2, 3, 3]
    images, labels = next(iter(loaders.gallery.loader))
    assert images.shape == (2, 3, 8, 8) and labels.asnumpy().tolist() == [2, 3]
    one_line_error(lambda: data.build_loaders('inshop', str(tmp_path), 8, 2, 1, 0), 'gallery')


# ---------------------------------------------------------------- folder

def test_folder_on_omniglot():
    if not OMNIGLOT.is_dir():
        pytest.skip(f'{OMNIGLOT} not present')
    splits = data.get_dataset('folder', str(OMNIGLOT))
    folders = [os.path.dirname(path) for path, _ in splits.train + splits.test]
    labels = [label for _, label in splits.train + splits.test]
    first_folder = {}
    for folder, label in zip(folders, labels):
        assert first_folder.setdefault(label, folder) == folder  # one folder per label
    assert len(first_folder) == 242 and sorted(first_folder) == list(range(242))
    assert {label for _, label in splits.train} == set(range(121))
    assert {label for _, label in splits.test} == set(range(121, 242))
    train_folders = {os.path.dirname(path) for path, _ in splits.train}
    assert len(train_folders) == 121 and not train_folders & {os.path.dirname(path) for path, _ in splits.test}
    # Labels follow the sorted (alphabet, character) paths.
    parts = [tuple(os.path.relpath(first_folder[label], OMNIGLOT).split(os.sep)) for label in range(242)]
    assert parts == sorted(parts) and all(len(p) == 3 and p[0] == 'images' for p in parts)
    assert parts[0] == ('images', 'Balinese', 'character01')
    assert len(splits.train) + len(splits.test) == 4840
    image, _ = ImageList(splits.test)[0]
    assert image.shape == (105, 105, 3) and image.dtype == np.uint8
    assert (image[..., 0] == image[..., 2]).all()


def write_tree(root):
    """Classes '' (root), 'a', 'a/b', 'c/d/e'; plus files that are not images and a hidden folder."""
    for rel in ('top.jpg', 'a/2.jpg', 'a/1.PNG', 'a/b/x.jpeg', 'c/d/e/y.webp', '.cache/z.jpg'):
        write_jpeg(root / rel)  # OpenCV picks the format from the extension
    (root / 'README.md').write_text('not an image')
    (root / 'a' / 'notes.txt').write_text('not an image')


def test_folder_nested_tree(tmp_path):
    write_tree(tmp_path)
    # num_instances: an option no loader takes, which get_dataset must not pass on.
    splits = data.get_dataset('folder', str(tmp_path), train_class_ratio=0.5, num_instances=3)
    rel = [(os.path.relpath(path, tmp_path), label) for path, label in splits.train + splits.test]
    assert rel == [('top.jpg', 0), ('a/1.PNG', 1), ('a/2.jpg', 1), ('a/b/x.jpeg', 2), ('c/d/e/y.webp', 3)]
    assert len(splits.train) == 3  # round(0.5 x 4) = 2 classes: the root and a
    splits = load_folder(str(tmp_path), train_class_ratio=0.6)  # 2.4 -> 2; 0.625 x 4 = 2.5 -> 3
    assert {label for _, label in splits.train} == {0, 1}
    assert {label for _, label in load_folder(str(tmp_path), 0.625).train} == {0, 1, 2}
    one_line_error(lambda: load_folder(str(tmp_path), train_class_ratio=0.1), '--train_class_ratio 0.1', '4 classes')
    one_line_error(lambda: load_folder(str(tmp_path / 'a' / 'b')), 'at least 2', 'jpg, jpeg, png')


def test_folder_unsupported_format(tmp_path, capsys):
    write_tree(tmp_path)
    (tmp_path / 'a' / 'anim.GIF').write_bytes(b'GIF89a')
    one_line_error(lambda: load_folder(str(tmp_path)), 'anim.GIF', 'not supported', 'jpg, jpeg, png, bmp')
    splits = data.get_dataset('folder', str(tmp_path), skip_bad_images=True)
    assert len(splits.train + splits.test) == 5
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and err.startswith('warning: skipped 1 image') and 'anim.GIF' in err


# ---------------------------------------------------------------- bad images (CARS196 release files)

def corrupt_cars(root):
    write_cars_mat(root)
    bad = root / 'car_ims' / '000005.jpg'  # class 99: the test split
    bad.write_bytes(b'not a jpeg' * 10)
    return str(bad)


def test_corrupt_image_is_named_by_the_pre_scan(tmp_path):
    bad = corrupt_cars(tmp_path)
    one_line_error(lambda: data.build_split_loaders('cars196', str(tmp_path), 8, 4, 2, 0, check_images=True),
                   f'cannot decode image {bad}', '--skip_bad_images')


def test_corrupt_image_skipped_with_one_warning(tmp_path, capsys):
    bad = corrupt_cars(tmp_path)
    loaders = data.build_split_loaders('cars196', str(tmp_path), 8, 4, 2, num_workers=2, skip_bad_images=True)
    warnings = [l for l in capsys.readouterr().err.splitlines() if l.startswith('warning:')]
    assert len(warnings) == 2 and 'skipped 1 image(s)' in warnings[0] and bad in warnings[0]
    assert '2 of the 3 training classes have a single image' in warnings[1]  # classes 2 and 98
    assert loaders.test.labels.tolist() == [98, 149, 195]
    assert loaders.train_labels.tolist() == [0, 0, 1, 2]  # dense for Proxy-Anchor: release classes 1, 2, 98
    assert sum(len(labels) for _, labels in loaders.test.loader) == 3


def test_corrupt_image_in_a_worker_arrives_as_user_error(tmp_path):
    bad = corrupt_cars(tmp_path)
    train_loader, test_loader, _, test_labels = data.build_loaders('cars196', str(tmp_path), 8, 4, 2, num_workers=2)
    assert len(test_labels) == len(CARS_CLASSES) - 4
    one_line_error(lambda: list(test_loader), f'cannot decode image {bad}')


def test_check_images_keeps_order_and_arrays(tmp_path):
    good, bad = tmp_path / 'good.jpg', tmp_path / 'bad.jpg'
    write_jpeg(good)
    bad.write_bytes(b'')
    array = np.zeros((2, 2, 3), np.uint8)
    items = [(str(bad), 0), (array, 1), (str(good), 2), (str(tmp_path / 'gone.png'), 3)]
    kept = data.check_images(items, skip_bad_images=True)
    assert [label for _, label in kept] == [1, 2]
    one_line_error(lambda: data.check_images(items), 'bad.jpg')


# ---------------------------------------------------------------- validation split

def labelled(counts):
    return [(f'img{c}_{i}.jpg', c) for c, n in enumerate(counts) for i in range(n)]


def test_split_validation_class_disjoint_and_deterministic():
    items = labelled([3, 1, 4, 2, 5, 2, 3, 2, 2, 4])
    train, val = data.split_validation(items, 0.25)  # 2.5 -> 3 classes held out
    assert (train, val) == data.split_validation(items, 0.25, seed=0)
    assert data.split_validation(items, 0.25, seed=1) != (train, val)
    val_classes = {label for _, label in val}
    assert len(val_classes) == 3
    train_sources = {source for source, _ in train}
    assert not train_sources & {source for source, _ in val}
    assert train_sources | {source for source, _ in val} == {source for source, _ in items}
    # Kept classes relabelled 0..6 in order; sources of one class stay together under one label.
    assert sorted({label for _, label in train}) == list(range(7))
    assert len({source.split('_')[0] for source, label in train if label == 0}) == 1
    assert [source for source, _ in train] == [s for s, label in items if label not in val_classes]
    assert val == [item for item in items if item[1] in val_classes]


def test_split_validation_edges():
    items = labelled([2, 2, 2])
    assert data.split_validation(items, 0) == (items, [])
    train, val = data.split_validation(items, 0.01)  # rounds to 0, at least one class held out
    assert len({label for _, label in val}) == 1
    one_line_error(lambda: data.split_validation(items, 0.9), '--val_class_ratio 0.9', 'none to train')
    one_line_error(lambda: data.split_validation(items, 1.0), 'in [0, 1)')


def test_validation_loader_on_digits():
    loaders = data.build_split_loaders('digits', None, 8, 4, 2, 0, test_batch_size=1000, val_class_ratio=0.4)
    assert sorted(np.unique(loaders.train_labels).tolist()) == [0, 1, 2]
    assert len(np.unique(loaders.val.labels)) == 2 and len(loaders.val.loader) == 1
    assert len(loaders.test.labels) == 1797 - len(loaders.train_labels) - len(loaders.val.labels)


def test_distributed_workers_split_every_class_between_them():
    from data import build_split_loaders
    parts = [build_split_loaders('digits', None, 8, 10, 2, 0, part=(rank, 3)) for rank in range(3)]
    whole = build_split_loaders('digits', None, 8, 10, 2, 0)
    sizes = [len(p.train_labels) for p in parts]
    assert sum(sizes) == len(whole.train_labels) and max(sizes) - min(sizes) <= 5
    for p in parts:      # every worker keeps every class, with the whole set's labels
        assert set(p.train_labels) == set(whole.train_labels)
    images = [{source.tobytes() for source, _ in p.train._dataset.items} for p in parts]
    assert not (images[0] & images[1]) and not (images[1] & images[2])
