"""In-Shop Clothes Retrieval: ``Eval/list_eval_partition.txt`` splits the images into train, query, gallery.

data_dir holds ``Eval/`` and ``img/``. The list has the image count on line 1, the header
``image_name item_id evaluation_status`` on line 2, then one row per image, e.g.
``img/WOMEN/Dresses/id_00000002/02_1_front.jpg id_00000002 train``, paths relative to data_dir.
Labels: training items 0..C-1, then the test items C.. , both in item_id order; query and
gallery share the test labels, so an item has one label in both.
"""
import os

from utils.errors import UserError

from .splits import Splits, label_map

LIST = os.path.join('Eval', 'list_eval_partition.txt')
HEADER = 'image_name item_id evaluation_status'
STATUSES = ('train', 'query', 'gallery')
LAYOUT = "data_dir/{%s (line 1 the count, line 2 '%s'), img/...}" % (LIST, HEADER)


def read_partition(data_dir):
    """``{status: [(path, item_id), ...]}`` from the list; raises UserError naming file and line."""
    list_path = os.path.join(data_dir, LIST)
    if not os.path.isfile(list_path):
        raise UserError("In-Shop: %s not found; expected layout %s" % (list_path, LAYOUT))
    with open(list_path) as f:
        lines = f.read().splitlines()
    if len(lines) < 2 or not lines[0].strip().isdigit() or lines[1].split() != HEADER.split():
        raise UserError("%s is malformed: expected the image count on line 1 and the header "
                        "'%s' on line 2" % (list_path, HEADER))
    rows = {status: [] for status in STATUSES}
    for line_no, line in enumerate(lines[2:], start=3):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 3 or fields[2] not in rows:
            raise UserError("%s line %d: expected '%s' with a status among "
                            "%s, got %r" % (list_path, line_no, HEADER, ', '.join(STATUSES), line))
        rows[fields[2]].append((os.path.join(data_dir, fields[0]), fields[1]))
    count = sum(len(r) for r in rows.values())
    if count != int(lines[0]):
        raise UserError("%s: line 1 announces %d images but %d rows follow "
                        "(a truncated or edited file?)" % (list_path, int(lines[0]), count))
    return rows


def load_inshop(data_dir):
    """Splits(train, test = query + gallery, query, gallery) of ``(image path, label)``."""
    rows = read_partition(data_dir)
    list_path = os.path.join(data_dir, LIST)
    for status in STATUSES:
        if not rows[status]:
            raise UserError("%s has no '%s' rows" % (list_path, status))
    first = rows['train'][0][0]
    if not os.path.isfile(first):
        # One stat catches a data_dir that holds Eval/ but not img/.
        raise UserError("%s, the first image of %s, does not exist: paths are relative to "
                        "%s; expected layout %s" % (first, list_path, data_dir, LAYOUT))
    train_items = {item for _, item in rows['train']}
    test_items = {item for _, item in rows['query'] + rows['gallery']}
    shared = train_items & test_items
    if shared:
        raise UserError("%s: %d item_id(s) are both train and query/gallery, "
                        "e.g. %s; expected class-disjoint splits" % (list_path, len(shared), min(shared)))
    train_labels = label_map(train_items)
    test_labels = label_map(test_items, start=len(train_labels))
    train = [(path, train_labels[item]) for path, item in rows['train']]
    query = [(path, test_labels[item]) for path, item in rows['query']]
    gallery = [(path, test_labels[item]) for path, item in rows['gallery']]
    return Splits(train, query + gallery, query, gallery)
