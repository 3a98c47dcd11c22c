"""Data sources for ddpmkit: every format ends as uint8 images in an `ImageDataset`; re-exports only.

Formats: the built-in "digits" (builtin.py), "fashion-mnist" and MNIST-style IDX folders (idx.py), CIFAR-10/100
python batches (cifar.py), .npz/.npy arrays (npz.py) and folders of image files (folder.py, decode.py).
`to_model_range` (ranges.py) is the one place where pixels are scaled to the model's [-1, 1].
A folder of images may go through the decoded-image cache (cache.py, cache_build.py): decoded once, then mapped.
"""

from ddpmkit.data.cache import ImageCache
from ddpmkit.data.dataset import ImageDataset, check_enough, class_names_of
from ddpmkit.data.loader import load_dataset
from ddpmkit.data.ranges import from_model_range, to_model_range

__all__ = ["ImageCache", "ImageDataset", "check_enough", "class_names_of", "from_model_range", "load_dataset",
           "to_model_range"]
