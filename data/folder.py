"""Any directory tree as a data set (``--data_name folder``): each folder that directly holds images is a class.

Classes are sorted by their path below data_dir, component by component (data_dir itself first,
if it holds images); the first ``round(train_class_ratio x classes)`` of them (halves round up)
train, the rest test, so the splits are class-disjoint. Labels are class indices in that order:
training 0..C-1, test C.. . Images within a class are in file-name order.

Images are recognised by extension (case-insensitive, IMAGE_EXTENSIONS). Hidden files and folders
(names starting with '.') and other files (README, LICENSE, ...) are ignored, except image formats
OpenCV cannot decode (UNSUPPORTED_EXTENSIONS, e.g. GIF, SVG): the first raises a UserError naming it,
or with skip_bad_images all are left out with one warning. Symbolic links to folders are followed,
each real folder once.
"""
import os

from utils.errors import UserError, warn

from .splits import Splits

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.ppm', '.pgm', '.tif', '.tiff', '.webp')
UNSUPPORTED_EXTENSIONS = ('.gif', '.svg', '.heic', '.heif', '.avif', '.jxl', '.jp2', '.ico', '.psd')


def find_class_folders(data_dir, skip_bad_images=False):
    """``[(relative folder parts, [image paths])]`` sorted by folder, for every folder holding images."""
    classes, unsupported, seen = [], [], set()
    for folder, subdirs, files in os.walk(data_dir, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:  # a link back up the tree would otherwise walk forever
            subdirs[:] = []
            continue
        seen.add(real)
        subdirs[:] = [d for d in subdirs if not d.startswith('.')]
        images = []
        for name in sorted(f for f in files if not f.startswith('.')):
            ext = os.path.splitext(name)[1].lower()
            if ext in IMAGE_EXTENSIONS:
                images.append(os.path.join(folder, name))
            elif ext in UNSUPPORTED_EXTENSIONS:
                unsupported.append(os.path.join(folder, name))
        if images:
            rel = os.path.relpath(folder, data_dir)
            classes.append(((), images) if rel == os.curdir else (tuple(rel.split(os.sep)), images))
    if unsupported:
        supported = ', '.join(e[1:] for e in IMAGE_EXTENSIONS)
        if not skip_bad_images:
            raise UserError("%s: image format not supported (supported: %s); "
                            "convert or remove it, or pass --skip_bad_images" % (unsupported[0], supported))
        warn("skipped %d image(s) of unsupported formats (supported: %s): %s%s"
             % (len(unsupported), supported, ', '.join(unsupported[:3]), ', ...' if len(unsupported) > 3 else ''))
    return sorted(classes)


def load_folder(data_dir, train_class_ratio=0.5, skip_bad_images=False):
    """Splits(train, test) of ``(image path, label)``: the first classes in path order train, the rest test."""
    classes = find_class_folders(data_dir, skip_bad_images)
    if len(classes) < 2:
        raise UserError("%s has %d folder(s) directly holding images; expected at "
                        "least 2, one per class (any depth), images with extensions %s"
                        % (data_dir, len(classes), ', '.join(e[1:] for e in IMAGE_EXTENSIONS)))
    num_train = int(train_class_ratio * len(classes) + 0.5)
    if not 0 < num_train < len(classes):
        raise UserError("--train_class_ratio %s leaves %d of the %d "
                        "classes in %s for training; both splits need at least one class"
                        % (train_class_ratio, num_train, len(classes), data_dir))
    items = [(path, label) for label, (_, images) in enumerate(classes) for path in images]
    num_train_images = sum(len(images) for _, images in classes[:num_train])
    return Splits(items[:num_train_images], items[num_train_images:])
