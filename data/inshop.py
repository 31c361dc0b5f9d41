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
LAYOUT = f"data_dir/{{{LIST} (line 1 the count, line 2 '{HEADER}'), img/...}}"


def read_partition(data_dir):
    """``{status: [(path, item_id), ...]}`` from the list; raises UserError naming file and line."""
    list_path = os.path.join(data_dir, LIST)
    if not os.path.isfile(list_path):
        raise UserError(f"In-Shop: {list_path} not found; expected layout {LAYOUT}")
    with open(list_path) as f:
        lines = f.read().splitlines()
    if len(lines) < 2 or not lines[0].strip().isdigit() or lines[1].split() != HEADER.split():
        raise UserError(f"{list_path} is malformed: expected the image count on line 1 and the header "
                        f"'{HEADER}' on line 2")
    rows = {status: [] for status in STATUSES}
    for line_no, line in enumerate(lines[2:], start=3):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 3 or fields[2] not in rows:
            raise UserError(f"{list_path} line {line_no}: expected '{HEADER}' with a status among "
                            f"{', '.join(STATUSES)}, got {line!r}")
        rows[fields[2]].append((os.path.join(data_dir, fields[0]), fields[1]))
    count = sum(len(r) for r in rows.values())
    if count != int(lines[0]):
        raise UserError(f"{list_path}: line 1 announces {int(lines[0])} images but {count} rows follow "
                        f"(a truncated or edited file?)")
    return rows


def load_inshop(data_dir):
    """Splits(train, test = query + gallery, query, gallery) of ``(image path, label)``."""
    rows = read_partition(data_dir)
    list_path = os.path.join(data_dir, LIST)
    for status in STATUSES:
        if not rows[status]:
            raise UserError(f"{list_path} has no '{status}' rows")
    first = rows['train'][0][0]
    if not os.path.isfile(first):
        # One stat catches a data_dir that holds Eval/ but not img/.
        raise UserError(f"{first}, the first image of {list_path}, does not exist: paths are relative to "
                        f"{data_dir}; expected layout {LAYOUT}")
    train_items = {item for _, item in rows['train']}
    test_items = {item for _, item in rows['query'] + rows['gallery']}
    shared = train_items & test_items
    if shared:
        raise UserError(f"{list_path}: {len(shared)} item_id(s) are both train and query/gallery, "
                        f"e.g. {min(shared)}; expected class-disjoint splits")
    train_labels = label_map(train_items)
    test_labels = label_map(test_items, start=len(train_labels))
    train = [(path, train_labels[item]) for path, item in rows['train']]
    query = [(path, test_labels[item]) for path, item in rows['query']]
    gallery = [(path, test_labels[item]) for path, item in rows['gallery']]
    return Splits(train, query + gallery, query, gallery)
