"""A data set given as a list of ``(source, label)`` pairs, decoded lazily (data/image_file.py)."""
import mxnet as mx
import numpy as np

from .image_file import read_rgb


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
