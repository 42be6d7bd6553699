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
from h5py import h5d, h5g, h5l, h5o, h5s

from wsss_lib import __version__
from wsss_lib.atomic import atomic_path
from wsss_lib.data.ids import check_image_id


class StoreWriter:
    """Write image groups into an open HDF5 file; use via :func:`open_store_writer`."""

    def __init__(self, handle: h5py.File, path: Path):
        self._handle, self.path = handle, path

    def write(self, image_id: str, compression: str | None = "lzf", **arrays: np.ndarray) -> None:
        # a group name is a path inside the file ("a/b" makes nested groups): only a valid image id names one
        check_image_id(image_id, f"store {self.path}")
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
            yield StoreWriter(handle, Path(path))


class StoreReader:
    """Read-only access to a store; ``reader[image_id]`` returns a dict of numpy arrays.

    A store is hostile until checked: HDF5 can make a name stand for another file (external links,
    external raw storage: ``/etc/passwd`` read as a CAM), another image (soft links, a second hard
    link) or nothing (a dangling link). The reader follows only what :class:`StoreWriter` writes: one
    hard link per object, root -> image group -> numeric datasets in the file itself, and refuses
    anything else, non-finite floats, and CAM class keys outside the store's ``class_names``, with an
    error naming the store and the image. Every store of the pipeline is read through this class.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"store not found: {self.path}")
        try:
            self._handle = h5py.File(self.path, "r")
        except OSError as err:
            raise ValueError(f"cannot open store {self.path}: {err}") from err
        self._n_classes: int | None = None

    @contextmanager
    def _reading(self, what: str) -> Iterator[None]:
        """A damaged file (cut short after its superblock was written, bytes overwritten) can open and fail
        only when read; HDF5's message then names neither the file nor what was read."""
        try:
            yield
        except (OSError, RuntimeError) as err:
            raise ValueError(f"cannot read {what} from store {self.path} (damaged file?): {err}") from err

    def _refuse(self, what: str, problem: str, advice: str = "which no job of this pipeline writes") -> ValueError:
        return ValueError(f"store {self.path}: {what} {problem}, {advice}: delete the store and rerun the job "
                          f"that writes it")

    @property
    def attrs(self) -> dict:
        with self._reading("the file attributes"):
            return dict(self._handle.attrs)

    def ids(self) -> list[str]:
        """The image ids, refusing a root link that ``reader[image_id]`` would refuse as a link: a listed id is
        one the store holds itself, not another image's or another file's under a second name."""
        names: list[tuple[str, int]] = []
        with self._reading("the image ids"):
            self._handle.id.links.iterate(lambda name, info: names.append((name.decode(), info.type)), info=True)
        for name, kind in names:
            if kind != h5l.TYPE_HARD:
                raise self._refuse(f"image {name!r}", _link_text(self._handle.id, name.encode(), kind))
        return [name for name, _ in names]

    def _has_link(self, group: h5g.GroupID, name: str) -> bool:
        # h5py's `name in group` resolves the link (opening an external link's file, calling a dangling one
        # absent); a name with "/" is a path through other groups' links, not a member of this one
        return "/" not in name and name not in ("", ".") and group.links.exists(name.encode())

    def _open(self, group: h5g.GroupID, name: bytes, link_kind: int, what: str) -> h5g.GroupID | h5d.DatasetID:
        """The object a link of ``group`` names, after checking that the link is the one hard link to it."""
        if link_kind != h5l.TYPE_HARD:
            raise self._refuse(what, _link_text(group, name, link_kind))
        obj = h5o.open(group, name)
        if h5o.get_info(obj).rc != 1:
            raise self._refuse(what, "is linked under more than one name (another image's data?)")
        return obj

    def __contains__(self, image_id: str) -> bool:
        with self._reading(f"image {image_id!r}"):
            return self._has_link(self._handle.id, image_id)

    def __getitem__(self, image_id: str) -> dict[str, np.ndarray]:
        if image_id not in self:
            raise KeyError(f"image {image_id!r} not in store {self.path}")
        what = f"image {image_id!r}"
        entry = {}
        # h5py's low-level calls: building its Group and Dataset objects cost more than the checks (2x the read
        # time of a (3, 64, 64) float16 CAM image)
        with self._reading(what):
            root = self._handle.id
            name = image_id.encode()
            group = self._open(root, name, root.links.get_info(name).type, what)
            if not isinstance(group, h5g.GroupID):
                raise self._refuse(what, "is not a group")
            links: list[tuple[bytes, int]] = []
            group.links.iterate(lambda link, info: links.append((link, info.type)), info=True)
            for name, kind in links:
                array_what = f"image {image_id!r} array {name.decode()!r}"
                dataset = self._open(group, name, kind, array_what)
                if not isinstance(dataset, h5d.DatasetID):
                    raise self._refuse(array_what, "is not a dataset (a group or a named type in the image's group)")
                plist = dataset.get_create_plist()
                if plist.get_external_count():
                    raise self._refuse(array_what, "keeps its data in external files")
                if plist.get_layout() == h5d.VIRTUAL:
                    raise self._refuse(array_what, "is a virtual dataset (data from other datasets or files)")
                if dataset.dtype.kind not in "biuf" or dataset.shape is None:
                    raise self._refuse(array_what, f"holds {dataset.dtype} values of shape {dataset.shape}, "
                                                   f"not an array of numbers")
                array = np.empty(dataset.shape, dataset.dtype)
                if array.size:
                    dataset.read(h5s.ALL, h5s.ALL, array)
                entry[name.decode()] = array
        self._check_values(image_id, entry)
        return entry

    def _check_values(self, image_id: str, entry: dict[str, np.ndarray]) -> None:
        for name, array in entry.items():
            # NaN compares false with every threshold (argmax, > t): it would be scored as a quiet background
            if array.dtype.kind == "f" and not _all_finite(array):
                raise self._refuse(f"image {image_id!r} array {name!r}", "holds NaN or infinite values",
                                   "from a model that diverged (retrain it) or a damaged store")
        if "keys" in entry:  # a CAM store (stages/cam.py make_cams): keys index its class_names attribute
            self._check_keys(image_id, entry)

    def _check_keys(self, image_id: str, entry: dict[str, np.ndarray]) -> None:
        what = f"image {image_id!r}"
        keys = entry["keys"]
        if keys.ndim != 1 or keys.dtype.kind not in "iu":
            raise self._refuse(f"{what} array 'keys'", f"is {keys.dtype} of shape {keys.shape}, "
                                                       f"not a list of class indices")
        n_classes = self.n_classes
        if len(keys) and (keys.min() < 0 or keys.max() >= n_classes):
            raise self._refuse(f"{what} array 'keys'", f"holds {keys.tolist()}, outside the {n_classes} "
                                                       f"classes 0..{n_classes - 1} of its class_names")
        if len(np.unique(keys)) != len(keys):
            raise self._refuse(f"{what} array 'keys'", f"holds {keys.tolist()}, a class more than once")
        for name in ("cam", "high_res"):
            if name in entry and (entry[name].ndim != 3 or entry[name].shape[0] != len(keys)):
                raise self._refuse(f"{what} array {name!r}", f"is of shape {entry[name].shape}, not one map "
                                                              f"for each of its {len(keys)} keys")

    @property
    def n_classes(self) -> int:
        """The number of classes of a CAM store (its ``class_names`` attribute), which its keys index."""
        if self._n_classes is None:
            names = self.attrs.get("class_names")
            if names is None or np.ndim(names) != 1:
                raise self._refuse("the class_names attribute", "is missing or not a list of names")
            self._n_classes = len(names)
        return self._n_classes

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> "StoreReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _all_finite(array: np.ndarray) -> bool:
    if array.dtype.itemsize == 2 and array.size:
        # numpy's float16 isfinite has no vectorised loop: 12x the time of this test of the exponent bits (all
        # set: inf or NaN), a third of the read time of a VOC-sized CAM image
        bits = array.view(np.dtype(np.uint16).newbyteorder(array.dtype.byteorder))
        return bool((bits & 0x7FFF).max() < 0x7C00)
    return bool(np.isfinite(array).all())


def _link_text(group: h5g.GroupID, name: bytes, kind: int) -> str:
    """What a link that is not a hard link points to, read without following it."""
    if kind == h5l.TYPE_SOFT:
        return f"is a soft link to {group.links.get_val(name).decode(errors='replace')}"
    if kind == h5l.TYPE_EXTERNAL:
        file, target = (part.decode(errors="replace") for part in group.links.get_val(name))
        return f"is an external link to {target} in {file}"
    return f"is a user-defined link (type {kind})"


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
