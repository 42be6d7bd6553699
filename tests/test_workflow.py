"""Integration: the real Snakemake workflow on a tiny synthetic config, in a temporary directory."""

import json
import re

import h5py
import numpy as np
import pytest

from conftest import run_snakemake
from overlays import ONE_EPOCH_EVERY_METHOD, TINY_SYNTHETIC


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("tiny")
    run_snakemake(workdir, "--cores", "2", "results/baseline/miou.json", overlay=TINY_SYNTHETIC)
    return workdir


def deeplab_fit_to_pseudo_labels(workdir) -> tuple[float, float]:
    """(DeepLab's pixel accuracy on its own training images against the pseudo-labels it learned from,
    the accuracy of predicting their most frequent label everywhere): whether the segmentation stage
    learned its targets, whatever their quality."""
    import pandas as pd
    import torch

    from wsss_lib.data.label_png import read_label_png
    from wsss_lib.data.transforms import normalise
    from wsss_lib.data.voc import read_image
    from wsss_lib.models.registry import load_network
    from wsss_lib.segmentation import predict_probabilities

    results = workdir / "results/baseline"
    model, meta = load_network(results / "seg/model.pt", "deeplab")
    model.eval()
    correct = labelled = 0
    counts = np.zeros(256, dtype=np.int64)
    for image_id, image in pd.read_csv(workdir / "results/splits/train.csv")[["id", "image"]].itertuples(index=False):
        target = read_label_png(results / f"refine/pseudo/{image_id}.png")
        with torch.no_grad():
            probabilities = predict_probabilities(model, normalise(read_image(workdir / image), meta["input_mean"],
                                                                   meta["input_std"]))
        valid = target != 255
        correct += int((probabilities.argmax(0).numpy()[valid] == target[valid]).sum())
        labelled += int(valid.sum())
        counts += np.bincount(target[valid], minlength=256)
    return correct / labelled, counts.max() / labelled


@pytest.mark.slow
def test_learned_cams_beat_all_background(tiny_run):
    result = json.loads((tiny_run / "results/baseline/cam/miou.json").read_text())
    assert result["n_images"] == 48 and result["split"] == "train"
    # At the reference threshold and at the best one of the sweep, against all-background on the same masks.
    # Over dataset + training seeds 0-7 (benchmarks/learned_margins.py) the margins were 0.031-0.145 and
    # 0.117-0.315: the +0.1 / +0.2 asserted before failed on 5 and 2 of the 8 seeds.
    assert result["miou"] > result["all_background_miou"], result
    assert result["best_miou"] > result["all_background_miou"] + 0.05, result
    assert [float(t) for t in result["sweep"]] == pytest.approx(np.arange(0.05, 0.51, 0.05))
    assert result["best_miou"] == max(result["sweep"].values()) >= result["miou"]  # 0.15 is in the sweep


@pytest.mark.slow
def test_outputs_logs_and_store_layout(tiny_run):
    results = tiny_run / "results"
    log = (results / "baseline/cam/train_log.csv").read_text().splitlines()
    assert log[0].startswith("epoch,train_loss,") and "val_map" in log[0] and len(log) == 1 + 30
    assert not (results / "baseline/cam/.resume/train_cam.pt").exists()  # removed on success
    with h5py.File(results / "baseline/cam/cams.h5", "r") as store:
        assert store.attrs["method"] == "baseline" and len(store) == 48
        group = store[next(iter(store))]
        keys, cam, high = group["keys"][()], group["cam"][()], group["high_res"][()]
        assert cam.dtype == np.float16 and high.shape == (len(keys), 64, 64) and cam.shape == (len(keys), 16, 16)
        assert np.allclose(high.reshape(len(keys), -1).max(1), 1.0, atol=1e-2)
    for rule in ("train_cam", "make_cams", "eval_cams"):
        assert (results / f"logs/{rule}/baseline.log").is_file()
        assert (results / f"benchmarks/{rule}/baseline.tsv").is_file()


@pytest.mark.slow
def test_refinement_from_cams_to_pseudo_labels(tiny_run):
    import torch

    from wsss_lib.data.label_png import read_label_png

    results = tiny_run / "results/baseline"
    cam = json.loads((results / "cam/miou.json").read_text())
    pseudo = json.loads((results / "refine/miou.json").read_text())
    assert pseudo["n_images"] == 48 and pseudo["split"] == "train"
    # the pseudo-labels beat the all-background prediction of the same run (by 0.060-0.201 over seeds 0-7);
    # beating the CAMs themselves is too close to call on 48 tiny images, so it is not asserted here
    assert pseudo["miou"] > cam["all_background_miou"], (pseudo["miou"], cam["all_background_miou"])
    with h5py.File(results / "refine/affinity_labels.h5", "r") as labels, \
            h5py.File(results / "cam/cams.h5", "r") as cams:
        assert len(labels) == 48 and labels.attrs["low_alpha"] == 4 and labels.attrs["high_alpha"] == 32
        # learned quantities: the confident labels must beat chance over background + 3 classes (0.25);
        # over seeds 0-7 their agreement was 0.307-0.637 (a fixed 0.8 failed at 0.60 once)
        assert 0 < labels.attrs["ignored_fraction"] < 1 and labels.attrs["agreement_with_masks"] > 0.25
        for image_id in list(labels)[:10]:
            values = set(np.unique(labels[image_id]["labels"][()]).tolist())
            allowed = {0, 255} | {int(k) + 1 for k in cams[image_id]["keys"][()]}
            assert values <= allowed, (image_id, values, allowed)
    pngs = sorted((results / "refine/pseudo").glob("*.png"))
    assert len(pngs) == 48 and read_label_png(pngs[0]).shape == (64, 64)
    meta = torch.load(results / "refine/affinity.pt", weights_only=True)["meta"]
    assert (meta["build_args"]["stride"], meta["radius"], meta["init"]) == (8, 5, "cam")
    log = (results / "refine/affinity_log.csv").read_text().splitlines()
    assert "train_bg_loss" in log[0] and len(log) == 1 + 8
    for rule in ("crf_labels", "train_affinity", "random_walk", "eval_pseudo_labels"):
        assert (tiny_run / f"results/logs/{rule}/baseline.log").is_file()
        assert (tiny_run / f"results/benchmarks/{rule}/baseline.tsv").is_file()


@pytest.mark.slow
def test_segmentation_from_pseudo_labels_to_the_method_result(tiny_run):
    import torch

    from wsss_lib.data.label_png import read_label_png

    results = tiny_run / "results/baseline"
    seg = json.loads((results / "seg/miou.json").read_text())
    assert seg["split"] == "val" and seg["n_images"] == 16 and seg["init"] == "none"
    assert (seg["train_split"], seg["n_train_images"], seg["iterations"]) == ("train", 48, 120)
    # Learned: DeepLab fits the pseudo-labels it trained on, against predicting their most frequent label
    # everywhere. Over seeds 0-7 (benchmarks/learned_margins.py) fit 0.87-0.94 vs majority 0.35-0.48, margin
    # >= 0.42. Its val mIoU against all-background is not asserted: it follows the pseudo-labels' quality and
    # fell 0.015 below it on one seed of eight (a fixed 0.3 failed on an Intel CPU at 0.20).
    fit, majority = deeplab_fit_to_pseudo_labels(tiny_run)
    assert fit > majority + 0.2, (fit, majority)
    assert 0 < seg["miou"] <= 1 and 0 < seg["crf"]["miou"] <= 1, seg
    for kind in ("plain", "crf"):
        pngs = sorted((results / f"seg/pred/{kind}").glob("*.png"))
        assert len(pngs) == 16 and read_label_png(pngs[0]).shape == (64, 64)
    import pandas as pd

    log = pd.read_csv(results / "seg/train_log.csv")
    assert len(log) == 20 and log["lr"].iloc[-1] == 0.0  # 120 updates = 20 epochs of 6; lr decayed to 0
    meta = torch.load(results / "seg/model.pt", weights_only=True)["meta"]
    assert meta["architecture"] == "deeplab" and (meta["build_args"]["head"], meta["build_args"]["n_classes"]) == (
        "v2", 4)
    gathered = json.loads((results / "miou.json").read_text())
    sources = (("cam", "cam/miou.json"), ("pseudo_label", "refine/miou.json"), ("segmentation", "seg/miou.json"))
    for stage, source in sources:
        assert gathered[stage]["miou"] == json.loads((results / source).read_text())["miou"]
    assert gathered["segmentation"]["miou_crf"] == seg["crf"]["miou"]
    assert (gathered["cam"]["split"], gathered["pseudo_label"]["split"]) == ("train", "train")
    for rule in ("train_deeplab", "infer_deeplab", "eval_segmentation", "method_miou"):
        assert (tiny_run / f"results/logs/{rule}/baseline.log").is_file()
        assert (tiny_run / f"results/benchmarks/{rule}/baseline.tsv").is_file()


def test_unknown_config_key_fails_before_any_job(tmp_path):
    result = run_snakemake(tmp_path, "-n", overlay={"defaults": {"train_cam": {"epochz": 3}}}, check=False)
    assert result.returncode != 0
    assert "epochz" in result.stdout + result.stderr
    assert not (tmp_path / "results").exists()


def test_lint_is_clean(tmp_path):
    result = run_snakemake(tmp_path, "--lint", check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Lints for" not in result.stdout + result.stderr


SUBCATEGORY_ROUNDS = {"sce": 2, "sct": 1, "sc_cam": 2}
METHODS = ["baseline", "mixup", "manifold_mixup", "fmix", "fmix_aug", "sce", "sct", "sc_cam"]


@pytest.fixture(scope="module")
def every_method_run(tmp_path_factory):
    """Every method, one epoch each, sub-category methods with 2 rounds; with a dry-run taken right after
    the first clustering checkpoint."""
    workdir = tmp_path_factory.mktemp("methods")
    run_snakemake(workdir, "--cores", "2", "results/sce/round1/clusters.json", overlay=ONE_EPOCH_EVERY_METHOD)
    dry = run_snakemake(workdir, "-n", "results/sce/round1/model.pt", overlay=ONE_EPOCH_EVERY_METHOD)
    run_snakemake(workdir, "--cores", "2", overlay=ONE_EPOCH_EVERY_METHOD)  # the default target: summary.csv
    return workdir, dry.stdout


@pytest.mark.slow
def test_every_method_trains_into_the_cam_summary(every_method_run):
    import pandas as pd

    workdir, _ = every_method_run
    table = pd.read_csv(workdir / "results/cam_summary.csv")
    assert table["method"].tolist() == METHODS
    assert table["cam_miou"].between(0, 1).all() and (table["n_images"] == 48).all()
    for method in ["baseline", "mixup", "manifold_mixup", "fmix", "fmix_aug"]:
        log = (workdir / f"results/{method}/cam/train_log.csv").read_text().splitlines()
        assert len(log) == 2  # header + one epoch
        if method != "baseline":  # the regularisers are logged for the mixing methods
            assert "train_entropy" in log[0] and "train_concentration" in log[0]
    summary = json.loads((workdir / "results/fmix/cam/miou.json").read_text())
    assert summary["miou"] == pytest.approx(table.set_index("method").loc["fmix", "cam_miou"], abs=1e-4)
    # fmix_aug learns from train_aug (64 images, 8 batches of 8), the others from train (48 images)
    assert "8/8" in (workdir / "results/logs/train_cam/fmix_aug.log").read_text()
    assert "6/6" in (workdir / "results/logs/train_cam/fmix.log").read_text()


@pytest.mark.slow
def test_every_method_reaches_the_summary(every_method_run):
    import pandas as pd

    workdir, _ = every_method_run
    table = pd.read_csv(workdir / "results/summary.csv")
    assert table["method"].tolist() == METHODS
    for column in ("cam_miou", "pseudo_label_miou", "seg_miou", "seg_miou_crf"):
        assert table[column].between(0, 1).all(), column
    for row in table.itertuples():
        gathered = json.loads((workdir / f"results/{row.method}/miou.json").read_text())
        assert row.seg_miou == pytest.approx(gathered["segmentation"]["miou"], abs=1e-4)
    markdown = (workdir / "results/summary.md").read_text()
    assert all(f"| {method} |" in markdown for method in METHODS)


@pytest.mark.slow
def test_train_aug_pseudo_labels_keep_the_cam_score_on_train(every_method_run):
    import torch

    workdir, _ = every_method_run
    results = workdir / "results/fmix_aug"
    with h5py.File(results / "cam/cams.h5", "r") as cams:
        assert len(cams) == 64  # CAMs for train_aug, which holds train
    assert len(list((results / "refine/pseudo").glob("*.png"))) == 64
    gathered = json.loads((results / "miou.json").read_text())
    assert (gathered["cam"]["split"], gathered["cam"]["n_images"]) == ("train", 48)
    assert (gathered["pseudo_label"]["split"], gathered["pseudo_label"]["n_images"]) == ("train", 48)
    meta = torch.load(results / "seg/model.pt", weights_only=True)["meta"]
    assert (meta["train_split"], meta["n_train_images"]) == ("train_aug", 64)
    with h5py.File(workdir / "results/fmix/cam/cams.h5", "r") as cams:
        assert len(cams) == 48  # the others stay on train


@pytest.mark.slow
def test_changing_one_method_reruns_only_its_jobs(every_method_run):
    workdir, _ = every_method_run
    changed = json.loads(json.dumps(ONE_EPOCH_EVERY_METHOD))
    changed["methods"]["mixup"] = {"train_cam": {"entropy_weight": 0.05}}
    result = run_snakemake(workdir, "-n", overlay=changed)
    scheduled = re.findall(r"^(?:local)?rule (\w+):", result.stdout, flags=re.M)
    methods = set(re.findall(r"wildcards: method=(\w+)", result.stdout))
    assert methods == {"mixup"}, result.stdout
    assert sorted(scheduled) == sorted(["train_cam", "make_cams", "eval_cams", "cam_summary", "crf_labels",
                                        "train_affinity", "random_walk", "eval_pseudo_labels", "train_deeplab",
                                        "infer_deeplab", "eval_segmentation", "method_miou", "summary",
                                        "plot_training_curves", "plot_scores", "plot_examples", "plot_stage_miou",
                                        "plot_cam_comparison", "all"])
    changed = json.loads(json.dumps(ONE_EPOCH_EVERY_METHOD))
    changed["methods"]["sce"]["subcategory"]["rounds"] = 3  # one more round: only sce's new round and CAMs
    result = run_snakemake(workdir, "-n", overlay=changed)
    assert set(re.findall(r"wildcards: method=(\w+)", result.stdout)) == {"sce"}, result.stdout
    assert "round=3" in result.stdout and "round=1" not in result.stdout
    unchanged = run_snakemake(workdir, "-n", overlay=ONE_EPOCH_EVERY_METHOD)
    assert "Nothing to be done" in unchanged.stdout + unchanged.stderr


@pytest.mark.slow
def test_dry_run_after_the_checkpoint_schedules_the_head_size_found(every_method_run):
    workdir, dry_stdout = every_method_run
    count = json.loads((workdir / "results/sce/round1/clusters.json").read_text())["total"]
    assert f"train sce round 1 with a sub-category head of {count}" in dry_stdout


@pytest.mark.slow
def test_refinement_runs_after_a_subcategory_method(every_method_run):
    import torch

    workdir, _ = every_method_run
    results = workdir / "results/sct"
    pseudo = json.loads((results / "refine/miou.json").read_text())
    assert pseudo["n_images"] == 48 and 0 < pseudo["miou"] <= 1
    meta = torch.load(results / "refine/affinity.pt", weights_only=True)["meta"]
    # AffinityNet starts from the net that made the CAMs: the last sub-category round's
    assert meta["init"] == "cam" and meta["init_model"].endswith("sct/round1/model.pt")
    assert len(list((results / "refine/pseudo").glob("*.png"))) == 48


@pytest.mark.slow
@pytest.mark.parametrize("method", ["sce", "sct", "sc_cam"])
def test_subcategory_head_size_equals_the_count_found(every_method_run, method):
    import pandas as pd
    import torch

    workdir, _ = every_method_run
    results = workdir / "results" / method
    rounds = SUBCATEGORY_ROUNDS[method]
    for r in range(1, rounds + 1):
        info = json.loads((results / f"round{r}/clusters.json").read_text())
        table = pd.read_csv(results / f"round{r}/clusters.csv")
        assert info["total"] == table.shape[1] - 1 == sum(info["per_class"].values()) > 0
        assert len(table) == info["n_images"] == 64  # every train_aug image has its sub-categories
        if method == "sc_cam":  # SC-CAM: k-means with k = 10 per class
            assert set(info["partition"].values()) == {"kmeans:k10"} and info["total"] == 30
        blob = torch.load(results / f"round{r}/model.pt", weights_only=True)
        assert blob["meta"]["build_args"]["n_subcategories"] == info["total"]
        assert blob["state_dict"]["sub_classifier.weight"].shape[0] == info["total"]
        assert blob["meta"]["round"] == r
    with h5py.File(results / "cam/cams.h5", "r") as cams:
        assert cams.attrs["model"].endswith(f"{method}/round{rounds}/model.pt")  # the last round makes the CAMs
    assert (results / "teacher/model.pt").exists() == (method == "sct")


def png_size(path) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as image:
        assert image.format == "PNG", path
        return image.size


@pytest.mark.slow
def test_every_method_draws_its_figures(every_method_run):
    workdir, _ = every_method_run
    results = workdir / "results"
    for method in METHODS:
        figures = sorted(p.name for p in (results / method / "figures").iterdir())
        rounds = [f"subcategories_round{r}.png" for r in range(1, SUBCATEGORY_ROUNDS.get(method, 0) + 1)]
        assert figures == sorted(["training_curves.png", "examples.png", "per_class_iou.png",
                                  "cam_thresholds.png", *rounds]), (method, figures)
        # one row of panels per training job: classifier, (teacher), rounds, AffinityNet, DeepLab
        rows = 3 + SUBCATEGORY_ROUNDS.get(method, 0) + (method == "sct")
        width, height = png_size(results / method / "figures/training_curves.png")
        assert 200 * rows < height < 300 * rows, (method, height)
        # the example grid: one row per figure image (config figures.n_images: 4)
        width, height = png_size(results / method / "figures/examples.png")
        assert 4 * 150 < height < 4 * 250 + 150, (method, height)
    # sc_cam's k-means gives 10 sub-categories for each of the 3 classes: one 68 px row each (64 + a gap)
    width, height = png_size(results / "sc_cam/figures/subcategories_round1.png")
    assert 30 * 68 < height < 30 * 68 + 120, height
    assert png_size(results / "figures/stage_miou.png")[0] > 600
    assert png_size(results / "figures/cam_comparison.png")[0] > 170 * (len(METHODS) + 2)


@pytest.mark.slow
def test_summary_markdown_sets_this_run_beside_the_published_figures(every_method_run):
    workdir, _ = every_method_run
    markdown = (workdir / "results/summary.md").read_text()
    gathered = json.loads((workdir / "results/fmix/miou.json").read_text())
    ours = 100 * gathered["pseudo_label"]["miou"]
    # config.yaml: fmix's published pseudo-labels, 58.4 on VOC train (mva-wsss FP_LIU.pdf Tables 1-2)
    row = (f"| fmix | pseudo-label | 58.4 (train; trained on train) | mva-wsss FP_LIU.pdf Tables 1-2 | "
           f"{ours:.1f} (synthetic train, 48 images) |")
    assert row in markdown, markdown
    assert "| sc_cam | segmentation | 66.1 (val; trained on train_aug) |" in markdown
    assert "| sc_cam | CAM | - | - |" in markdown  # SC-CAM publishes no CAM figure that the seed quotes


@pytest.mark.slow
def test_progress_and_throughput_in_the_logs_of_per_image_jobs(every_method_run):
    workdir, _ = every_method_run
    logs = workdir / "results/logs"
    for job, count in (("make_cams", 48), ("crf_labels", 48), ("random_walk", 48), ("infer_deeplab (+ CRF)", 16)):
        text = (logs / f"{job.split()[0]}/baseline.log").read_text()
        assert re.search(rf"^{re.escape(job)}: {count} images in [0-9.]+ s \([0-9.]+ images/s\)$", text, re.M), text
        assert f"{count}/{count}" in text  # the bar's last state
    # sce round 1 clusters train_aug's 64 images
    assert re.search(r"^cluster_features \(\d+ sub-categories\): 64 images in ", (
        logs / "cluster_features/sce_round1.log").read_text(), re.M)


@pytest.mark.slow
def test_html_report_in_a_real_browser(every_method_run, browser):
    """`snakemake --report` on the run, opened in headless Chromium: the menu lists every method, and clicking
    through it shows each figure and the summary tables."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    workdir, _ = every_method_run
    run_snakemake(workdir, "--report", "report.html", overlay=ONE_EPOCH_EVERY_METHOD)
    wait = WebDriverWait(browser, 30)

    def page_text():
        return browser.find_element(By.TAG_NAME, "body").text

    def click(label):
        def visible(driver):
            found = driver.find_elements(By.XPATH, f"//*[normalize-space(text())='{label}']")
            return [e for e in found if e.is_displayed()]
        wait.until(visible)[0].click()

    def view(result):  # the eye button of a result's row
        wait.until(lambda driver: driver.find_elements(
            By.XPATH, f"//tr[td[normalize-space(text())='{result}']]//a[@iconname='eye']"))[0].click()

    def open_report():
        browser.get((workdir / "report.html").as_uri())
        wait.until(lambda driver: "all methods" in page_text())

    open_report()
    assert set(METHODS) <= set(page_text().splitlines())
    click("all methods")
    wait.until(lambda driver: "results/summary.html" in page_text())
    assert {"results/figures/stage_miou.png", "results/figures/cam_comparison.png"} <= set(page_text().splitlines())
    view("results/summary.html")
    browser.switch_to.frame(wait.until(lambda driver: driver.find_elements(By.TAG_NAME, "iframe"))[0])
    tables = wait.until(lambda driver: driver.find_elements(By.TAG_NAME, "table"))
    summary_text, comparison_text = tables[0].text, tables[1].text
    browser.switch_to.default_content()
    assert summary_text.splitlines()[0] == "method CAM pseudo-label segmentation segmentation + CRF"
    assert [line.split()[0] for line in summary_text.splitlines()[1:]] == METHODS
    assert "fmix pseudo-label 58.4 (train; trained on train) mva-wsss FP_LIU.pdf Tables 1-2" in comparison_text

    seen = set()
    for method in ("baseline", "sc_cam"):
        open_report()
        click(method)
        for subcategory in ("training", "scores", "images"):
            click(subcategory)
            wait.until(lambda driver: f"results/{method}/figures/" in page_text())
            seen |= set(re.findall(rf"results/{method}/figures/\w+\.png", page_text()))
            click(method)  # the breadcrumb, back to the method's subcategories
    expected = {f"results/{m}/figures/{name}.png" for m in ("baseline", "sc_cam")
                for name in ("training_curves", "per_class_iou", "cam_thresholds", "examples")}
    expected |= {f"results/sc_cam/figures/subcategories_round{r}.png" for r in (1, 2)}
    assert seen == expected
    click("images")
    view("results/sc_cam/figures/examples.png")
    shown = wait.until(lambda driver: [i for i in driver.find_elements(By.TAG_NAME, "img")
                                       if i.is_displayed() and i.get_attribute("src").startswith("data:image/png")])
    assert shown[0].get_property("naturalHeight") > 500  # the 4-image grid, decoded by the browser
    browser.save_screenshot(str(workdir / "report_screenshot.png"))
    print(f"report screenshot: {workdir / 'report_screenshot.png'}")
