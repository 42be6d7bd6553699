"""Where a finished run's time went: the benchmark files Snakemake wrote for every job, summed per rule.

Each rule's ``benchmark:`` file (``<results>/benchmarks/<rule>/<wildcards>.tsv``) holds the job's wall seconds
(``s``) and CPU seconds (``cpu_time``). Per rule this prints the jobs, their wall seconds in total and at most,
and the CPU seconds per wall second (about the threads a job kept busy); then the totals. Jobs that ran side by
side overlap, so the wall total exceeds the run's elapsed time by what ran in parallel.

Snakemake samples a job's CPU time (psutil) every 0.5 s for its first ~15 s, then every 30 s, and keeps the last
sample: a job that ends between samples loses what it spent since the last one. CPU per wall is therefore a
floor for jobs longer than ~15 s (a 41 s one-thread AffinityNet job read 0.42), and the wall seconds are exact.

    .venv/bin/python benchmarks/job_profile.py results                 # the demo
    .venv/bin/python benchmarks/job_profile.py results --compare other/results
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd


def job_table(results: str | Path) -> pd.DataFrame:
    """One row per job: rule, job (wildcards), wall and CPU seconds."""
    root = Path(results) / "benchmarks"
    rows = []
    for path in sorted(root.rglob("*.tsv")):
        timing = pd.read_csv(path, sep="\t")
        if timing.empty or not {"s", "cpu_time"} <= set(timing.columns):
            raise ValueError(f"{path} is not a Snakemake benchmark file (needs columns s and cpu_time)")
        rule = path.parent.name if path.parent != root else path.stem
        rows.append({"rule": rule, "job": path.stem, "wall_s": float(timing["s"].iloc[-1]),
                     "cpu_s": float(timing["cpu_time"].iloc[-1])})
    if not rows:
        raise FileNotFoundError(f"no benchmark files under {root}")
    return pd.DataFrame(rows)


def rule_profile(jobs: pd.DataFrame) -> pd.DataFrame:
    """Per rule: job count, total and largest wall seconds, CPU seconds per wall second; largest total first."""
    grouped = jobs.groupby("rule")
    table = pd.DataFrame({"jobs": grouped.size(), "wall_s": grouped["wall_s"].sum(),
                          "max_wall_s": grouped["wall_s"].max(), "cpu_s": grouped["cpu_s"].sum()})
    table["cpu_per_wall"] = table["cpu_s"] / table["wall_s"]
    return table.sort_values("wall_s", ascending=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", help="a results folder (the config's results:) of a finished run")
    parser.add_argument("--compare", help="another run's results folder, shown side by side")
    args = parser.parse_args()
    table = rule_profile(job_table(args.results))
    if args.compare:
        other = rule_profile(job_table(args.compare))
        other = other[["jobs", "wall_s"]].rename(columns=lambda column: f"{column}_compare")
        table = table[["jobs", "wall_s"]].join(other, how="outer")
        table = table.sort_values("wall_s_compare", ascending=False)
    pd.set_option("display.width", 160)
    print(table.round(2).to_string())
    print("total:", table.drop(columns=[c for c in table.columns if c.startswith("jobs")]).sum().round(1).to_dict())


if __name__ == "__main__":
    main()
