"""The in-memory data set every source format produces, and the batch-size check.

All sources end in one `ImageDataset`: uint8 pixels in (N, H, W, C) order, C in {1, 3}, square images. Scaling to
the model's [-1, 1] range happens later, in one place only: `ranges.to_model_range`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ddpmkit.errors import DataError


@dataclass
class ImageDataset:
    """uint8 images (N, H, W, C) with optional int64 labels (N,), and what was skipped on the way in.

    class_names: the name of each label index where the source names its classes (digits, Fashion-MNIST, CIFAR,
    class subfolders); see `class_names_of` for the others.
    """

    images: np.ndarray
    labels: np.ndarray | None
    name: str
    num_skipped: int = 0
    skipped: list[str] = field(default_factory=list)
    class_names: list[str] | None = None

    def __post_init__(self) -> None:
        # These are the loaders' promises, so a violation is a bug in ddpmkit, not the user's mistake.
        if self.images.dtype != np.uint8 or self.images.ndim != 4 or self.images.shape[3] not in (1, 3):
            raise ValueError(f"ImageDataset needs uint8 (N, H, W, C) with C in 1, 3; got {self.images.dtype} "
                             f"{self.images.shape}")
        if self.images.shape[1] != self.images.shape[2]:
            raise ValueError(f"ImageDataset needs square images, got {self.images.shape[1:3]}")
        if self.labels is not None and (self.labels.dtype != np.int64 or self.labels.shape != (len(self.images),)):
            raise ValueError(f"labels must be int64 ({len(self.images)},), got {self.labels.dtype} "
                             f"{self.labels.shape}")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def image_size(self) -> int:
        """Height (= width) in pixels."""
        return int(self.images.shape[1])

    @property
    def channels(self) -> int:
        """1 for grey, 3 for RGB."""
        return int(self.images.shape[3])


def class_names_of(ds: ImageDataset) -> list[str]:
    """The names of the classes 0 .. K-1: the source's own, else the indices as text ("0", "1", ..); [] unlabelled."""
    if ds.labels is None:
        return []
    if ds.class_names is not None:
        return list(ds.class_names)
    return [str(i) for i in range(int(ds.labels.max()) + 1 if len(ds.labels) else 0)]


def check_enough(ds: ImageDataset, batch_size: int) -> None:
    """Refuse a data set smaller than one batch: the training loop would never see a full batch."""
    if len(ds) < batch_size:
        raise DataError(f"data set {ds.name} has {len(ds)} images, fewer than one batch of {batch_size}: "
                        f"lower --batch-size or add images")
