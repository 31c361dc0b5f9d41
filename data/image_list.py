"""A data set given as a list of ``(source, label)`` pairs, decoded lazily with OpenCV."""
import os

import cv2
import mxnet as mx
import numpy as np

from utils.errors import UserError

from .image_header import DEFAULT_MAX_PIXELS, BadImageFile, check_image_file

# OpenCV's own thread pool can deadlock in DataLoader workers forked from a process that
# already used it, and the workers already give us parallelism.
cv2.setNumThreads(0)

# Images of more pixels by their header are refused before decoding (--max_image_pixels; main.py
# sets it before any loader or worker exists, so forked workers inherit it, as OpenCV's own limit).
MAX_PIXELS = DEFAULT_MAX_PIXELS


def set_max_pixels(max_pixels):
    global MAX_PIXELS
    MAX_PIXELS = int(max_pixels)


def read_rgb(path):
    """Decode an image file to an HxWx3 uint8 RGB array (greyscale becomes 3 equal channels).

    Raises UserError naming the path when the file is missing, its header claims more than
    MAX_PIXELS pixels, it is truncated, or it cannot be decoded.  The bytes are read by Python and
    decoded by cv2.imdecode: cv2.imread takes the name itself, and one that is not valid UTF-8 (a
    Latin-1 ``caf\xe9.png``) crashes OpenCV's binding.
    """
    if not os.path.isfile(path):        # a FIFO or device would block or never end
        raise UserError("cannot decode image %s: %s" % (path, 'not a regular file' if os.path.exists(path)
                                                         else 'file does not exist'))
    try:
        check_image_file(path, MAX_PIXELS)
        with open(path, 'rb') as f:
            data = np.frombuffer(f.read(), np.uint8)
        image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    except BadImageFile as exc:
        raise UserError("cannot decode image %s: %s" % (path, exc)) from exc
    except OSError as exc:
        raise UserError("cannot decode image %s: %s" % (path, exc.strerror)) from exc
    except cv2.error as exc:        # e.g. a header over OpenCV's own pixel limit
        raise UserError("cannot decode image %s: OpenCV refuses it (%s)"
                        % (path, str(exc).strip().splitlines()[-1][:200])) from exc
    if image is None:
        # cv2.imread signals unreadable, truncated or unsupported files only by returning None.
        raise UserError("cannot decode image %s: not a readable image file (corrupt or unsupported format)" % path)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def decode(source):
    """An item's source as HxWx3 uint8 RGB: an array as it is, a path by read_rgb."""
    return source if isinstance(source, np.ndarray) else read_rgb(source)


class ImageList(mx.gluon.data.Dataset):
    """Images and integer class labels.

    items: list of ``(source, label)``; source is an image file path (str) or an HxWx3 uint8 RGB
        array (in-memory data sets such as digits); label is an int class id.
    transform: callable taking the HxWx3 uint8 RGB image, e.g. ``data.transforms.test_transform(S)``
        which returns a 3xSxS float32 array; None returns the decoded image unchanged.

    ``dataset[i]`` -> ``(image, label)`` with label an ``np.int32`` scalar, so a DataLoader batch is
    ``(B x 3 x S x S float32, (B,) int32)``.
    """

    def __init__(self, items, transform=None):
        self.items = list(items)
        self.transform = transform
        self._labels = np.asarray([label for _, label in self.items], dtype=np.int64)

    @property
    def labels(self):
        """(N,) int64 class label of every item, in item order."""
        return self._labels

    def __len__(self):
        return len(self.items)

    def __getitem__(self, idx):
        source, label = self.items[idx]
        image = decode(source)
        if self.transform is not None:
            image = self.transform(image)
        return image, np.int32(label)
