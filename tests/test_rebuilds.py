"""Exact incremental rebuilds: dry runs on a finished tree list exactly the jobs a change must rerun.

A change of one method's config reruns that method's jobs; an edit of library code reruns the rules
whose scripts reach it through imports (wsss_lib/provenance.py) and their dependants; a change of the
dataset reruns everything. Planning imports no torch.
"""

import re
import shutil
import time

import pytest

from conftest import REPO, run_snakemake
from overlays import ONE_EPOCH

pytestmark = pytest.mark.slow  # runs Snakemake jobs: `pytest -m "not slow"` skips it

TARGETS = ("results/baseline/miou.json", "results/fmix/miou.json")
CAM = ["train_cam", "make_cams", "eval_cams"]
REFINE = ["crf_labels", "train_affinity", "random_walk", "eval_pseudo_labels"]
SEGMENT = ["train_deeplab", "infer_deeplab", "eval_segmentation", "method_miou"]
JOB = re.compile(r"^(?:local)?(?:rule|checkpoint) (\w+):\n((?:[ \t]+.*\n)*)", re.M)


def planned_jobs(stdout: str) -> list[tuple[str, str]]:
    """(rule, method or '-') of every job a dry run schedules, sorted."""
    jobs = []
    for rule, body in JOB.findall(stdout):
        method = re.search(r"wildcards: .*?method=(\w+)", body)
        split = re.search(r"wildcards: .*?split=(\w+)", body)
        jobs.append((rule, method.group(1) if method else split.group(1) if split else "-"))
    return sorted(jobs)


def expected(rules, methods=("baseline", "fmix")):
    return sorted((rule, method) for method in methods for rule in rules)


@pytest.fixture(scope="module")
def finished_tree(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("rebuilds")
    run_snakemake(workdir, "--cores", "2", *TARGETS, overlay=ONE_EPOCH)
    return workdir


@pytest.fixture(scope="module")
def code_copy(tmp_path_factory):
    """A copy of the workflow and library, to edit without touching the repository."""
    copy = tmp_path_factory.mktemp("code")
    shutil.copy(REPO / "Snakefile", copy)
    for folder in ("rules", "workflow", "config", "wsss_lib", "envs"):
        shutil.copytree(REPO / folder, copy / folder, ignore=shutil.ignore_patterns("__pycache__"))
    return copy


def dry_run(workdir, overlay=ONE_EPOCH, snakefile=None):
    args = ["--snakefile", str(snakefile)] if snakefile else []
    result = run_snakemake(workdir, "-n", *args, *TARGETS, overlay=overlay)
    return planned_jobs(result.stdout), result.stdout + result.stderr


def test_unchanged_tree_has_nothing_to_do(finished_tree):
    jobs, output = dry_run(finished_tree)
    assert jobs == [] and "Nothing to be done" in output, output


def test_changing_one_methods_config_reruns_that_method_only(finished_tree):
    changed = {**ONE_EPOCH, "methods": {"fmix": {"train_cam": {"epochs": 1, "mix_alpha": 0.5}}}}
    jobs, output = dry_run(finished_tree, changed)
    assert jobs == expected(CAM + REFINE + SEGMENT, ["fmix"]), output


def test_editing_crf_code_reruns_the_crf_rules_and_their_dependants_only(finished_tree, code_copy):
    unchanged, output = dry_run(finished_tree, snakefile=code_copy / "Snakefile")
    assert unchanged == [], output  # the same bytes in another folder hash the same
    crf = code_copy / "wsss_lib" / "crf.py"
    original = crf.read_text()
    try:
        crf.write_text(original + "\n# a bug fix would go here\n")
        jobs, output = dry_run(finished_tree, snakefile=code_copy / "Snakefile")
    finally:
        crf.write_text(original)
    # crf_labels uses the CRF, infer_deeplab its post-processing; CAM training and CAMs are untouched
    assert jobs == expected(REFINE + SEGMENT), output
    assert "Params have changed since last execution" in output, output


def test_changing_the_dataset_reruns_everything(finished_tree):
    changed = {**ONE_EPOCH, "synthetic": {**ONE_EPOCH["synthetic"], "seed": 1}}
    jobs, output = dry_run(finished_tree, changed)
    data = [("make_synthetic", "-"), ("prepare_splits", "train"), ("prepare_splits", "val")]
    assert jobs == sorted(data + expected(CAM + REFINE + SEGMENT)), output


def test_planning_imports_no_torch(finished_tree, tmp_path):
    """A login node with Snakemake but no GPU stack can plan: a `torch` that cannot be imported is fine."""
    fake = tmp_path / "no_torch" / "torch"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('torch is not installed on this login node')\n")
    started = time.perf_counter()
    result = run_snakemake(finished_tree, "-n", *TARGETS, overlay=ONE_EPOCH,
                           env={"PYTHONPATH": f"{fake.parent}:{REPO}"})
    assert "Nothing to be done" in result.stdout + result.stderr, result.stdout + result.stderr
    print(f"dry run without torch: {time.perf_counter() - started:.1f} s")
