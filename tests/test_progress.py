"""Progress bars and the end-of-job summary line."""

import re

import pytest

from wsss_lib.progress import Progress, summary_line, track


def test_summary_line_reports_count_seconds_and_rate():
    assert summary_line("crf_labels", 240, 12.0) == "crf_labels: 240 images in 12.0 s (20.00 images/s)"
    assert summary_line("clustering", 5, 0.5, unit="classes") == "clustering: 5 classes in 0.5 s (10.00 classes/s)"


def test_track_yields_every_item_then_prints_the_summary(capsys):
    seen = []
    for item in track(iter("abcd"), "walk", total=4):
        seen.append(item)
        assert "walk: " not in capsys.readouterr().out  # not before the items are exhausted
    captured = capsys.readouterr()
    assert seen == list("abcd")
    assert re.fullmatch(r"walk: 4 images in \d+\.\d s \(\d+\.\d\d images/s\)\n", captured.out), captured.out
    assert "walk: 100%" in captured.err and "4/4" in captured.err  # the bar, in the same log as stdout in a job


def test_progress_counts_batches_and_stays_silent_on_failure(capsys):
    with Progress("make_cams", total=10) as progress:
        progress.update(8)
        progress.update(2)
    assert capsys.readouterr().out.startswith("make_cams: 10 images in ")
    with pytest.raises(RuntimeError):
        with Progress("make_cams", total=10) as progress:
            progress.update(3)
            raise RuntimeError("boom")
    assert capsys.readouterr().out == ""
