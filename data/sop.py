"""Stanford Online Products: ``Ebay_train.txt`` (classes 1-11,318) and ``Ebay_test.txt`` (11,319-22,634).

data_dir is the ``Stanford_Online_Products`` folder or its parent. Each list has the header
``image_id class_id super_class_id path``, then one row per image with its path relative to the
folder holding the list (e.g. ``bicycle_final/111085122871_0.JPG``).
Labels: training classes 0..C-1, test classes C.. , both in class_id order (class_id - 1 on the
full release).
"""
import os

from utils.errors import UserError

from .splits import Splits, label_map

FOLDER = 'Stanford_Online_Products'
LISTS = ('Ebay_train.txt', 'Ebay_test.txt')
HEADER = 'image_id class_id super_class_id path'
LAYOUT = "%s/{%s, <super class>_final/*.JPG}" % (FOLDER, ', '.join(LISTS))


def find_root(data_dir):
    """The folder holding both lists: data_dir or data_dir/Stanford_Online_Products."""
    for root in (data_dir, os.path.join(data_dir, FOLDER)):
        if all(os.path.isfile(os.path.join(root, name)) for name in LISTS):
            return root
    missing = [name for name in LISTS if not os.path.isfile(os.path.join(data_dir, name))]
    raise UserError("Stanford Online Products: %s not found "
                    "(nor in %s); expected layout %s"
                    % (os.path.join(data_dir, missing[0]), os.path.join(data_dir, FOLDER), LAYOUT))


def read_list(root, name):
    """Rows of one list as ``(path, class_id)``; raises UserError naming the file and line."""
    list_path = os.path.join(root, name)
    with open(list_path) as f:
        lines = f.read().splitlines()
    if not lines or lines[0].split() != HEADER.split():
        got = lines[0] if lines else ''
        raise UserError("%s line 1: expected the header '%s', got %r" % (list_path, HEADER, got))
    rows = []
    for line_no, line in enumerate(lines[1:], start=2):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 4 or not fields[1].isdigit():
            raise UserError("%s line %d: expected '%s' with an integer class_id, "
                            "got %r" % (list_path, line_no, HEADER, line))
        rows.append((os.path.join(root, fields[3]), int(fields[1])))
    if not rows:
        raise UserError("%s lists no images (expected rows '%s' after the header)" % (list_path, HEADER))
    first = rows[0][0]
    if not os.path.isfile(first):
        # One stat catches a data_dir that holds the lists but not the images beside them.
        raise UserError("%s, the first image of %s, does not exist: "
                        "paths are relative to %s; expected layout %s" % (first, list_path, root, LAYOUT))
    return rows


def load_sop(data_dir):
    """Splits(train, test) of ``(image path, label)``; the lists must not share a class."""
    root = find_root(data_dir)
    train_rows, test_rows = (read_list(root, name) for name in LISTS)
    shared = {cid for _, cid in train_rows} & {cid for _, cid in test_rows}
    if shared:
        raise UserError("%s and %s share %d class_id(s), "
                        "e.g. %s; expected class-disjoint splits"
                        % (os.path.join(root, LISTS[0]), LISTS[1], len(shared), min(shared)))
    train_labels = label_map(cid for _, cid in train_rows)
    test_labels = label_map((cid for _, cid in test_rows), start=len(train_labels))
    return Splits([(path, train_labels[cid]) for path, cid in train_rows],
                  [(path, test_labels[cid]) for path, cid in test_rows])
