import numpy as np
import pandas as pd
import pytest

from wsss_lib.data.label_png import read_label_png, write_label_png
from wsss_lib.data.voc import (VOC_CLASSES, build_split_table, find_voc_root, image_size, labels_from_mask,
                               labels_from_xml, read_image, read_split_table, require_same_classes)


def test_split_table_on_real_voc_sample(voc_sample):
    root = find_voc_root(voc_sample)
    table = build_split_table(root, "train", VOC_CLASSES)
    assert len(table) == 120
    assert list(table.columns[:3]) == ["id", "image", "mask"]
    for _, row in table.sample(10, random_state=0).iterrows():  # labels equal the mask's classes
        values = set(np.unique(read_label_png(row["mask"]))) - {0, 255}
        assert {VOC_CLASSES[v - 1] for v in values} == {c for c in VOC_CLASSES if row[c] == 1}
    assert table[list(VOC_CLASSES)].to_numpy().sum(1).min() >= 1
    assert table.loc[table["id"] == "2007_007585", "dog"].item() == 1  # the dog photo of the weights test
    assert len(build_split_table(root, "train_aug", VOC_CLASSES)) == 300
    assert len(build_split_table(root, "val", VOC_CLASSES)) == 100


def make_tree(tmp_path, ids=("a", "b")):
    root = tmp_path / "VOC2012"
    (root / "JPEGImages").mkdir(parents=True)
    (root / "SegmentationClass").mkdir()
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    (root / "ImageSets" / "Segmentation" / "train.txt").write_text("\n".join(ids) + "\n")
    from PIL import Image

    for i, image_id in enumerate(ids):
        Image.new("RGB", (8, 6), (i * 40, 0, 0)).save(root / "JPEGImages" / f"{image_id}.jpg")
        mask = np.zeros((6, 8), np.uint8)
        mask[2:4, 2:5] = i + 1
        mask[0, 0] = 255
        write_label_png(root / "SegmentationClass" / f"{image_id}.png", mask)
    return root


def test_labels_from_masks_and_xml_fallback(tmp_path):
    root = make_tree(tmp_path, ids=("a", "b", "c"))
    (root / "Annotations").mkdir()
    (root / "Annotations" / "c.xml").write_text(
        "<annotation><object><name>cat</name></object><object><name>dog</name></object></annotation>"
    )

    (root / "SegmentationClass" / "c.png").unlink()  # c has only its XML annotation
    table = build_split_table(find_voc_root(tmp_path), "train", VOC_CLASSES)
    assert table.loc[0, "aeroplane"] == 1 and table.loc[1, "bicycle"] == 1
    assert table.loc[2, "mask"] == "" and table.loc[2, ["cat", "dog"]].tolist() == [1, 1]
    assert table[list(VOC_CLASSES)].to_numpy().sum() == 4


def test_missing_image_mask_and_bad_values_are_named(tmp_path):
    root = make_tree(tmp_path)
    (root / "JPEGImages" / "b.jpg").unlink()
    with pytest.raises(FileNotFoundError, match="b.jpg"):
        build_split_table(root, "train", VOC_CLASSES)
    root = make_tree(tmp_path / "2")
    (root / "SegmentationClass" / "a.png").unlink()
    with pytest.raises(FileNotFoundError, match="image a .*no mask"):
        build_split_table(root, "train", VOC_CLASSES)
    with pytest.raises(ValueError, match="x.png.*\\[30\\]"):
        labels_from_mask(np.array([[0, 30]]), 20, source="x.png")
    with pytest.raises(FileNotFoundError, match="JPEGImages"):
        find_voc_root(tmp_path / "nowhere")


def test_corrupt_image_is_named(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a jpeg at all")
    with pytest.raises(ValueError, match="bad.jpg"):
        read_image(bad)


def test_wrong_csv_columns_are_named(tmp_path):
    path = tmp_path / "train.csv"
    pd.DataFrame({"id": ["a"], "img": ["x.jpg"], "mask": [""], "cat": [1]}).to_csv(path, index=False)
    with pytest.raises(ValueError, match="train.csv.*'image'"):
        read_split_table(path)
    pd.DataFrame({"id": ["a"], "image": ["x.jpg"], "mask": [""], "cat": [2]}).to_csv(path, index=False)
    with pytest.raises(ValueError, match="0/1"):
        read_split_table(path)


def test_xml_with_unknown_class(tmp_path):
    xml = tmp_path / "a.xml"
    xml.write_text("<annotation><object><name>unicorn</name></object></annotation>")
    with pytest.raises(ValueError, match="unicorn"):
        labels_from_xml(xml, VOC_CLASSES)


def test_image_listed_twice_is_named(tmp_path):
    root = make_tree(tmp_path, ids=("a", "b"))
    (root / "ImageSets" / "Segmentation" / "train.txt").write_text("a\nb\na\n")
    with pytest.raises(ValueError, match=r"train\.txt.*more than once.*\['a'\]"):
        build_split_table(root, "train", VOC_CLASSES)
    path = tmp_path / "train.csv"
    pd.DataFrame({"id": ["a", "b", "b"], "image": ["a.jpg", "b.jpg", "b.jpg"], "mask": "", "cat": 1}).to_csv(
        path, index=False)
    with pytest.raises(ValueError, match=r"train\.csv.*more than once.*\['b'\]"):
        read_split_table(path)


def test_mask_of_another_size_than_its_image_is_named(tmp_path):
    root = make_tree(tmp_path)
    write_label_png(root / "SegmentationClass" / "b.png", np.zeros((6, 9), np.uint8))
    with pytest.raises(ValueError, match=r"b\.png is 6x9 .*b\.jpg is 6x8"):
        build_split_table(root, "train", VOC_CLASSES)


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_corrupt_jpeg_fails_the_split_table_naming_it(tmp_path, damage):
    from PIL import Image

    root = make_tree(tmp_path)
    image = root / "JPEGImages" / "b.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (60, 80, 3), dtype=np.uint8)).save(image)
    data = image.read_bytes()
    image.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"GIF89a but not really" * 10)
    write_label_png(root / "SegmentationClass" / "b.png", np.zeros((60, 80), np.uint8))
    expected = r"cannot read image .*b\.jpg: image file is truncated" if damage == "truncated" else \
        r"cannot read image .*b\.jpg"
    with pytest.raises(ValueError, match=expected):
        build_split_table(root, "train", VOC_CLASSES)
    assert image_size(root / "JPEGImages" / "a.jpg") == (6, 8)


def test_a_complete_jpeg_with_trailing_bytes_is_accepted(tmp_path):
    from PIL import Image

    path = tmp_path / "padded.jpg"
    Image.fromarray(np.full((30, 40, 3), 90, np.uint8)).save(path)
    path.write_bytes(path.read_bytes() + bytes(4096))  # past the end-marker window: decoded in full, and fine
    assert image_size(path) == (30, 40)


def test_tables_read_together_name_the_class_column_one_lacks(tmp_path):
    def table(name, **classes):
        path = tmp_path / name
        pd.DataFrame({"id": [name], "image": ["x.jpg"], "mask": [""], **classes}).to_csv(path, index=False)
        return path

    train, val, reordered = table("train.csv", cat=[1]), table("val.csv", cat=[1], dog=[0]), \
        table("reordered.csv", dog=[0], cat=[1])
    with pytest.raises(ValueError, match=r"train\.csv lacks class columns \['dog'\]"):
        require_same_classes([train, val], [read_split_table(train), read_split_table(val)])
    with pytest.raises(ValueError, match=r"val\.csv has them in the order \['cat', 'dog'\], .*reordered\.csv"):
        require_same_classes([val, reordered], [read_split_table(val), read_split_table(reordered)])
