"""Per-image HDF5 stores: a damaged file is an error naming it (the atomic write is tested in test_concurrency.py)."""

import re
import struct

import h5py
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


CLASSES = ["cat", "dog", "bird"]


def cam_entry(i: int) -> dict:
    """What make_cams writes for one image: its classes' keys and one map per key, at two resolutions."""
    rng = np.random.default_rng(i)
    keys = np.array([0, 2] if i % 2 else [1], np.int16)
    return {"keys": keys, "cam": rng.random((len(keys), 4, 4)).astype(np.float16),
            "high_res": rng.random((len(keys), 16, 16)).astype(np.float16)}


def write_cam_store(path, n=3):
    with open_store_writer(path, {"class_names": CLASSES}) as store:
        for i in range(n):
            store.write(f"img{i}", **cam_entry(i))


def test_a_good_store_reads_back_what_was_written(tmp_path):
    path = tmp_path / "cams.h5"
    write_cam_store(path)
    with open_store_writer(tmp_path / "other.h5", {"kind": "cam"}) as store:
        store.write("a", feature=np.arange(5, dtype=np.float32), labels=np.array([[0, 255], [3, 1]], np.uint8),
                    flag=np.bool_(True))
    with StoreReader(path) as store:
        assert store.ids() == ["img0", "img1", "img2"] and "img1" in store and "img9" not in store
        assert store.n_classes == 3
        for i in range(3):
            entry = store[f"img{i}"]
            assert sorted(entry) == ["cam", "high_res", "keys"]
            for name, array in cam_entry(i).items():
                assert entry[name].dtype == array.dtype
                np.testing.assert_array_equal(entry[name], array)
        with pytest.raises(KeyError, match=f"image 'img9' not in store {re.escape(str(path))}"):
            store["img9"]
        # a path through groups is no image id: nothing is resolved
        assert "img0/keys" not in store and "." not in store
    with StoreReader(tmp_path / "other.h5") as store:
        entry = store["a"]
        np.testing.assert_array_equal(entry["feature"], [0, 1, 2, 3, 4])
        np.testing.assert_array_equal(entry["labels"], [[0, 255], [3, 1]])
        assert entry["labels"].dtype == np.uint8 and entry["flag"] == np.True_ and entry["flag"].shape == ()


def external_raw_storage(handle, tmp_path):
    outside = tmp_path / "outside.bin"
    outside.write_bytes(np.full((2, 16, 16), 0.5, np.float16).tobytes())
    del handle["img1/high_res"]
    handle["img1"].create_dataset("high_res", shape=(2, 16, 16), dtype=np.float16,
                                  external=[(str(outside), 0, outside.stat().st_size)])


def external_link(handle, tmp_path):
    write_cam_store(tmp_path / "elsewhere.h5")
    del handle["img1"]
    handle["img1"] = h5py.ExternalLink(str(tmp_path / "elsewhere.h5"), "/img1")  # absolute path


def virtual_dataset(handle, tmp_path):
    layout = h5py.VirtualLayout(shape=(2, 16, 16), dtype=np.float16)
    layout[:] = h5py.VirtualSource(handle["img1/high_res"])
    handle["img1"].move("high_res", "real")
    handle["img1"].create_virtual_dataset("high_res", layout)


def nested_group(handle, tmp_path):
    handle["img1"].create_group("more").create_dataset("keys", data=np.array([5], np.int16))


def set_array(name, value):
    def damage(handle, tmp_path):
        del handle[f"img1/{name}"]
        handle[f"img1/{name}"] = value
    return damage


def nan_at(name, value):
    def damage(handle, tmp_path):
        array = handle[f"img1/{name}"][()]
        array[-1, 3, 2] = value
        handle[f"img1/{name}"][...] = array
    return damage


def link_image(make_link):
    def damage(handle, tmp_path):
        del handle["img1"]
        handle["img1"] = make_link(handle)
    return damage


def link_array(target):
    def damage(handle, tmp_path):
        del handle["img1/high_res"]
        handle["img1/high_res"] = h5py.SoftLink(target)
    return damage


# (damage to image img1 of a good three-image CAM store, what the error says of it)
HOSTILE = {
    "external raw storage": (external_raw_storage, "array 'high_res' keeps its data in external files"),
    "absolute external link": (external_link, "is an external link to /img1 in /"),
    "soft link to another image": (link_image(lambda handle: h5py.SoftLink("/img2")), "is a soft link to /img2"),
    "second hard link to another image": (link_image(lambda handle: handle["img2"]),
                                          "is linked under more than one name"),
    "soft link to another image's array": (link_array("/img2/high_res"),
                                           "array 'high_res' is a soft link to /img2/high_res"),
    "dangling soft link": (link_array("/nowhere"), "array 'high_res' is a soft link to /nowhere"),
    "virtual dataset": (virtual_dataset, "array 'high_res' is a virtual dataset"),
    "nested group": (nested_group, "array 'more' is not a dataset"),
    "string array": (set_array("keys", np.array([b"cat"])), "array 'keys' holds |S3 values"),
    "NaN CAM": (nan_at("high_res", np.nan), "array 'high_res' holds NaN or infinite values"),
    "+inf CAM": (nan_at("cam", np.inf), "array 'cam' holds NaN or infinite values"),
    "-inf CAM": (nan_at("high_res", -np.inf), "array 'high_res' holds NaN or infinite values"),
    "key past the classes": (set_array("keys", np.array([0, 3], np.int16)),
                             r"array 'keys' holds \[0, 3\], outside the 3 classes 0..2"),
    "negative key": (set_array("keys", np.array([-1, 2], np.int16)), r"holds \[-1, 2\], outside the 3 classes"),
    "float keys": (set_array("keys", np.array([0.0, 2.0])), "array 'keys' is float64 of shape"),
    "key twice": (set_array("keys", np.array([2, 2], np.int16)), r"holds \[2, 2\], a class more than once"),
    "fewer maps than keys": (set_array("keys", np.array([0, 1, 2], np.int16)),
                             r"array 'cam' is of shape \(2, 4, 4\), not one map for each of its 3 keys"),
}


@pytest.mark.parametrize("damage, message", HOSTILE.values(), ids=HOSTILE.keys())
def test_what_no_writer_of_ours_writes_is_refused_naming_store_and_image(tmp_path, damage, message):
    path = tmp_path / "cams.h5"
    write_cam_store(path)
    with h5py.File(path, "a") as handle:
        damage(handle, tmp_path)
    with StoreReader(path) as store:
        assert np.isfinite(store["img0"]["high_res"]).all()  # the other images still read
        with pytest.raises(ValueError, match=f"^store {re.escape(str(path))}: image 'img1' .*{message}.*"
                                             f"delete the store and rerun the job that writes it"):
            store["img1"]


def test_ids_refuse_a_linked_image_without_opening_it(tmp_path):
    path = tmp_path / "cams.h5"
    write_cam_store(path)
    with h5py.File(path, "a") as handle:
        handle["img3"] = h5py.ExternalLink(str(tmp_path / "absent.h5"), "/img0")
    absent = re.escape(str(tmp_path / "absent.h5"))
    refusal = f"store {re.escape(str(path))}: image 'img3' is an external link to /img0 in {absent}"
    with StoreReader(path) as store:
        assert "img3" in store  # a link named img3 is there; its file is never looked for
        with pytest.raises(ValueError, match=refusal):
            store.ids()
        with pytest.raises(ValueError, match=refusal):
            store["img3"]


def test_keys_need_the_stores_class_names(tmp_path):
    path = tmp_path / "cams.h5"
    with open_store_writer(path, {"method": "m"}) as store:
        store.write("img0", **cam_entry(0))
    with StoreReader(path) as store:
        with pytest.raises(ValueError, match=f"store {re.escape(str(path))}: the class_names attribute is missing"):
            store["img0"]


@pytest.mark.parametrize("dtype", ["<f2", ">f2", "<f4", ">f8"])
def test_non_finite_values_are_found_in_every_float_type(tmp_path, dtype):
    path = tmp_path / "features.h5"
    largest = np.finfo(np.dtype(dtype)).max
    with open_store_writer(path, {}) as store:
        store.write("finite", feature=np.array([0, -0.0, largest, -largest, np.finfo(np.dtype(dtype)).tiny], dtype))
        for value in (np.nan, np.inf, -np.inf):
            store.write(f"has_{value}", feature=np.array([[1, 2], [3, value]], dtype))
    with StoreReader(path) as store:
        feature = store["finite"]["feature"]
        assert feature.dtype == np.dtype(dtype) and feature[2] == largest
        for value in ("nan", "inf", "-inf"):
            with pytest.raises(ValueError, match=f"image 'has_{value}' array 'feature' holds NaN or infinite values"):
                store[f"has_{value}"]


@pytest.mark.parametrize("image_id", ["sub/2007_000032", "../escape", ".hidden", ""])
def test_the_writer_refuses_an_id_that_is_not_one(tmp_path, image_id):
    path = tmp_path / "cams.h5"
    pattern = rf"store {re.escape(str(path))}: invalid image id {re.escape(repr(image_id))}"
    with pytest.raises(ValueError, match=pattern):
        with open_store_writer(path, {"method": "baseline"}) as store:
            store.write(image_id, cam=np.zeros((1, 2, 2), np.float16))
    assert not path.exists() and list(tmp_path.iterdir()) == []
