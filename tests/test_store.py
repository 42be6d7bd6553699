"""Per-image HDF5 stores: a damaged file is an error naming it (the atomic write is tested in test_concurrency.py)."""

import re
import struct

import numpy as np
import pytest

from wsss_lib.store import StoreReader, open_store_writer


def write_store(path, n=20):
    with open_store_writer(path, {"method": "m"}) as store:
        for i in range(n):
            store.write(f"img{i}", cam=np.random.default_rng(i).random((4, 32, 32)).astype(np.float16))


def test_a_store_cut_short_is_named_when_opened(tmp_path):
    path = tmp_path / "cams.h5"
    write_store(path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ValueError, match=f"cannot open store {re.escape(str(path))}: .*truncated file"):
        StoreReader(path)


def test_a_store_that_opens_but_is_damaged_is_named_when_read(tmp_path):
    path = tmp_path / "cams.h5"
    write_store(path)
    data = bytearray(path.read_bytes()[: path.stat().st_size // 2])
    # superblock version 0 (h5py's default) keeps the end-of-file address at byte 40: shortening it to the cut
    # length makes HDF5 open the file and fail only on reading what lay beyond
    assert data[8] == 0
    data[40:48] = struct.pack("<Q", len(data))
    path.write_bytes(bytes(data))
    with StoreReader(path) as store:
        with pytest.raises(ValueError, match=f"cannot read the image ids from store {re.escape(str(path))}"):
            store.ids()
        with pytest.raises(ValueError, match=f"cannot read image 'img19' from store {re.escape(str(path))}"):
            store["img19"]
