"""CUB-200-2011: split by class, the first half of the sorted class ids train, the rest test.

data_dir is the ``CUB_200_2011`` folder or its parent, holding ``images.txt`` (id path),
``image_class_labels.txt`` (id class) and ``images/``. Labels are 0-based (class id - 1).
"""
import os

from utils.errors import UserError

from .splits import Splits

LAYOUT = "CUB_200_2011/{images.txt, image_class_labels.txt, images/}"


def find_root(data_dir):
    """The folder that holds images.txt: data_dir itself or data_dir/CUB_200_2011."""
    for root in (data_dir, os.path.join(data_dir, 'CUB_200_2011')):
        if os.path.isfile(os.path.join(root, 'images.txt')):
            return root
    raise UserError("CUB-200-2011: %s not found "
                    "(nor in %s); expected layout %s"
                    % (os.path.join(data_dir, 'images.txt'), os.path.join(data_dir, 'CUB_200_2011'), LAYOUT))


def _read_pairs(path):
    """``id value`` lines -> dict id -> value (the value may contain no spaces)."""
    if not os.path.isfile(path):
        raise UserError("CUB-200-2011: %s not found; expected layout %s" % (path, LAYOUT))
    pairs = {}
    with open(path) as f:
        for line_no, line in enumerate(f, start=1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 2:
                raise UserError("%s line %d: expected '<id> <value>', got %r" % (path, line_no, line.strip()))
            pairs[fields[0]] = fields[1]
    return pairs


def load_cub200(data_dir):
    """Splits(train, test) of ``(image path, label)``, class-disjoint halves."""
    root = find_root(data_dir)
    image_dir = os.path.join(root, 'images')
    if not os.path.isdir(image_dir):
        raise UserError("CUB-200-2011: image folder %s not found; expected layout %s" % (image_dir, LAYOUT))
    paths = _read_pairs(os.path.join(root, 'images.txt'))
    labels_path = os.path.join(root, 'image_class_labels.txt')
    classes = _read_pairs(labels_path)
    items = []
    for image_id, rel_path in paths.items():
        if image_id not in classes:
            raise UserError("%s has no class for image id %s" % (labels_path, image_id))
        try:
            label = int(classes[image_id]) - 1
        except ValueError:
            raise UserError("%s: class %r of image %s is not an integer"
                            % (labels_path, classes[image_id], image_id)) from None
        items.append((os.path.join(image_dir, rel_path), label))
    class_ids = sorted({label for _, label in items})
    train_classes = set(class_ids[:len(class_ids) // 2])
    train = [item for item in items if item[1] in train_classes]
    test = [item for item in items if item[1] not in train_classes]
    return Splits(train, test)
