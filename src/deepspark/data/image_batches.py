"""Streaming image batches for Keras ``fit``: uint8 pixels decoded a batch at a time.

Used when a data set's decoded images do not fit in memory (see
``training.prepare_images``): each batch is decoded in threads while the previous one trains
(Keras prefetches ``PyDataset`` batches in its own worker threads), and every image was
checked once before training, so batch shapes stay fixed.
"""

from __future__ import annotations

import math

import numpy as np

from deepspark._backend import import_keras
from deepspark.data.image_inputs import ImageFiles

keras = import_keras()


class ImageBatches(keras.utils.PyDataset):
    """``(inputs, targets)`` batches of ``files``, reshuffled every epoch when ``shuffle``.

    Args:
        files: The images (sources known to decode) and their size.
        targets: One encoded target per image.
        batch_size: Images per batch (the last one may be smaller).
        shuffle: A new order every epoch (seeded by ``seed`` and the epoch).
        seed: Seeds the order.
    """

    def __init__(
        self,
        files: ImageFiles,
        targets: np.ndarray,
        *,
        batch_size: int,
        shuffle: bool,
        seed: int = 0,
    ):
        super().__init__(workers=2, use_multiprocessing=False, max_queue_size=4)
        self.files = files
        self.targets = targets
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.seed = seed
        self._epoch = 0
        self._order = self._new_order()

    def _new_order(self) -> np.ndarray:
        if not self.shuffle:
            return np.arange(len(self.files))
        return np.random.default_rng((self.seed, self._epoch)).permutation(len(self.files))

    def __len__(self) -> int:
        return math.ceil(len(self.files) / self.batch_size)

    def __getitem__(self, index: int):
        rows = self._order[index * self.batch_size : (index + 1) * self.batch_size]
        return self.files.pixels(rows), self.targets[rows]

    def on_epoch_end(self) -> None:
        self._epoch += 1
        self._order = self._new_order()
