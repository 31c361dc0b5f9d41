"""A validation split held out from the training classes, for model selection without the test set."""
import numpy as np

from utils.errors import UserError

from .splits import label_map


def split_validation(train_items, val_class_ratio, seed=0):
    """Hold out ``round(val_class_ratio x C)`` of the C training classes (halves up, at least one).

    The held-out classes are a seeded random choice (np.random.RandomState(seed), not the global
    RNG, so a seed gives the same split in every run): taking the last classes instead would hold
    out a biased block, since release class ids are grouped (CARS196 by make, SOP by super-class).
    Returns (train_items, val_items), class-disjoint, each in the original item order. The kept
    training classes are relabelled 0..C'-1 in label order (Proxy-Anchor indexes proxies by label);
    validation items keep their labels. val_class_ratio 0 returns (train_items, []).
    """
    if not 0 <= val_class_ratio < 1:
        raise UserError("--val_class_ratio must be in [0, 1), got %s" % val_class_ratio)
    if val_class_ratio == 0:
        return list(train_items), []
    classes = sorted({label for _, label in train_items})
    num_val = max(1, int(val_class_ratio * len(classes) + 0.5))
    if num_val >= len(classes):
        raise UserError("--val_class_ratio %s holds out %d of the %d "
                        "training classes, leaving none to train on" % (val_class_ratio, num_val, len(classes)))
    chosen = np.random.RandomState(seed).choice(len(classes), num_val, replace=False)
    val_classes = {classes[i] for i in chosen.tolist()}
    relabel = label_map(c for c in classes if c not in val_classes)
    train = [(source, relabel[label]) for source, label in train_items if label not in val_classes]
    val = [(source, label) for source, label in train_items if label in val_classes]
    return train, val
