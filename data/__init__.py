"""Data sets, transforms and loaders.

Every data set is a function ``load(data_dir, **options) -> Splits`` (data.splits): lists of
``(source, label)`` for ``ImageList``, with class-disjoint train and test splits, and for In-Shop
query and gallery lists as well. ``build_split_loaders`` turns them into DataLoaders.

The names below are imported when first used, so that the modules that need no MXNet (reading an
image file, listing a folder, the transforms, data.prepare) can be imported without it
(tools.embed_onnx runs with ONNX Runtime alone).
"""
import importlib

_HOMES = {
    'check_images': 'checks', 'ImageList': 'image_list', 'EvalSet': 'loaders', 'SplitLoaders': 'loaders',
    'build_loaders': 'loaders', 'build_split_loaders': 'loaders', 'DATASETS': 'registry', 'DEFAULTS': 'registry',
    'get_dataset': 'registry', 'ClassBalancedSampler': 'sampler', 'Splits': 'splits',
    'test_transform': 'transforms', 'train_transform': 'transforms', 'split_validation': 'validation',
}
__all__ = sorted(_HOMES)


def __getattr__(name):
    if name not in _HOMES:
        raise AttributeError("module 'data' has no attribute %r" % name)
    return getattr(importlib.import_module('.' + _HOMES[name], __name__), name)
