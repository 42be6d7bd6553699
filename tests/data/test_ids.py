import re

import pytest

from wsss_lib.data.ids import MAX_ID_LENGTH, check_image_id, id_path, require_ids

VALID = ["2007_000032", "COCO_train2014_000000000009", "img-01.v2", "_x", "a", "9", "a..b", "a" * MAX_ID_LENGTH]
INVALID = {
    "": "it is empty",
    "../../escape_probe": "path separator",
    "sub/2007_000001": "path separator",
    "/etc/passwd": "path separator",
    "..\\escape": "path separator",
    "..": "starts with '.'",
    ".": "starts with '.'",
    ".hidden": "starts with '.'",
    "-rf": "starts with '-'",
    "a\x00b": "control character",
    "a\nb": "control character",
    "a\x7fb": "control character",
    "a b": "holds ' '",
    "café": "holds 'é'",
    "a:b*": "holds '*:'",
    "a" * (MAX_ID_LENGTH + 1): f"{MAX_ID_LENGTH + 1} characters long",
}


@pytest.mark.parametrize("image_id", VALID)
def test_valid_ids_pass_unchanged(image_id):
    assert check_image_id(image_id, "list.txt, line 1") == image_id


@pytest.mark.parametrize("image_id, reason", INVALID.items())
def test_invalid_ids_are_named_with_where_and_why(image_id, reason):
    with pytest.raises(ValueError) as raised:
        check_image_id(image_id, "split list /data/train.txt, line 7")
    message = str(raised.value)
    assert message.startswith(f"split list /data/train.txt, line 7: invalid image id {image_id!r}: "), message
    assert reason in message and "fix the line or rename the image" in message, message


def test_a_non_string_id_is_refused():
    with pytest.raises(ValueError, match="not a string but float"):
        check_image_id(float("nan"), "table.csv, line 2")


def test_id_path_is_the_file_directly_inside_root(tmp_path):
    assert id_path(tmp_path, "2007_000032", ".png", "x") == tmp_path / "2007_000032.png"
    assert id_path("rel/dir", "a.b", ".jpg", "x").as_posix() == "rel/dir/a.b.jpg"


@pytest.mark.parametrize("image_id", ["../escape_probe", "sub/2007_000001", "/abs"])
def test_id_path_refuses_ids_that_leave_root(tmp_path, image_id):
    with pytest.raises(ValueError, match=re.escape(f"CAM store s.h5: invalid image id {image_id!r}")):
        id_path(tmp_path, image_id, ".png", "CAM store s.h5")
    assert list(tmp_path.iterdir()) == []


def test_id_path_refuses_a_suffix_that_leaves_root(tmp_path):
    # the id is valid; the containment check is what stops the joined path
    with pytest.raises(ValueError, match=r"gives .*a/\.\./\.\./x, not a file inside"):
        id_path(tmp_path, "a", "/../../x", "caller")


def test_require_ids_names_split_source_and_the_first_missing():
    require_ids(["a", "b"], {"a", "b"}.__contains__, "CAMs", "train.csv", "cams.h5")
    with pytest.raises(KeyError, match=re.escape("2 images of train.csv have no CAMs in cams.h5, e.g. ['b', 'c']")):
        require_ids(["a", "b", "c"], {"a"}.__contains__, "CAMs", "train.csv", "cams.h5")
