"""Per-method result gathering and the cross-method summary."""

import json

import pandas as pd
import pytest

from wsss_lib.report import markdown_table, method_result, summary_table, write_json


def stage_file(tmp_path, name, **fields):
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps({"per_class_iou": {"background": 0.9, "cat": 0.5}, **fields}))
    return path


def three_stages(tmp_path, method, cam, pseudo, seg, crf=None):
    cam_path = stage_file(tmp_path, f"{method}_cam", miou=cam, split="train", n_images=10, threshold=0.15,
                          best_miou=cam + 0.01, best_threshold=0.2)
    pseudo_path = stage_file(tmp_path, f"{method}_pseudo", miou=pseudo, split="train", n_images=10)
    seg_fields = {"miou": seg, "split": "val", "n_images": 5, "init": "none", "train_split": "train_aug"}
    if crf is not None:
        seg_fields["crf"] = {"miou": crf, "per_class_iou": {"background": 0.95, "cat": 0.6}}
    return method_result(method, cam_path, pseudo_path, stage_file(tmp_path, f"{method}_seg", **seg_fields))


def test_method_result_gathers_the_three_stages(tmp_path):
    result = three_stages(tmp_path, "fmix", 0.5, 0.6, 0.55, crf=0.58)
    assert result["method"] == "fmix"
    assert (result["cam"]["miou"], result["cam"]["split"], result["cam"]["threshold"]) == (0.5, "train", 0.15)
    assert (result["pseudo_label"]["miou"], result["pseudo_label"]["n_images"]) == (0.6, 10)
    seg = result["segmentation"]
    assert (seg["miou"], seg["miou_crf"], seg["split"], seg["n_images"], seg["init"]) == (0.55, 0.58, "val", 5, "none")
    assert seg["per_class_iou_crf"]["cat"] == 0.6


def test_method_result_names_an_incomplete_file(tmp_path):
    cam = stage_file(tmp_path, "cam", miou=0.5, split="train", n_images=3)
    broken = tmp_path / "pseudo.json"
    broken.write_text(json.dumps({"miou": 0.5}))
    with pytest.raises(ValueError, match="pseudo.json"):
        method_result("m", cam, broken, cam)


def test_summary_rows_and_markdown(tmp_path):
    paths = []
    for method, values in {"baseline": (0.5, 0.6, 0.55, 0.58), "sce": (0.52, 0.63, 0.6, None)}.items():
        path = tmp_path / f"{method}.json"
        write_json(three_stages(tmp_path, method, *values[:3], crf=values[3]), path)
        paths.append(path)
    table = summary_table(["baseline", "sce"], paths)
    assert table["method"].tolist() == ["baseline", "sce"]
    assert table["pseudo_label_miou"].tolist() == [0.6, 0.63]
    assert table.loc[0, "seg_miou_crf"] == 0.58 and pd.isna(table.loc[1, "seg_miou_crf"])
    lines = markdown_table(table).splitlines()
    assert lines[2] == "| baseline | 50.0 (train) | 60.0 (train) | 55.0 (val) | 58.0 |"
    assert lines[3] == "| sce | 52.0 (train) | 63.0 (train) | 60.0 (val) | - |"
    with pytest.raises(ValueError, match="2 methods but 1"):
        summary_table(["baseline", "sce"], paths[:1])


def test_cam_summary_rows_and_a_file_missing_keys(tmp_path):
    from wsss_lib.report import cam_summary

    good = stage_file(tmp_path, "a", miou=0.5, threshold=0.15, best_miou=0.6, best_threshold=0.3, split="train",
                      n_images=4)
    table = cam_summary(["a"], [good])
    assert table.to_dict("records") == [{"method": "a", "cam_miou": 0.5, "threshold": 0.15, "best_miou": 0.6,
                                         "best_threshold": 0.3, "split": "train", "n_images": 4}]
    bad = stage_file(tmp_path, "b", miou=0.5, split="train", n_images=4)
    with pytest.raises(ValueError, match=r"b\.json lacks \['threshold', 'best_miou', 'best_threshold'\]"):
        cam_summary(["a", "b"], [good, bad])


def test_published_figures_sit_beside_this_runs_with_what_each_was_measured_on(tmp_path):
    from wsss_lib.report import published_comparison, write_html

    path = tmp_path / "fmix.json"
    write_json(three_stages(tmp_path, "fmix", 0.5, 0.625, 0.55), path)
    published = {"fmix": {"source": "mva-wsss FP_LIU.pdf Tables 1-2", "train_set": "train", "cam_train": 48.2,
                          "pseudo_train": 58.4, "seg_val": 54.0}}
    table = published_comparison(["fmix"], [path], published, "synthetic")
    assert table.values.tolist() == [
        ["fmix", "CAM", "48.2 (train; trained on train)", "mva-wsss FP_LIU.pdf Tables 1-2",
         "50.0 (synthetic train, 10 images)"],
        ["fmix", "pseudo-label", "58.4 (train; trained on train)", "mva-wsss FP_LIU.pdf Tables 1-2",
         "62.5 (synthetic train, 10 images)"],
        ["fmix", "segmentation", "54.0 (val; trained on train)", "mva-wsss FP_LIU.pdf Tables 1-2",
         "55.0 (synthetic val, 5 images)"]]
    unpublished = published_comparison(["fmix"], [path], {"fmix": None}, "voc12")
    assert unpublished["published, full VOC 2012"].tolist() == ["-"] * 3
    html = tmp_path / "summary.html"
    write_html(summary_table(["fmix"], [path]), table, html)
    tables = html_tables(html.read_text())
    assert tables[0] == [["method", "CAM", "pseudo-label", "segmentation", "segmentation + CRF"],
                         ["fmix", "50.0 (train)", "62.5 (train)", "55.0 (val)", "-"]]
    assert tables[1] == [list(table.columns), *table.values.tolist()]


def html_tables(text: str) -> list[list[list[str]]]:
    """The cells of every <table>, row by row (an independent reading of the page the report embeds)."""
    from html.parser import HTMLParser

    class Cells(HTMLParser):
        def __init__(self):
            super().__init__()
            self.tables, self.cell = [], None

        def handle_starttag(self, tag, attrs):
            if tag == "table":
                self.tables.append([])
            elif tag == "tr":
                self.tables[-1].append([])
            elif tag in ("td", "th"):
                self.cell = ""

        def handle_endtag(self, tag):
            if tag in ("td", "th"):
                self.tables[-1][-1].append(self.cell.strip())
                self.cell = None

        def handle_data(self, data):
            if self.cell is not None:
                self.cell += data

    parser = Cells()
    parser.feed(text)
    return parser.tables


def strict_loads(text):
    """json.loads refusing NaN and infinity, as RFC 8259 parsers do (Python's json accepts them by default)."""
    def refuse(constant):
        raise ValueError(f"not JSON: {constant}")
    return json.loads(text, parse_constant=refuse)


def test_write_json_writes_strict_json_and_refuses_a_non_finite_score(tmp_path):
    # an IoU undefined for want of pixels is null (metrics.summarise), and stays so
    result = {"miou": 0.5, "per_class_iou": {"background": 0.9, "cat": None}, "sweep": {"0.1": 0.25}}
    write_json(result, tmp_path / "ok.json")
    assert strict_loads((tmp_path / "ok.json").read_text()) == result
    with pytest.raises(ValueError, match=r"not writing .*bad\.json: miou is nan, sweep\.0\.1 is inf \(JSON has no NaN"):
        write_json({"miou": float("nan"), "sweep": {"0.1": float("inf")}}, tmp_path / "bad.json")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ok.json"]  # nothing written, no temporary left
