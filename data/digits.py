"""A tiny offline benchmark: scikit-learn's bundled 8x8 handwritten digits, split by class."""
import numpy as np

from .splits import Splits

TRAIN_CLASSES = (0, 1, 2, 3, 4)


def load_digits_split(data_dir=None):
    """Digits 0-4 train, 5-9 test (class-disjoint, like the metric-learning benchmarks).

    data_dir is ignored (the data ship with scikit-learn); it is accepted so that every loader in
    the registry has one signature.
    Returns Splits(train, test) of ``(8x8x3 uint8 RGB array, digit)``; 1,797 in all.
    """
    from sklearn.datasets import load_digits  # scikit-learn is slow to import; only digits needs it

    digits = load_digits()
    # Pixel values are 0..16; scale to the 0..255 range the transforms expect.
    grey = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)
    rgb = np.repeat(grey[..., None], 3, axis=3)
    train, test = [], []
    for image, label in zip(rgb, digits.target.tolist()):
        (train if label in TRAIN_CLASSES else test).append((np.ascontiguousarray(image), int(label)))
    return Splits(train, test)


# Flag defaults of the offline quick run (main.py applies them when the command line does not set
# the flag): 5 training classes x 16 images = one batch per "epoch"; about a minute on 2 CPU cores.
DIGITS_DEFAULTS = dict(image_size=32, batch_size=80, num_instances=16, num_workers=0, pretrained=False,
                       epochs=150, eval_epoch_term=25, lr=1e-3, lr_decay_epochs='100', summary_step=1)
