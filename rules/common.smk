# Config validation, shared paths and input functions.
# Planning imports only light modules (config merge, class names, code hashes): `snakemake -n` on a
# login node needs no torch.

import json
import os
import sys
from pathlib import Path

from jsonschema import ValidationError
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

# Plan with, and run jobs on, this checkout's wsss_lib, whatever environment runs them (a venv shared by
# several clones, the conda env of envs/wsss.yaml, which does not install the library): each rule's code
# hash (script_code) is taken over these files, so they must be the files that run.
sys.path.insert(0, workflow.basedir)
os.environ.update(PYTHONPATH=os.pathsep.join(filter(None, [workflow.basedir, os.environ.get("PYTHONPATH")])))
# Snakemake gives each job OMP_NUM_THREADS = its threads. OpenMP's worker threads then spin while they wait
# (libgomp's default), which costs little alone but much when jobs share cores: two 2-thread small_cnn
# trainings side by side on 2 cores ran at 11 img/s each spinning, 19.6 waiting passively (alone: 33.4 / 32.5;
# benchmarks/train_throughput.py).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from wsss_lib.atomic import STARTED_BY_ENV
from wsss_lib.classes import dataset_class_names
from wsss_lib.config import check_config, config_override_hint, method_config
from wsss_lib.jobs import release_stale_snakemake_locks
from wsss_lib.provenance import code_digest

# After a hard stop (SIGKILL, the OOM killer) the same command runs again as it is: the jobs this process starts stop
# when it is gone (wsss_lib/jobs.py), and the locks a killed snakemake left are removed once no snakemake runs here.
os.environ[STARTED_BY_ENV] = str(os.getpid())
if workflow.is_main_process:
    release_stale_snakemake_locks()

try:
    validate(config, "../config/schema.yaml")
except WorkflowError as err:
    # A nested --config value arrives with its numbers as strings ('2' is not of type 'integer'): say what to do.
    # validate() raises inside its `except ValidationError`, so the schema's error is the context.
    schema_error = err.__context__ if isinstance(err.__context__, ValidationError) else None
    hint = schema_error and config_override_hint(schema_error, workflow.config_settings.config)
    if hint:
        raise WorkflowError(str(err), hint) from None
    raise
check_config(config)


R = config["results"]
DATASET = config["dataset"]
# Threads of each training and inference job run locally; the dataset's setting suits the network its hparams
# choose (config.yaml). A SLURM profile sets its own (set-threads).
JOB_THREADS = config[DATASET]["job_threads"]
# Jobs whose work is a process pool (dense CRFs) lose nothing to a second core, so they take at least 2: one method
# run alone finishes sooner, and a run of all methods spends the same core-seconds.
POOL_THREADS = max(2, JOB_THREADS)
METHODS = list(config["methods"])
SPLITS = ["train", "train_aug", "val"]
LOGS = f"{R}/logs"
BENCH = f"{R}/benchmarks"


wildcard_constraints:
    method="|".join(METHODS),
    split="|".join(SPLITS),
    round=r"[1-9][0-9]*",


def unknown_method_error(wildcards):
    """Input function of rules/guards.smk's unknown_method: fails with the name and the configured ones."""
    raise ValueError(
        f"unknown method {wildcards.method!r} in the requested {R}/{wildcards.method}/{wildcards.path}; "
        f"the configured methods (config key `methods`) are: {', '.join(METHODS)}"
    )


# What each module imports, kept between runs beside Snakemake's own metadata (wsss_lib/provenance.py).
CODE_IMPORT_INDEX = Path(".snakemake/wsss_code_imports.json").resolve()


def script_code(script):
    """Content hash of a workflow script and the wsss_lib modules it imports, transitively: as a param it
    makes Snakemake rerun the rule (and its dependants) after an edit of that code (wsss_lib/provenance.py)."""
    return code_digest(f"{workflow.basedir}/workflow/scripts/{script}", workflow.basedir, CODE_IMPORT_INDEX)


def gpu_count():
    """Training / inference jobs ask the cluster for a GPU unless the config forces the CPU."""
    return 0 if config["device"] == "cpu" else 1


def voc_root():
    """The VOC-layout tree of the configured dataset (a rule output unless voc12.root is given)."""
    if DATASET == "synthetic":
        return config["synthetic"]["root"]
    if config["voc12"]["root"]:
        return config["voc12"]["root"]
    return "data/voc12/VOC2012"


def dataset_input(wildcards):
    """prepare_splits depends on the generated or downloaded tree; a user-supplied root is not a rule output."""
    if DATASET == "voc12" and config["voc12"]["root"]:
        return []
    return voc_root()


def class_names():
    return dataset_class_names(DATASET, config["synthetic"]["n_classes"])


# Each method's effective hyper-parameters, merged once (input functions and params read them for every job).
HPARAMS = {method: method_config(config, method) for method in METHODS}


def hparams(method):
    return HPARAMS[method]


def cam_training_params(method):
    """What the CAM classifier's training depends on (and nothing else, so nothing else retrains it)."""
    hp = hparams(method)
    return {k: hp[k] for k in ("backbone", "pretrained", "output_stride", "train_cam")}


def subcategory_rounds(method):
    return hparams(method)["subcategory"]["rounds"]


def per_round_subcategory(method):
    """A round's settings without the round count, so adding rounds leaves earlier rounds cached."""
    return {k: v for k, v in hparams(method)["subcategory"].items() if k != "rounds"}


def final_cam_model(wildcards):
    """The model that makes the method's CAMs: the last sub-category round's, or the plain CAM net."""
    rounds = subcategory_rounds(wildcards.method)
    return f"{R}/{wildcards.method}/round{rounds}/model.pt" if rounds else f"{R}/{wildcards.method}/cam/model.pt"


def previous_model(wildcards):
    """Round r starts from round r-1's model (round 1 from the plain CAM net)."""
    r = int(wildcards.round)
    return f"{R}/{wildcards.method}/cam/model.pt" if r == 1 else f"{R}/{wildcards.method}/round{r - 1}/model.pt"


def subcategory_start(wildcards):
    """A round's net starts from the previous round's model (round_init: previous) or the backbone's pretrained
    weights (round_init: pretrained, SC-CAM and mva-wsss)."""
    hp = hparams(wildcards.method)
    previous = hp["subcategory"]["round_init"] == "previous"
    return network_start(previous_model(wildcards) if previous else None, hp["backbone"], hp["pretrained"])


def feature_model(wildcards):
    """SC-CAM clusters the current CAM net's features; sub-category teaching the ViT teacher's."""
    if hparams(wildcards.method)["subcategory"]["features"] == "vit":
        return f"{R}/{wildcards.method}/teacher/model.pt"
    return previous_model(wildcards)


def clusters_of_round(wildcards):
    """clusters.json of the round, through the checkpoint: jobs that need it wait until it has run."""
    return checkpoints.cluster_features.get(method=wildcards.method, round=wildcards.round).output.json


def cluster_count(wildcards):
    """The number of sub-categories in the round's clusters.json; '<TBD>' before the checkpoint has run.

    The file is read by path rather than through the checkpoint: when the checkpoint has to rerun,
    the job's input function (clusters_of_round) makes Snakemake re-evaluate the job, count included,
    once the new file exists; reading it directly keeps an up-to-date job from looking changed.
    """
    path = Path(f"{R}/{wildcards.method}/round{wildcards.round}/clusters.json")
    try:
        return json.loads(path.read_text())["total"]
    except (OSError, ValueError, KeyError):
        return "<TBD>"


def teacher_weights(wildcards):
    teacher = hparams(wildcards.method)["teacher"]
    if teacher["pretrained"] == "imagenet":
        return f"data/weights/{teacher['preset']}.pth"
    if teacher["pretrained"] != "none":
        return teacher["pretrained"]
    return []


def split_csv(split):
    return f"{R}/splits/{split}.csv"


def backbone_weights(backbone, pretrained):
    """The fetched ImageNet weights of a ResNet backbone, or a user-given state dict; nothing otherwise."""
    if pretrained == "imagenet" and backbone.startswith("resnet"):
        return f"data/weights/{backbone}.pth"
    if pretrained not in ("none", "imagenet"):
        return pretrained
    return []


def network_start(model, backbone, pretrained):
    """Where a network starts, as a rule's named inputs: {"init": model} when it starts from the model file
    ``model`` (a previous round's or the method's CAM net), else the ``pretrained`` weights of ``backbone``
    ({"weights": a fetched file or a user-given state dict}, or nothing to fetch)."""
    if model:
        return {"init": model}
    weights = backbone_weights(backbone, pretrained)
    return {"weights": weights} if weights else {}


def weights_input(wildcards):
    """The CAM classifier's backbone weights."""
    hp = hparams(wildcards.method)
    return backbone_weights(hp["backbone"], hp["pretrained"])


def cam_train_csv(wildcards):
    return split_csv(hparams(wildcards.method)["train_cam"]["split"])


def cam_split_csv(wildcards):
    return split_csv(hparams(wildcards.method)["eval_cams"]["split"])


def affinity_training_params(method):
    """What AffinityNet's training depends on: its backbone and the affinity block (not the CRF or walk)."""
    hp = hparams(method)
    return {
        "backbone": hp["backbone"],
        "pretrained": hp["pretrained"],
        "refine": {"affinity": hp["refine"]["affinity"]},
    }


def affinity_training_inputs(wildcards):
    """The backbone's start: the method's final CAM net (init: cam) or its pretrained weights."""
    hp = hparams(wildcards.method)
    from_cam = hp["refine"]["affinity"]["init"] == "cam"
    return network_start(final_cam_model(wildcards) if from_cam else None, hp["backbone"], hp["pretrained"])


def pseudo_split_csv(wildcards):
    """The images that get pseudo-labels and train DeepLab (VOC protocol: train_aug); AffinityNet learns
    from their CRF labels."""
    return split_csv(hparams(wildcards.method)["segment"]["split"])


def cam_and_pseudo_split_csvs(wildcards):
    """CAMs and the random walk cover both the CAM evaluation split and the pseudo-label split (one
    file when they are the same), so the CAM and pseudo-label mIoU stay measured on train."""
    return list(dict.fromkeys([cam_split_csv(wildcards), pseudo_split_csv(wildcards)]))


def segment_params(method, *keys):
    """The method's segment block, restricted to ``keys`` (all of it if none are given)."""
    seg = hparams(method)["segment"]
    return {"segment": {k: seg[k] for k in keys} if keys else seg}


def segment_training_params(method):
    """What DeepLab's training depends on: the segment block without the inference settings."""
    seg = hparams(method)["segment"]
    return {"segment": {k: v for k, v in seg.items() if k not in ("infer", "crf")}}


def segment_start(wildcards):
    """DeepLab's backbone start: the method's final CAM net (init: cam), or the fetched ImageNet weights of a
    ResNet, a user-given state dict, or nothing."""
    seg = hparams(wildcards.method)["segment"]
    from_cam = seg["init"] == "cam"
    return network_start(final_cam_model(wildcards) if from_cam else None, seg["backbone"], seg["pretrained"])


def segment_eval_csv(wildcards):
    return split_csv(hparams(wildcards.method)["segment"]["infer"]["split"])


FIGURES = config["figures"]


def training_logs(wildcards):
    """The method's training logs in pipeline order, named for the figure's rows."""
    method = wildcards.method
    logs = {"classifier": f"{R}/{method}/cam/train_log.csv"}
    if subcategory_rounds(method) and hparams(method)["subcategory"]["features"] == "vit":
        logs["teacher"] = f"{R}/{method}/teacher/train_log.csv"
    for r in range(1, subcategory_rounds(method) + 1):
        logs[f"round{r}"] = f"{R}/{method}/round{r}/train_log.csv"
    logs["affinity"] = f"{R}/{method}/refine/affinity_log.csv"
    logs["deeplab"] = f"{R}/{method}/seg/train_log.csv"
    return logs


def method_figures(method):
    """What results/<method>/figures/ holds: curves, examples, scores, and each sub-category round's clusters."""
    names = ["training_curves", "examples", "per_class_iou", "cam_thresholds"]
    names += [f"subcategories_round{r}" for r in range(1, subcategory_rounds(method) + 1)]
    return [f"{R}/{method}/figures/{name}.png" for name in names]
