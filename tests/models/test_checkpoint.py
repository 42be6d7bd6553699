"""Model files: written by save_checkpoint, read by read_checkpoint without unpickling code."""

import pickle
import re

import pytest
import torch

from conftest import RunsCodeWhenUnpickled
from wsss_lib.models.checkpoint import read_checkpoint, save_checkpoint


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
