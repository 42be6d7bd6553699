"""torch Datasets over split tables (see wsss_lib.data.voc)."""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from wsss_lib.data.transforms import letterbox, normalise
from wsss_lib.data.voc import class_columns, image_size, read_image


DECODED_CACHE_BYTES = 1 << 30  # decoded training images kept in memory per process (AugmentedImageDataset)


class AugmentedImageDataset(Dataset):
    """Training images with per-item augmentation seeded from (seed, epoch, index), so augmentation is
    reproducible and independent of worker count; the training loop sets ``epoch``.

    Decoded images are kept in memory, first come first kept, up to ``cache_bytes`` per process (each loader
    worker holds its own; they persist across epochs): a small dataset is decoded once rather than every
    epoch. Decoding is a third of the ~3 ms an item of the synthetic demo takes (128 px JPEG; the rest is
    augmentation), which a small CNN at ~100 img/s on 2 cores waits for; the 240 demo images take 12 MB,
    VOC's train_aug 5.6 GB (its first ~20% are kept at the default).
    """

    def __init__(self, ids: Sequence[str], image_paths: Sequence[str], transform: Callable, seed: int = 0,
                 cache_bytes: int = DECODED_CACHE_BYTES):
        if len(ids) != len(image_paths):
            raise ValueError(f"{len(ids)} ids but {len(image_paths)} image paths")
        self.ids, self.images = list(ids), list(image_paths)
        self.transform = transform
        self.seed = seed
        self.epoch = 0
        self.cache_bytes = cache_bytes
        self._decoded: dict[int, np.ndarray] = {}
        self._decoded_bytes = 0

    def __len__(self) -> int:
        return len(self.ids)

    def decoded_image(self, index: int) -> np.ndarray:
        """The (H, W, 3) uint8 image, from memory once decoded (within the cache budget)."""
        image = self._decoded.get(index)
        if image is None:
            image = read_image(self.images[index])
            if self._decoded_bytes + image.nbytes <= self.cache_bytes:
                image.flags.writeable = False  # shared by every epoch's augmentation: never modified in place
                self._decoded[index] = image
                self._decoded_bytes += image.nbytes
        return image

    def image_and_generator(self, index: int) -> tuple[Image.Image, torch.Generator]:
        generator = torch.Generator().manual_seed(hash((self.seed, self.epoch, index)) % (2**63))
        return Image.fromarray(self.decoded_image(index)), generator


class ClassificationDataset(AugmentedImageDataset):
    """(augmented image, multi-hot label) pairs for classifier training."""

    def __init__(self, table: pd.DataFrame, transform: Callable, seed: int = 0,
                 cache_bytes: int = DECODED_CACHE_BYTES):
        super().__init__(table["id"].tolist(), table["image"].tolist(), transform, seed, cache_bytes)
        self.labels = torch.tensor(table[class_columns(table)].to_numpy(dtype=np.float32))

    def __getitem__(self, index: int):
        image, generator = self.image_and_generator(index)
        return self.transform(image, generator), self.labels[index]


class InferenceDataset(Dataset):
    """Normalised images with their ids and labels (no augmentation): full size, or for networks with a
    fixed input size (ViT) letterboxed to ``size`` x ``size`` the way their training crops were padded
    (:func:`wsss_lib.data.transforms.letterbox`)."""

    def __init__(self, table: pd.DataFrame, mean: Sequence[float], std: Sequence[float], size: int | None = None):
        self.ids = table["id"].tolist()
        self.images = table["image"].tolist()
        self.labels = torch.tensor(table[class_columns(table)].to_numpy(dtype=np.float32))
        self.mean, self.std = tuple(mean), tuple(std)
        self.size = size

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int):
        image = read_image(self.images[index])
        if self.size is not None:
            boxed = letterbox(image, self.size, self.mean, self.std)
            return self.ids[index], torch.from_numpy(boxed), self.labels[index]
        return self.ids[index], normalise(image, self.mean, self.std), self.labels[index]

    def batches(self, max_batch: int) -> list[list[int]]:
        """Index batches whose images share a size, so they stack without padding."""
        if self.size is not None:
            return [list(range(i, min(i + max_batch, len(self)))) for i in range(0, len(self), max_batch)]
        return batches_by_size(self.images, max_batch)


class SegmentationTrainDataset(AugmentedImageDataset):
    """(augmented image, label map) pairs: AffinityNet's CRF labels, or DeepLab's pseudo-labels.

    ``read_labels(image_id)`` returns the (H, W) uint8 map; it must be picklable for loader workers
    (see wsss_lib.store.StoreArrays and wsss_lib.segmentation.PseudoLabelReader).
    """

    def __init__(self, ids: Sequence[str], image_paths: Sequence[str], read_labels: Callable[[str], np.ndarray],
                 transform: Callable, seed: int = 0, cache_bytes: int = DECODED_CACHE_BYTES):
        super().__init__(ids, image_paths, transform, seed, cache_bytes)
        self.read_labels = read_labels

    def __getitem__(self, index: int):
        image, generator = self.image_and_generator(index)
        labels = self.read_labels(self.ids[index])
        if labels.shape != (image.height, image.width):
            raise ValueError(f"labels of {self.ids[index]} are {labels.shape}, its image {self.images[index]} "
                             f"is {(image.height, image.width)}")
        return self.transform(image, labels, generator)


def batches_by_size(image_paths: Sequence[str], max_batch: int) -> list[list[int]]:
    """Index batches of images that share a size (so they stack without padding), in first-seen order.

    Only image headers are read. VOC photos come in a handful of sizes, the synthetic set in one.
    """
    if max_batch < 1:
        raise ValueError(f"max_batch must be >= 1, got {max_batch}")
    groups: dict[tuple[int, int], list[int]] = {}
    for index, path in enumerate(image_paths):
        groups.setdefault(image_size(path), []).append(index)
    return [group[i : i + max_batch] for group in groups.values() for i in range(0, len(group), max_batch)]


def decoded_images(table: pd.DataFrame, mean: Sequence[float], std: Sequence[float], workers: int,
                   pin_memory: bool) -> DataLoader:
    """(id, normalised full-size image, labels) per image of the split table, in its order, decoded by
    ``workers`` loader processes ahead of the consumer (a GPU job's random walk or DeepLab inference then
    does not wait for JPEG decoding; how many a job gets: wsss_lib.device.loader_workers)."""
    return DataLoader(InferenceDataset(table, mean, std), batch_size=None, num_workers=workers, pin_memory=pin_memory)


def collate_inference(items):
    ids, images, labels = zip(*items)
    return list(ids), torch.stack(images), torch.stack(labels)
