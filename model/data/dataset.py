"""Detection datasets behind one interface: the synthetic set and darknet list files.

Both give ``sample(i, rng)`` for training (augmented, resized to the network input) and
``eval_item(i)`` for evaluation (letterboxed as darknet's ``validate_detector`` does, with the
original size so boxes can be mapped back).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from model.data.augment import Augment
from model.data.labels import label_path, read_labels, read_list
from model.data.synthetic import SyntheticDetection
from model.image import letterbox, load_image

__all__ = ["DarknetDataset", "SyntheticSource"]


class DarknetDataset:
    """Images of a darknet list file with their label files.

    Every label file is read and checked when the dataset is built, so a malformed file stops
    the run before training starts, with its name and line (:class:`~model.data.labels.LabelError`).

    Parameters
    ----------
    list_path : path of the list file
    classes : int
    width, height : int
        Network input size.
    augment : Augment
    """

    def __init__(self, list_path: str | Path, classes: int, width: int, height: int,
                 augment: Augment | None = None):
        self.images = read_list(list_path)
        self.labels = [read_labels(label_path(p), classes) for p in self.images]
        self.width, self.height = width, height
        self.augment = augment if augment is not None else Augment()

    def __len__(self) -> int:
        return len(self.images)

    def sample(self, i: int, rng: np.random.Generator):
        """Training sample: ``(image (3, h, w) float32, boxes (n, 5))`` after augmentation."""
        return self.augment(load_image(self.images[i]), self.labels[i], self.width, self.height,
                            rng)

    def eval_item(self, i: int):
        """``(letterboxed image (3, h, w), (img_w, img_h), truths (n, 5))``."""
        img = load_image(self.images[i])
        return letterbox(img, self.width, self.height), (img.shape[2], img.shape[1]), \
            self.labels[i]


class SyntheticSource:
    """:class:`~model.data.synthetic.SyntheticDetection` behind the dataset interface.

    Images are generated at the network input size, so no resize or letterbox is needed;
    augmentation (default: off, the generator already varies everything) applies if given.
    """

    def __init__(self, data: SyntheticDetection, augment: Augment | None = None):
        self.data = data
        self.augment = augment if augment is not None else Augment.off()

    def __len__(self) -> int:
        return len(self.data)

    def sample(self, i: int, rng: np.random.Generator):
        image, boxes = self.data[i]
        if self.augment == Augment.off():
            return image, boxes
        return self.augment(image, boxes, self.data.size, self.data.size, rng)

    def eval_item(self, i: int):
        image, boxes = self.data[i]
        return image, (self.data.size, self.data.size), boxes
