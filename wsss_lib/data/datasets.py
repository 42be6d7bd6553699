"""torch Datasets over split tables (see wsss_lib.data.voc)."""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import Dataset

from wsss_lib.data.transforms import letterbox, normalise
from wsss_lib.data.voc import class_columns, read_image


class AugmentedImageDataset(Dataset):
    """Training images with per-item augmentation seeded from (seed, epoch, index), so augmentation is
    reproducible and independent of worker count; the training loop sets ``epoch``."""

    def __init__(self, ids: Sequence[str], image_paths: Sequence[str], transform: Callable, seed: int = 0):
        if len(ids) != len(image_paths):
            raise ValueError(f"{len(ids)} ids but {len(image_paths)} image paths")
        self.ids, self.images = list(ids), list(image_paths)
        self.transform = transform
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.ids)

    def image_and_generator(self, index: int) -> tuple[Image.Image, torch.Generator]:
        generator = torch.Generator().manual_seed(hash((self.seed, self.epoch, index)) % (2**63))
        return Image.fromarray(read_image(self.images[index])), generator


class ClassificationDataset(AugmentedImageDataset):
    """(augmented image, multi-hot label) pairs for classifier training."""

    def __init__(self, table: pd.DataFrame, transform: Callable, seed: int = 0):
        super().__init__(table["id"].tolist(), table["image"].tolist(), transform, seed)
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
            return self.ids[index], torch.from_numpy(letterbox(image, self.size, self.mean, self.std)), self.labels[index]
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
                 transform: Callable, seed: int = 0):
        super().__init__(ids, image_paths, transform, seed)
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
        try:
            with Image.open(path) as image:
                size = image.size
        except FileNotFoundError:
            raise FileNotFoundError(f"image not found: {path}") from None
        except OSError as err:
            raise ValueError(f"cannot read image {path}: {err}") from err
        groups.setdefault(size, []).append(index)
    return [group[i : i + max_batch] for group in groups.values() for i in range(0, len(group), max_batch)]


def collate_inference(items):
    ids, images, labels = zip(*items)
    return list(ids), torch.stack(images), torch.stack(labels)
