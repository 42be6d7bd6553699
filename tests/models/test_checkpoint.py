"""Model files: written by save_checkpoint, read by read_checkpoint without unpickling code."""

import errno
import io
import os
import pickle
import re
import subprocess
import tracemalloc
import zipfile

import pytest
import torch

from conftest import RunsCodeWhenUnpickled
from wsss_lib.models import checkpoint
from wsss_lib.models.cam_net import build_cam_net
from wsss_lib.models.checkpoint import read_checkpoint, save_checkpoint
from wsss_lib.models.registry import load_network, save_network


def test_round_trip(tmp_path):
    save_checkpoint(tmp_path / "m.pt", {"w": torch.ones(2)}, {"architecture": "cam_net", "n_classes": 3})
    state_dict, meta = read_checkpoint(tmp_path / "m.pt", "CAM model", architecture="cam_net")
    assert torch.equal(state_dict["w"], torch.ones(2)) and meta["n_classes"] == 3


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # torch's, for protocols above 2
@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_a_pickle_of_other_objects_is_refused_unread_naming_the_file(tmp_path, protocol):
    path, marker = tmp_path / "model.pt", tmp_path / "code_ran"
    path.write_bytes(pickle.dumps(RunsCodeWhenUnpickled(marker), protocol=protocol))
    with pytest.raises(ValueError, match=re.escape(str(path)) + ": not a model file of this pipeline") as raised:
        read_checkpoint(path, "CAM model")
    assert not marker.exists()
    assert "weights_only` set to `False`" not in str(raised.value)  # torch's advice to unpickle it is dropped


def test_a_file_that_is_no_model_is_named(tmp_path):
    torch.save(torch.zeros(3), tmp_path / "tensor.pt")
    with pytest.raises(ValueError, match=re.escape(str(tmp_path / "tensor.pt")) + " holds no CAM model"):
        read_checkpoint(tmp_path / "tensor.pt", "CAM model")
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match=re.escape(str(tmp_path / "junk.pt")) + ": not a model file of this pipeline"):
        read_checkpoint(tmp_path / "junk.pt", "CAM model")


def test_torch_save_stores_every_record_uncompressed(tmp_path):
    # what the zip checks of load_torch_file rely on
    save_checkpoint(tmp_path / "m.pt", {"w": torch.zeros(1000)}, {"architecture": "cam_net"})
    with zipfile.ZipFile(tmp_path / "m.pt") as archive:
        records = archive.infolist()
    assert {r.compress_type for r in records} == {zipfile.ZIP_STORED}
    assert sum(r.file_size for r in records) <= (tmp_path / "m.pt").stat().st_size


def test_a_zip_bomb_is_refused_before_inflating(tmp_path):
    path = tmp_path / "bomb.pt"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        with archive.open("archive/data/0", "w", force_zip64=True) as record:
            zeros = bytes(1 << 20)
            for _ in range(200):  # 200 MB of zeros, ~200 KB on disk
                record.write(zeros)
    assert path.stat().st_size < 1 << 20
    tracemalloc.start()
    try:
        with pytest.raises(ValueError) as raised:
            read_checkpoint(path, "CAM model")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert str(raised.value).startswith(f"cannot load CAM model {path}: its record 'archive/data/0' is compressed")
    assert peak < 10 << 20


def test_records_declaring_more_than_the_file_holds_are_refused(tmp_path):
    # overlapping stored records (many names for one block of data) pass the compression check: their sizes do not
    path = tmp_path / "m.pt"
    save_checkpoint(path, {"w": torch.zeros(1000)}, {"architecture": "cam_net"})
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        name = next(n for n in archive.namelist() if n.endswith("/data/0")).encode()
    # its central-directory header: signature, then the uncompressed size at offset 24, the name at 46
    header = data.rindex(name) - 46
    assert data[header:header + 4] == b"PK\x01\x02"
    data[header + 24:header + 28] = (10 * len(data)).to_bytes(4, "little")
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=re.escape(f"cannot load CAM model {path}: its records declare ")):
        read_checkpoint(path, "CAM model")


def test_a_file_over_the_bound_is_refused_unread(tmp_path, monkeypatch):
    path = tmp_path / "m.pt"
    save_checkpoint(path, {"w": torch.zeros(1000)}, {"architecture": "cam_net"})
    monkeypatch.setattr(checkpoint, "MAX_MODEL_FILE_BYTES", 1000)
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load reached"))
    with pytest.raises(ValueError, match=re.escape(f"CAM model {path} is {path.stat().st_size} bytes, more than the "
                                                   "1000 a model file of this pipeline can be")):
        read_checkpoint(path, "CAM model")


CAM_ARGS = {"backbone": "small_cnn_w16", "n_classes": 3}


def test_a_tensor_of_the_wrong_shape_names_the_file_and_parameter(tmp_path):
    model = build_cam_net(**CAM_ARGS)
    path = tmp_path / "cam.pt"
    save_network(path, model, architecture="cam_net", build_args=CAM_ARGS)
    state_dict, meta = read_checkpoint(path, "CAM model")
    key = next(k for k in state_dict if k.startswith("classifier") and k.endswith("weight"))
    shape = tuple(state_dict[key].shape)
    state_dict[key] = torch.zeros(shape[0] + 1, *shape[1:])
    save_checkpoint(path, state_dict, meta)
    with pytest.raises(ValueError, match=re.escape(f"CAM model {path} does not fit its network: shape of {key}: "
                                                   f"file "
                                                   f"{(shape[0] + 1, *shape[1:])} vs network {shape}")):
        load_network(path, "cam_net")


def test_a_missing_tensor_names_the_file_and_key(tmp_path):
    model = build_cam_net(**CAM_ARGS)
    path = tmp_path / "cam.pt"
    state_dict = model.state_dict()
    key = next(iter(state_dict))
    del state_dict[key]
    save_checkpoint(path, state_dict, {"architecture": "cam_net", "build_args": CAM_ARGS})
    with pytest.raises(ValueError,
                       match=re.escape(f"CAM model {path} does not fit its network: missing [{key!r}]")):
        load_network(path, "cam_net")


@pytest.fixture(params=["tmpfs", "failing write"])
def full_disk(request, tmp_path, monkeypatch):
    """A directory whose filesystem is full: a real 64 KiB tmpfs where mounting is permitted (root), and always
    a write that fails with ENOSPC as a full disk's does (so the message is checked on every machine)."""
    folder = tmp_path / "full"
    folder.mkdir()
    if request.param == "tmpfs":
        if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(folder)],
                          capture_output=True).returncode != 0:
            pytest.skip("mounting a tmpfs is not permitted here; the failing-write case covers the message")
        request.addfinalizer(lambda: subprocess.run(["umount", str(folder)], check=True))
    else:
        class Full(io.FileIO):
            def write(self, data):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        monkeypatch.setattr(checkpoint, "open", lambda path, mode: Full(path, mode), raising=False)
    return folder


def test_a_full_disk_names_enospc_and_the_file_and_leaves_nothing(full_disk):
    path = full_disk / "model.pt"
    with pytest.raises(OSError) as raised:
        save_checkpoint(path, {"w": torch.zeros(100_000)}, {"architecture": "cam_net"})
    assert raised.value.errno == errno.ENOSPC
    assert str(raised.value) == (f"[Errno 28] cannot write {path}: No space left on device (ENOSPC); free space on "
                                 "its filesystem and rerun")
    assert list(full_disk.iterdir()) == []
