"""What a workflow job imports before it does any work: each job is a fresh process, and on the demo's small
images a second of imports is a large share of a job (tens of jobs in a run)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def imported(code: str, modules: tuple[str, ...]) -> list[str]:
    """Which of ``modules`` a fresh interpreter has imported after running ``code``."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(m for m in {modules!r} if m in sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=REPO)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_evaluation_and_split_jobs_start_without_torch():
    """eval_cams / eval_pseudo_labels / eval_segmentation and prepare_splits are small jobs of a fresh process each:
    importing torch and torchvision would be most of their run time."""
    assert imported("import wsss_lib.stages.evaluate, wsss_lib.stages.data", ("torch", "torchvision")) == []


@pytest.mark.parametrize("backbone", ["small_cnn_w16", "efficientnet_lite0"])
def test_jobs_that_need_neither_import_no_torchvision_or_sklearn(backbone):
    """torchvision costs ~2 s a process to import (0.29's ops import torch._dynamo) and sklearn.metrics ~1.5 s: the
    demo's CAM, refinement, DeepLab and sub-category jobs build their nets and augment images without either."""
    code = f"""
import numpy as np, torch
from PIL import Image
import wsss_lib.stages.cam, wsss_lib.stages.refine, wsss_lib.stages.segment, wsss_lib.stages.subcategory
from wsss_lib.data.transforms import jitter_colours
from wsss_lib.models.affinity_net import build_affinity_net
from wsss_lib.models.cam_net import build_cam_net
from wsss_lib.models.deeplab import build_deeplab
build_cam_net({backbone!r}, 3), build_affinity_net({backbone!r}), build_deeplab({backbone!r}, 4, head="v2")
jitter_colours(Image.fromarray(np.zeros((8, 8, 3), np.uint8)), (0.3, 0.3, 0.3, 0.1), torch.Generator())
"""
    assert imported(code, ("torch", "torchvision", "sklearn")) == ["torch"]
