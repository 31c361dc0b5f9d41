"""Data sets, transforms and loaders.

Every data set is a function ``load(data_dir, **options) -> Splits`` (data.splits): lists of
``(source, label)`` for ``ImageList``, with class-disjoint train and test splits, and for In-Shop
query and gallery lists as well. ``build_split_loaders`` turns them into DataLoaders.
"""
from .checks import check_images
from .image_list import ImageList
from .loaders import EvalSet, SplitLoaders, build_loaders, build_split_loaders
from .registry import DATASETS, DEFAULTS, get_dataset
from .sampler import ClassBalancedSampler
from .splits import Splits
from .transforms import test_transform, train_transform
from .validation import split_validation
