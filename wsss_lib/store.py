"""Per-image HDF5 stores (CAMs, features, affinity labels): one group per image id.

One writer per file (HDF5 locks a file open for writing; locking is never disabled). A store is
written under a temporary name beside its destination and renamed into place only when complete,
so a failed job leaves nothing behind. Provenance (method, config hash, model file, version) goes
into file attributes.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Mapping

import h5py
import numpy as np

from wsss_lib import __version__
from wsss_lib.atomic import atomic_path


class StoreWriter:
    """Write image groups into an open HDF5 file; use via :func:`open_store_writer`."""

    def __init__(self, handle: h5py.File):
        self._handle = handle

    def write(self, image_id: str, compression: str | None = "lzf", **arrays: np.ndarray) -> None:
        if image_id in self._handle:
            raise KeyError(f"image {image_id!r} written twice to {self._handle.filename}")
        group = self._handle.create_group(image_id)
        for name, array in arrays.items():
            array = np.asarray(array)
            group.create_dataset(name, data=array, compression=compression if array.ndim >= 2 else None)

    def set_attrs(self, **attrs) -> None:
        """File attributes known only after the images are written (e.g. summary statistics)."""
        for key, value in attrs.items():
            self._handle.attrs[key] = value


@contextmanager
def open_store_writer(path: str | os.PathLike, attrs: Mapping[str, object]) -> Iterator[StoreWriter]:
    """Create the store at ``path`` atomically; ``attrs`` become file attributes (plus the library version)."""
    with atomic_path(path, suffix=".h5") as tmp:
        with h5py.File(tmp, "w") as handle:
            handle.attrs["wsss_lib_version"] = __version__
            for key, value in attrs.items():
                handle.attrs[key] = value
            yield StoreWriter(handle)


class StoreReader:
    """Read-only access to a store; ``reader[image_id]`` returns a dict of numpy arrays."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"store not found: {self.path}")
        try:
            self._handle = h5py.File(self.path, "r")
        except OSError as err:
            raise ValueError(f"cannot open store {self.path}: {err}") from err

    @contextmanager
    def _reading(self, what: str) -> Iterator[None]:
        """A damaged file (cut short after its superblock was written, bytes overwritten) can open and fail
        only when read; HDF5's message then names neither the file nor what was read."""
        try:
            yield
        except (OSError, RuntimeError) as err:
            raise ValueError(f"cannot read {what} from store {self.path} (damaged file?): {err}") from err

    @property
    def attrs(self) -> dict:
        with self._reading("the file attributes"):
            return dict(self._handle.attrs)

    def ids(self) -> list[str]:
        with self._reading("the image ids"):
            return list(self._handle.keys())

    def __contains__(self, image_id: str) -> bool:
        with self._reading(f"image {image_id!r}"):
            return image_id in self._handle

    def __getitem__(self, image_id: str) -> dict[str, np.ndarray]:
        if image_id not in self:
            raise KeyError(f"image {image_id!r} not in store {self.path}")
        with self._reading(f"image {image_id!r}"):
            group = self._handle[image_id]
            return {name: group[name][()] for name in group}

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> "StoreReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class StoreArrays:
    """``reader(image_id)`` -> one named array of an image's group, opening the store lazily.

    Picklable (it holds only the path), so DataLoader workers each open their own read handle.
    """

    def __init__(self, path: str | os.PathLike, name: str):
        self.path, self.name = Path(path), name
        self._reader: StoreReader | None = None

    def __getstate__(self) -> dict:
        return {"path": self.path, "name": self.name, "_reader": None}

    def __call__(self, image_id: str) -> np.ndarray:
        if self._reader is None:
            self._reader = StoreReader(self.path)
        entry = self._reader[image_id]
        if self.name not in entry:
            raise KeyError(f"image {image_id!r} in {self.path} has no {self.name!r} array")
        return entry[self.name]
