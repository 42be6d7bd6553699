"""The workflow on a real one-node SLURM cluster (scripts/slurm_cluster.sh), through the executor plugin.

Needs root (the script installs Debian's slurmctld, slurmd, slurm-client and munge and writes
/etc/slurm); skipped otherwise, or where the packages cannot be installed.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from conftest import REPO, run_snakemake
from overlays import BATCH_TOO_LARGE, ONE_EPOCH_SCE

pytestmark = pytest.mark.slow  # runs Snakemake jobs: `pytest -m "not slow"` skips it

CLUSTER = REPO / "scripts" / "slurm_cluster.sh"
PROFILE = REPO / "tests" / "slurm_profile"
SUBMITTED = re.compile(r"has been submitted with SLURM jobid (\d+) \(log: (\S+)\)\.")


def _tail(text: str | bytes | None, n: int = 6000) -> str:
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    return (text or "")[-n:]


def _scontrol_job(job_id: str) -> dict[str, str]:
    """`scontrol -d show job` as key=value pairs (finished jobs stay listed for MinJobAge seconds)."""
    out = subprocess.run(["scontrol", "-d", "show", "job", job_id], capture_output=True, text=True,
                         timeout=30, check=True).stdout
    return dict(re.findall(r"(\S+?)=(\S*)", out))


@pytest.fixture(scope="module")
def slurm_cluster():
    if os.geteuid() != 0:
        pytest.skip("SLURM tests need root: scripts/slurm_cluster.sh installs packages and writes /etc/slurm")
    try:
        start = subprocess.run(["bash", str(CLUSTER), "start"], capture_output=True, text=True, timeout=600)
        if start.returncode == 3:
            pytest.skip(f"SLURM cannot be installed here: {start.stderr.strip()}")
        if start.returncode != 0:
            pytest.fail(f"{CLUSTER} start failed ({start.returncode}):\n{_tail(start.stderr)}")
        yield
    finally:
        # also after a failed or timed-out start: the script stops only the daemons it recorded
        subprocess.run(["bash", str(CLUSTER), "stop"], capture_output=True, text=True, timeout=120)
        # and removes its slurm.conf: one left behind makes every later `snakemake` wait ~9 s for scontrol
        assert not Path("/etc/slurm/slurm.conf").exists() or "wsss-pipeline" not in Path(
            "/etc/slurm/slurm.conf").read_text()


@pytest.fixture(scope="module")
def workdir(slurm_cluster, tmp_path_factory):
    return tmp_path_factory.mktemp("slurm")


def run_on_slurm(workdir: Path, target: str, overlay: dict, timeout: float, check: bool = True
                 ) -> subprocess.CompletedProcess:
    """conftest.run_snakemake through the test profile, bounded: a stuck scheduler must not hang CI."""
    try:
        return run_snakemake(workdir, "--profile", str(PROFILE), "--executor", "slurm", target,
                             overlay=overlay, check=check, timeout=timeout)
    except subprocess.TimeoutExpired as timeout_error:
        queue = subprocess.run(["squeue"], capture_output=True, text=True, timeout=30).stdout
        pytest.fail(f"snakemake ran past {timeout} s (squeue:\n{queue})\nstdout tail:\n{_tail(timeout_error.stdout)}"
                    f"\nstderr tail:\n{_tail(timeout_error.stderr)}")


def submitted_jobs(output: str, workdir: Path) -> dict[str, list[tuple[str, Path]]]:
    """rule -> [(SLURM job id, SLURM log)] from the plugin's submission lines (logs are under
    .snakemake/slurm_logs/rule_<rule>/<wildcards>/<job id>.log)."""
    jobs: dict[str, list[tuple[str, Path]]] = {}
    for job_id, log in SUBMITTED.findall(output):
        log_path = (workdir / log).resolve()
        rule = next(part[len("rule_"):] for part in log_path.parts if part.startswith("rule_"))
        jobs.setdefault(rule, []).append((job_id, log_path))
    return jobs


@pytest.fixture(scope="module")
def sce_chain(workdir):
    """The run's output, and per rule its SLURM job id, log and `scontrol` record (read right away)."""
    started = time.monotonic()
    result = run_on_slurm(workdir, "results/sce/round1/model.pt", ONE_EPOCH_SCE, timeout=900)
    print(f"\nsce chain on SLURM: {time.monotonic() - started:.0f} s")
    jobs = {rule: [(job_id, log, _scontrol_job(job_id)) for job_id, log in ids]
            for rule, ids in submitted_jobs(result.stdout + result.stderr, workdir).items()}
    return result, jobs


def test_chain_through_the_checkpoint_runs_as_slurm_jobs(workdir, sce_chain):
    result, jobs = sce_chain
    output = result.stdout + result.stderr
    remote = ["make_synthetic", "train_cam", "extract_features", "cluster_features", "train_subcategory"]
    assert sorted(jobs) == sorted(remote), output[-4000:]
    assert all(len(ids) == 1 for ids in jobs.values()), jobs
    # the localrule ran on the submit host: in the log as a local job, never submitted
    assert re.search(r"^localrule prepare_splits:", output, re.M), output[-4000:]
    assert (workdir / "results/splits/train.csv").is_file() and (workdir / "results/splits/val.csv").is_file()
    for rule, [(_, log, record)] in jobs.items():
        assert record["JobState"] == "COMPLETED" and record["ExitCode"] == "0:0", (rule, record)
        # the partitions of the test profile: the GPU rule on gpu, everything else on cpu
        assert record["Partition"] == ("gpu" if rule == "train_cam" else "cpu"), (rule, record)
        # the job's snakemake ran inside the allocation and finished the rule there
        text = log.read_text()
        assert f"(Rule: {rule})" in text and "1 of 1 steps (100%) done" in text, (log, text[-3000:])


def test_gpu_rule_gets_the_gpu_gres(sce_chain):
    _, jobs = sce_chain
    [(_, _, record)] = jobs["train_cam"]
    assert record.get("JOB_GRES") == "gpu:1", record  # what SLURM allocated, not only what was asked
    for rule in ("extract_features", "cluster_features", "train_subcategory"):
        [(_, _, other)] = jobs[rule]
        assert other.get("JOB_GRES") in (None, "(null)"), (rule, other)


def test_subcategory_head_matches_the_checkpoint_count(workdir, sce_chain):
    import torch

    results = workdir / "results/sce/round1"
    info = json.loads((results / "clusters.json").read_text())
    blob = torch.load(results / "model.pt", weights_only=True)
    assert info["total"] == sum(info["per_class"].values()) > 0
    assert blob["meta"]["build_args"]["n_subcategories"] == info["total"] and blob["meta"]["round"] == 1
    assert blob["state_dict"]["sub_classifier.weight"].shape[0] == info["total"]
    log = (workdir / "results/sce/cam/train_log.csv").read_text().splitlines()
    assert len(log) == 1 + 1  # header + the one epoch of the overlay


def test_failed_job_fails_the_run_and_names_its_log(workdir):
    started = time.monotonic()
    result = run_on_slurm(workdir, "results/baseline/cam/model.pt", BATCH_TOO_LARGE, timeout=300, check=False)
    print(f"\nfailing train_cam on SLURM: {time.monotonic() - started:.0f} s")
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-4000:]
    [(job_id, slurm_log)] = submitted_jobs(output, workdir)["train_cam"]
    assert _scontrol_job(job_id)["JobState"] == "FAILED"
    # both the rule's log and the job's SLURM log are named, and they hold the cause
    rule_log = "results/logs/train_cam/baseline.log"
    assert rule_log in output and str(slurm_log) in output, output[-4000:]
    assert "fewer than one batch of 64" in (workdir / rule_log).read_text() + slurm_log.read_text()
    cam = workdir / "results/baseline/cam"
    assert not (cam / "model.pt").exists() and not (cam / "train_log.csv").exists()
