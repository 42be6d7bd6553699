"""Software environments: the conda env pins what pyproject.toml pins, and jobs run this checkout's library."""

import re
import shutil
import tomllib

import pytest
import yaml

from conftest import REPO, run_snakemake
from overlays import TINY_SYNTHETIC


def test_conda_env_pins_equal_pyproject():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    env = yaml.safe_load((REPO / "envs/wsss.yaml").read_text())
    pip = next(item["pip"] for item in env["dependencies"] if isinstance(item, dict))
    assert sorted(pip) == sorted(project["dependencies"])
    assert all(re.fullmatch(r"[A-Za-z0-9_.-]+==[0-9][0-9A-Za-z.]*", pin) for pin in pip), pip  # exact pins only
    python = next(item for item in env["dependencies"] if isinstance(item, str) and item.startswith("python="))
    assert project["requires-python"] == ">=" + python.removeprefix("python=")
    assert "snakemake-executor-plugin-slurm==" in " ".join(pip)  # the cluster profile's executor


@pytest.mark.slow
def test_jobs_import_the_library_of_the_workflow_that_runs_them(tmp_path):
    """Another clone's wsss_lib (here: the repository's, first on PYTHONPATH) is not what the job runs."""
    clone = tmp_path / "clone"
    clone.mkdir()
    shutil.copy(REPO / "Snakefile", clone)
    for folder in ("rules", "workflow", "config", "wsss_lib", "envs"):
        shutil.copytree(REPO / folder, clone / folder, ignore=shutil.ignore_patterns("__pycache__"))
    init = clone / "wsss_lib/__init__.py"
    init.write_text(init.read_text() + "\nprint('wsss_lib from', __file__, flush=True)\n")
    workdir = tmp_path / "run"
    workdir.mkdir()
    run_snakemake(workdir, "--cores", "1", "--snakefile", str(clone / "Snakefile"), "data/synthetic",
                  overlay=TINY_SYNTHETIC)
    log = (workdir / "results/logs/make_synthetic.log").read_text()
    assert f"wsss_lib from {init}" in log, log
