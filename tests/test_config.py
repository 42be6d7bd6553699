from pathlib import Path

import pytest
import yaml
from snakemake.utils import validate

from wsss_lib.config import MAX_SWEEP_POINTS, check_config, deep_merge, method_config, sweep_points
from wsss_lib.stages.evaluate import threshold_grid

REPO = Path(__file__).resolve().parents[1]
SCHEMA = str(REPO / "config" / "schema.yaml")


def load_config():
    return yaml.safe_load((REPO / "config" / "config.yaml").read_text())


def test_shipped_config_is_valid():
    validate(load_config(), SCHEMA)


@pytest.mark.parametrize("section", [None, "defaults.train_cam", "methods.baseline"])
def test_unknown_key_fails_validation_naming_it(section):
    config = load_config()
    node = config
    for part in section.split(".") if section else []:
        node[part] = node.get(part) or {}
        node = node[part]
    node["epochz"] = 1
    with pytest.raises(Exception, match="epochz"):
        validate(config, SCHEMA)


@pytest.mark.parametrize("section", ["defaults", "methods.baseline", "methods.newly_added"])
def test_value_of_the_wrong_type_fails_validation_naming_its_key(section):
    config = load_config()
    node = config
    for part in section.split("."):
        node[part] = node.get(part) or {}
        node = node[part]
    node["train_cam"] = {"epochs": "three"}
    with pytest.raises(Exception, match=r"'three' is not of type 'integer'") as raised:
        validate(config, SCHEMA)
    assert f"{''.join(f'[{part!r}]' for part in section.split('.'))}['train_cam']['epochs']" in str(raised.value)



def key_paths(node, prefix=()):
    """Every key path in a nested mapping: each block's key and, under it, each of its keys."""
    for key, value in node.items():
        yield (*prefix, key)
        if isinstance(value, dict):
            yield from key_paths(value, (*prefix, key))


DEFAULT_KEYS = list(key_paths(load_config()["defaults"]))


@pytest.mark.parametrize("path", DEFAULT_KEYS, ids=".".join)
def test_a_missing_default_fails_validation_naming_it(path):
    """`defaults` is where every value has its default: without one, validation (not a job's KeyError) says which."""
    config = load_config()
    node = config["defaults"]
    for part in path[:-1]:
        node = node[part]
    del node[path[-1]]
    with pytest.raises(Exception, match=rf"'{path[-1]}' is a required property") as raised:
        validate(config, SCHEMA)
    assert "On instance" + "".join(f"[{part!r}]" for part in ("defaults", *path[:-1])) + ":" in str(raised.value)


def test_defaults_must_give_every_key_the_schema_knows():
    """The schema's `defaults` view requires every property of #/$defs/hparams, down to the leaves (but `published`
    and `protocol`, which only method blocks have), so a key added to the schema must get a default too."""
    schema = yaml.safe_load(Path(SCHEMA).read_text())
    hparams, complete = schema["$defs"]["hparams"], schema["$defs"]["complete_hparams"]
    assert schema["properties"]["defaults"]["$ref"] == "#/$defs/complete_hparams"
    assert complete["allOf"][0] == {"$ref": "#/$defs/hparams"}

    def unrequired(properties, required, path):
        missing = [".".join((*path, key)) for key in properties if key not in required.get("required", [])]
        for key, sub in properties.items():
            if "properties" in sub:
                missing += unrequired(sub["properties"], required.get("properties", {}).get(key, {}), (*path, key))
        return missing

    assert unrequired(hparams["properties"], complete["allOf"][1], ()) == ["published", "protocol"]


def test_method_blocks_and_protocols_need_not_give_every_key():
    config = load_config()
    config["protocols"]["partial"] = {"train_cam": {"lr": 0.1}, "refine": {"crf": {"iterations": 5}}}
    config["methods"]["partial"] = {"protocol": "partial", "segment": {"crf": {"bilateral_srgb": 5}}}
    config["synthetic"]["hparams"]["subcategory"] = {"clustering": {"seed": 1}}
    validate(config, SCHEMA)


# Overlays shipped in config/, each merged over config.yaml as the README runs them (voc_sample_cpu_deeplab.yaml
# after voc_sample.yaml, as its header says)
OVERLAYS = [["train_aug.yaml"], ["voc_sample.yaml"], ["voc_sample_cpu_deeplab.yaml"],
            ["voc_sample.yaml", "voc_sample_cpu_deeplab.yaml"]]


def test_every_shipped_overlay_is_listed():
    shipped = {path.name for path in (REPO / "config").glob("*.yaml")} - {"config.yaml", "schema.yaml"}
    assert shipped == {name for names in OVERLAYS for name in names}


@pytest.mark.parametrize("overlays", OVERLAYS, ids="+".join)
def test_shipped_overlays_are_valid(overlays):
    config = load_config()
    for name in overlays:
        config = deep_merge(config, yaml.safe_load((REPO / "config" / name).read_text()))
    validate(config, SCHEMA)
    check_config(config)


def test_shipped_config_passes_the_number_checks():
    check_config(load_config())


@pytest.mark.parametrize("sweep", [[0.05, 0.5, 0.05], [0.15, 0.15, 0.05], [0.0, 1.0, 0.01], [0.1, 0.35, 0.1]])
def test_sweep_points_counts_the_thresholds_eval_cams_scores(sweep):
    assert sweep_points(*sweep) == len(threshold_grid(*sweep))
    assert sweep_points(0.05, 0.5, 0.05) == 10 and sweep_points(0.15, 0.15, 0.05) == 1  # stop inclusive
    assert sweep_points(0.0, 1.0, 0.01) == MAX_SWEEP_POINTS


@pytest.mark.parametrize("key, value, ok", [
    ("eval_cams.sweep", [0.15, 0.15, 0.05], True),  # one threshold
    ("eval_cams.sweep", [0.0, 1.0, 0.01], True),  # MAX_SWEEP_POINTS of them
    ("eval_cams.sweep", [0.0, 1.0, 0.0099], False),
    ("train_cam.resize_long", [128, 128], True),  # a fixed long side
    ("refine.affinity.resize_long", None, True),
    ("refine.affinity.resize_long", [500, 400], False),
    ("teacher.resize_long", [500, 400], False),
    ("segment.scale_range", [1.0, 1.0], True),
])
def test_check_config_range_edges(key, value, ok):
    config = load_config()
    *parents, leaf = key.split(".")
    node = config["methods"]["fmix"]
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value
    if ok:
        check_config(config)
    else:
        pattern = rf"config key methods[.]fmix[.]{key.replace('.', '[.]')} is \[.*\]: expected"
        with pytest.raises(ValueError, match=pattern):
            check_config(config)


def test_check_config_names_every_non_finite_number_by_its_path():
    config = load_config()
    config["defaults"]["make_cams"]["scales"] = [1.0, float("-inf")]
    config["synthetic"]["hparams"]["train_cam"]["lr"] = float("nan")
    with pytest.raises(ValueError) as raised:
        check_config(config)
    assert str(raised.value) == ("invalid config:\n"  # in config.yaml's order
                                 "  config key synthetic.hparams.train_cam.lr is nan: expected a finite number\n"
                                 "  config key defaults.make_cams.scales[1] is -inf: expected a finite number")

def test_method_config_merges_defaults_dataset_and_method():
    config = {
        "dataset": "synthetic",
        "defaults": {"backbone": "resnet50", "train_cam": {"lr": 0.1, "epochs": 5}},
        "synthetic": {"hparams": {"backbone": "small_cnn", "train_cam": {"epochs": 12}}},
        "methods": {"baseline": {}, "fast": {"train_cam": {"lr": 0.5}}, "empty": None},
    }
    assert method_config(config, "fast") == {"backbone": "small_cnn", "train_cam": {"lr": 0.5, "epochs": 12}}
    assert method_config(config, "empty")["train_cam"] == {"lr": 0.1, "epochs": 12}
    with pytest.raises(KeyError, match="nope"):
        method_config(config, "nope")
    assert config["defaults"]["train_cam"]["lr"] == 0.1  # inputs untouched


def test_protocol_sits_between_defaults_and_the_dataset():
    config = {
        "dataset": "synthetic",
        "defaults": {"train_cam": {"lr": 0.1, "epochs": 5, "crop": 512}},
        "protocols": {"seed": {"train_cam": {"lr": 0.2, "epochs": 15, "crop": 300}}},
        "synthetic": {"hparams": {"train_cam": {"epochs": 3}}},
        "methods": {"plain": {}, "seeded": {"protocol": "seed", "train_cam": {"crop": 64}},
                    "lost": {"protocol": "nope"}},
    }
    assert method_config(config, "plain")["train_cam"] == {"lr": 0.1, "epochs": 3, "crop": 512}
    assert method_config(config, "seeded") == {"protocol": "seed", "train_cam": {"lr": 0.2, "epochs": 3, "crop": 64}}
    with pytest.raises(KeyError, match="'nope'.*seed"):
        method_config(config, "lost")
    config["synthetic"]["hparams"]["protocol"] = "seed"
    with pytest.raises(ValueError, match="synthetic.hparams sets 'protocol'"):
        method_config(config, "plain")


def test_a_protocol_holds_what_differs_from_the_base_protocol_it_names():
    config = {
        "dataset": "synthetic",
        "defaults": {"train_cam": {"lr": 0.1, "epochs": 5, "crop": 512, "split": "train"}},
        "protocols": {"seed": {"train_cam": {"lr": 0.2, "epochs": 15, "crop": 300}},
                      "seed_long": {"protocol": "seed", "train_cam": {"epochs": 25}},
                      "seed_aug": {"protocol": "seed_long", "train_cam": {"split": "train_aug", "lr": 0.05}},
                      "loop": {"protocol": "loop2"}, "loop2": {"protocol": "loop"}, "orphan": {"protocol": "nope"}},
        "synthetic": {"hparams": {"train_cam": {"crop": 64}}},
        "methods": {"long": {"protocol": "seed_long"}, "aug": {"protocol": "seed_aug"}, "loop": {"protocol": "loop"},
                    "orphan": {"protocol": "orphan"}},
    }
    assert method_config(config, "long") == {"protocol": "seed_long",
                                             "train_cam": {"lr": 0.2, "epochs": 25, "crop": 64, "split": "train"}}
    assert method_config(config, "aug") == {"protocol": "seed_aug",
                                            "train_cam": {"lr": 0.05, "epochs": 25, "crop": 64, "split": "train_aug"}}
    with pytest.raises(ValueError, match="loop -> loop2 -> loop"):
        method_config(config, "loop")
    with pytest.raises(KeyError, match="protocol 'orphan' follows protocol 'nope'"):
        method_config(config, "orphan")
    config["synthetic"]["hparams"]["train_cam"]["epochs"] = 3  # the dataset's sizing wins over every protocol
    assert method_config(config, "aug")["train_cam"]["epochs"] == 3


def test_deep_merge_replaces_lists_and_scalars():
    assert deep_merge({"a": [1, 2], "b": {"c": 1}}, {"a": [3], "b": {"d": 2}}) == {"a": [3], "b": {"c": 1, "d": 2}}


# The seed's CAM-training schedule (liuvince/mva-wsss utils/utils.py defaults; train_cam.py's optimizer groups,
# PolyOptimizer(max_step=100000), Trainer(gradient_clip_val=1), ModelCheckpoint / EarlyStopping on val_accuracy;
# dataset.py RandomResizeLong(256, 512) and RandomCrop(300)).
MVA_WSSS = {"train_cam.epochs": 15, "train_cam.batch_size": 8, "train_cam.crop": 300,
            "train_cam.resize_long": [256, 512], "train_cam.lr": 0.1, "train_cam.weight_decay": 5e-4,
            "train_cam.momentum": 0.0, "train_cam.new_layer_lr_mult": 1, "train_cam.poly_steps": 100000,
            "train_cam.grad_clip_norm": 1.0, "train_cam.select": "best_val_accuracy",
            "train_cam.early_stop_patience": 10, "train_cam.warmup_steps": 0}

# The refinement every method's source runs: PSA's infer_aff.py (--alpha 16 --beta 8 --logt 8), its background a
# power of the CAMs (the seed refines with PSA's code; SC-CAM too). IRN's threshold background is a dataset's choice.
PSA_WALK = {"refine.random_walk.background": "power", "refine.random_walk.alpha": 16, "refine.random_walk.beta": 8,
            "refine.random_walk.exp_times": 8}

# Each method's protocol as its source runs it, written out independently of config.yaml: the effective
# config of every method (voc12, so only defaults, its protocol and the method block apply) must hold these values.
PROTOCOLS = {
    "baseline": {**MVA_WSSS, "train_cam.mixing": "none", "train_cam.entropy_weight": 0.0,
                 "train_cam.concentration_weight": 0.0, "subcategory.rounds": 0},
    # mva-wsss train_cam.py mixup_data(alpha=0.2); utils.py ent_loss_weight 0.02, concent_loss_weight 2e-4
    "mixup": {**MVA_WSSS, "train_cam.mixing": "mixup", "train_cam.mix_alpha": 0.2, "train_cam.entropy_weight": 0.02,
              "train_cam.concentration_weight": 2e-4, "train_cam.split": "train"},
    # mva-wsss forward_label_cam_manifold_mixup(mixup_alpha=0.2)
    "manifold_mixup": {**MVA_WSSS, "train_cam.mixing": "manifold_mixup", "train_cam.mix_alpha": 0.2,
                       "train_cam.entropy_weight": 0.02, "train_cam.concentration_weight": 2e-4},
    # mva-wsss README step 8: --max_epochs 25; FMix defaults alpha 1, decay power 3
    "fmix": {**MVA_WSSS, "train_cam.mixing": "fmix", "train_cam.mix_alpha": 1.0, "train_cam.fmix_decay_power": 3.0,
             "train_cam.epochs": 25, "train_cam.entropy_weight": 0.02, "train_cam.concentration_weight": 2e-4,
             "train_cam.split": "train"},
    # mva-wsss README step 9: --data_train data_train_aug.csv --lr 0.05 --max_epochs 20
    "fmix_aug": {**MVA_WSSS, "train_cam.mixing": "fmix", "train_cam.split": "train_aug", "train_cam.lr": 0.05,
                 "train_cam.epochs": 20},
    # mva-wsss README steps 4-5: one round; compute_clusters.py FINCH c[:, -1]; train_cam_clusters.py from
    # the ImageNet weights with knowledge_distillation_loss_weight 2
    "sce": {**MVA_WSSS, "subcategory.rounds": 1, "subcategory.features": "cam", "subcategory.weight": 2.0,
            "subcategory.round_init": "pretrained", "subcategory.clustering.method": "finch",
            "subcategory.clustering.level": "coarsest", "subcategory.clustering.n_clusters": None},
    "sct": {**MVA_WSSS, "subcategory.rounds": 1, "subcategory.features": "vit", "subcategory.weight": 2.0,
            "subcategory.round_init": "pretrained", "subcategory.clustering.method": "finch",
            "subcategory.clustering.level": "coarsest", "subcategory.clustering.n_clusters": None},
    # SC-CAM (Chang et al. CVPR 2020): 3 rounds, k-means k = 10 per class, loss weight 5, each round from ImageNet;
    # Juliachang/SC-CAM train_cls.py defaults (61 epochs, batch 16, crop 224, ResizeLong(256, 512), wt_dec 5e-4,
    # PolyOptimizer: no momentum, 10x new layers; weights kept at the lowest epoch loss) with script.sh's --lr 0.01
    "sc_cam": {"train_cam.epochs": 61, "train_cam.batch_size": 16, "train_cam.crop": 224,
               "train_cam.resize_long": [256, 512], "train_cam.lr": 0.01, "train_cam.weight_decay": 5e-4,
               "train_cam.momentum": 0.0, "train_cam.new_layer_lr_mult": 10, "train_cam.poly_steps": None,
               "train_cam.grad_clip_norm": None, "train_cam.select": "lowest_train_loss", "train_cam.warmup_steps": 0,
               "subcategory.rounds": 3, "subcategory.features": "cam", "subcategory.weight": 5.0,
               "subcategory.round_init": "pretrained", "subcategory.clustering.method": "kmeans",
               "subcategory.clustering.n_clusters": 10, "train_cam.mixing": "none"},
}


def dotted(tree, key):
    for part in key.split("."):
        tree = tree[part]
    return tree


def test_every_method_has_a_pinned_protocol():
    assert set(load_config()["methods"]) == set(PROTOCOLS)


@pytest.mark.parametrize("method", sorted(PROTOCOLS))
def test_method_protocol_matches_its_source(method):
    config = {**load_config(), "dataset": "voc12"}
    effective = method_config(config, method)
    mismatched = {key: (dotted(effective, key), value) for key, value in {**PSA_WALK, **PROTOCOLS[method]}.items()
                  if dotted(effective, key) != value}
    assert not mismatched, mismatched
    published = effective["published"]
    assert published["source"] and set(published) - {"source", "train_set"}  # at least one figure



@pytest.mark.parametrize("dataset", ["synthetic", "voc12"])
def test_train_aug_switch_moves_every_method_to_train_aug(dataset):
    switch = yaml.safe_load((REPO / "config" / "train_aug.yaml").read_text())
    config = deep_merge({**load_config(), "dataset": dataset}, switch)
    validate(config, SCHEMA)
    splits = {m: method_config(config, m)["train_cam"]["split"] for m in PROTOCOLS}
    assert splits == dict.fromkeys(PROTOCOLS, "train_aug")
    assert method_config(load_config(), "fmix")["train_cam"]["split"] == "train"  # not without the switch


def test_check_config_wants_train_aug_to_hold_train():
    config = load_config()
    config["synthetic"].update(n_train=64, n_train_aug=48)
    with pytest.raises(ValueError, match=r"config key synthetic\.n_train_aug is 48: expected at least "
                                         r"synthetic\.n_train "
                                         r"\(64\)"):
        check_config(config)
    config["synthetic"]["n_train_aug"] = 64
    check_config(config)


# The effective schedule of every method under every shipped config combination: CAM training, refinement and
# segmentation, each value a literal beside the source (paper / reference repository) or the dataset sizing that
# sets it.
SHIPPED = {  # combination -> files merged over config.yaml (in --configfile order), then --config values
    "default": ([], {}),
    "voc12": ([], {"dataset": "voc12"}),
    "voc_sample": (["voc_sample.yaml"], {}),
    "voc_sample_cpu_deeplab": (["voc_sample.yaml", "voc_sample_cpu_deeplab.yaml"], {}),
    "train_aug": (["train_aug.yaml"], {}),
}


def shipped_config(combination):
    files, overrides = SHIPPED[combination]
    config = load_config()
    for name in files:
        config = deep_merge(config, yaml.safe_load((REPO / "config" / name).read_text()))
    return {**config, **overrides}


# The synthetic demo (config.yaml synthetic.hparams: small_cnn_w16 from scratch on 240 images, on a CPU): one schedule
# for every method.
DEMO_CAM = {
    "train_cam.epochs": 18,                  # synthetic sizing
    "train_cam.lr": 0.05,                    # synthetic sizing
    "train_cam.batch_size": 16,              # synthetic sizing
    "train_cam.crop": 128,                   # synthetic sizing: the whole 128 px image
    "train_cam.resize_long": [112, 144],     # synthetic sizing
    "train_cam.split": "train",              # defaults (IRN's and the seed's train; no sizing names one)
    "train_cam.select": "last",              # synthetic sizing (validation only informs the log)
    "train_cam.momentum": 0.9,               # synthetic sizing
    "train_cam.new_layer_lr_mult": 10,       # synthetic sizing
    "train_cam.poly_steps": None,            # synthetic sizing: the poly decay spans the run
    "train_cam.grad_clip_norm": None,        # synthetic sizing
    "train_cam.early_stop_patience": None,   # synthetic sizing
    "train_cam.warmup_steps": 60,            # synthetic sizing (Goyal et al. 2017 warm-up)
}
DEMO_REFINE = {
    "refine.affinity.init": "cam",           # synthetic sizing: no ImageNet weights, start from the CAM net
    "refine.affinity.epochs": 3,             # synthetic sizing
    "refine.affinity.lr": 0.05,              # synthetic sizing
    "refine.affinity.momentum": 0.9,         # synthetic sizing
    "refine.affinity.crop": 128,             # synthetic sizing
    "refine.affinity.batch_size": 8,         # PSA train_aff.py batch_size (defaults)
    "refine.affinity.output_stride": 8,      # PSA's stride-8 ResNet-38 (defaults)
    "refine.random_walk.background": "power",  # PSA infer_aff.py (defaults)
    "refine.random_walk.alpha": 16,          # PSA infer_aff.py --alpha 16 (defaults)
    "refine.random_walk.threshold": 0.25,    # IRN sem_seg_bg_thres (defaults; unused with background: power)
    "refine.random_walk.beta": 16,           # synthetic sizing (PSA: 8)
    "refine.random_walk.exp_times": 8,       # PSA infer_aff.py --logt 8 (defaults)
}
DEMO_SEGMENT = {
    "segment.iterations": 400,               # synthetic sizing
    "segment.lr": 0.02,                      # synthetic sizing
    "segment.batch_size": 10,                # DeepLab-v2 (defaults)
    "segment.crop": 96,                      # synthetic sizing
    "segment.split": "train",                # synthetic sizing: the 240 train pseudo-labels
    "segment.backbone": "small_cnn_w16",     # synthetic sizing
    "segment.init": "cam",                   # synthetic sizing
}
DEMO = {**DEMO_CAM, **DEMO_REFINE, **DEMO_SEGMENT}

# Full VOC 2012 (voc12.hparams is empty): each method's protocol over the defaults.
VOC_CAM_MVA_WSSS = {  # liuvince/mva-wsss utils/utils.py defaults, train_cam.py, dataset.py
    "train_cam.epochs": 15,                  # --max_epochs 15
    "train_cam.lr": 0.1,                     # --lr 0.1
    "train_cam.batch_size": 8,               # --train_batch_size 8
    "train_cam.crop": 300,                   # RandomCrop(300)
    "train_cam.resize_long": [256, 512],     # RandomResizeLong(256, 512)
    "train_cam.split": "train",              # data_train.csv: the 1,464 train images (defaults)
    "train_cam.select": "best_val_accuracy", # ModelCheckpoint(monitor="val_accuracy")
    "train_cam.momentum": 0.0,               # PolyOptimizer: the weight decay in SGD's momentum slot
    "train_cam.new_layer_lr_mult": 1,        # configure_optimizers: every group at --lr
    "train_cam.poly_steps": 100000,          # PolyOptimizer(max_step=100000)
    "train_cam.grad_clip_norm": 1.0,         # pl.Trainer(gradient_clip_val=1)
    "train_cam.early_stop_patience": 10,     # EarlyStopping(patience=10)
    "train_cam.warmup_steps": 0,             # no warm-up
}
VOC_CAM_SC_CAM = {  # Juliachang/SC-CAM train_cls.py defaults and script.sh
    "train_cam.epochs": 61,                  # --max_epoches 61
    "train_cam.lr": 0.01,                    # script.sh --lr 0.01
    "train_cam.batch_size": 16,              # --batch_size 16
    "train_cam.crop": 224,                   # --crop_size 224
    "train_cam.resize_long": [256, 512],     # ResizeLong(img, 256, 512)
    "train_cam.split": "train",              # defaults
    "train_cam.select": "lowest_train_loss", # weights saved at the lowest epoch loss
    "train_cam.momentum": 0.0,               # PolyOptimizer: the weight decay in SGD's momentum slot
    "train_cam.new_layer_lr_mult": 10,       # 10x on the new classifier layers
    "train_cam.poly_steps": None,            # PolyOptimizer over the run (IRN defaults)
    "train_cam.grad_clip_norm": None,        # no clipping (IRN defaults)
    "train_cam.early_stop_patience": None,   # no early stop (IRN defaults)
    "train_cam.warmup_steps": 0,             # no warm-up
}
VOC_REFINE = {  # PSA (Ahn & Kwak CVPR 2018) train_aff.py / infer_aff.py, the defaults
    "refine.affinity.init": "pretrained",    # PSA: ImageNet weights
    "refine.affinity.epochs": 8,             # PSA max_epoches
    "refine.affinity.lr": 0.1,               # PSA lr
    "refine.affinity.momentum": 0.0,         # PSA PolyOptimizer: the weight decay in SGD's momentum slot
    "refine.affinity.crop": 448,             # PSA README --crop_size 448
    "refine.affinity.batch_size": 8,         # PSA batch_size
    "refine.affinity.output_stride": 8,      # PSA's stride-8 ResNet-38
    "refine.random_walk.background": "power",  # PSA infer_aff.py
    "refine.random_walk.alpha": 16,          # PSA --alpha 16
    "refine.random_walk.threshold": 0.25,    # IRN sem_seg_bg_thres (unused with background: power)
    "refine.random_walk.beta": 8,            # PSA --beta 8
    "refine.random_walk.exp_times": 8,       # PSA --logt 8
}
VOC_SEGMENT = {  # DeepLab-v2 (Chen et al. TPAMI 2017; kazuto1011/deeplab-pytorch voc12.yaml), the defaults
    "segment.iterations": 20000,
    "segment.lr": 0.00025,
    "segment.batch_size": 10,
    "segment.crop": 321,
    "segment.split": "train_aug",            # the 10,582 of train_aug
    "segment.backbone": "resnet101",
    "segment.init": "pretrained",            # ImageNet
}

# The real VOC sample (config/voc_sample.yaml voc12.hparams, efficientnet_lite0 on 2 CPU cores): its sizing for every
# method; the rest of the CAM schedule is the method's protocol.
SAMPLE_CAM = {
    "train_cam.epochs": 5,                   # voc_sample sizing
    "train_cam.lr": 0.01,                    # voc_sample sizing
    "train_cam.batch_size": 8,               # voc_sample sizing
    "train_cam.crop": 320,                   # voc_sample sizing
    "train_cam.resize_long": [256, 400],     # voc_sample sizing
    "train_cam.split": "train_aug",          # voc_sample sizing: all 300 sample photos
    "train_cam.momentum": 0.9,               # voc_sample sizing
    "train_cam.new_layer_lr_mult": 10,       # voc_sample sizing
}
SAMPLE_CAM_MVA_WSSS = {**SAMPLE_CAM, **{k: VOC_CAM_MVA_WSSS[k] for k in (  # mva-wsss, as above
    "train_cam.select", "train_cam.poly_steps", "train_cam.grad_clip_norm", "train_cam.early_stop_patience",
    "train_cam.warmup_steps")}}
SAMPLE_CAM_SC_CAM = {**SAMPLE_CAM, **{k: VOC_CAM_SC_CAM[k] for k in (  # SC-CAM, as above
    "train_cam.select", "train_cam.poly_steps", "train_cam.grad_clip_norm", "train_cam.early_stop_patience",
    "train_cam.warmup_steps")}}
SAMPLE_REFINE = {
    **VOC_REFINE,                            # PSA, except:
    "refine.affinity.lr": 0.01,              # voc_sample sizing
    "refine.affinity.momentum": 0.9,         # voc_sample sizing
    "refine.affinity.crop": 320,             # voc_sample sizing
    "refine.affinity.output_stride": 16,     # voc_sample sizing
    "refine.random_walk.background": "threshold",  # voc_sample sizing: IRN's background
    "refine.random_walk.beta": 16,           # voc_sample sizing
}
CPU_DEEPLAB_SEGMENT = {  # config/voc_sample_cpu_deeplab.yaml
    "segment.iterations": 200,               # voc_sample_cpu_deeplab sizing
    "segment.lr": 0.00025,                   # DeepLab-v2 (defaults)
    "segment.batch_size": 8,                 # voc_sample_cpu_deeplab sizing
    "segment.crop": 320,                     # voc_sample_cpu_deeplab sizing
    "segment.split": "train_aug",            # defaults
    "segment.backbone": "efficientnet_lite0",  # voc_sample_cpu_deeplab sizing: the CAM net's
    "segment.init": "cam",                   # voc_sample_cpu_deeplab sizing
}

MVA_WSSS_METHODS = ("baseline", "mixup", "manifold_mixup", "sce", "sct")
EFFECTIVE = {
    "default": {**dict.fromkeys(MVA_WSSS_METHODS + ("fmix", "sc_cam"), DEMO),
                # mva_wsss_fmix_v2: --data_train data_train_aug.csv
                "fmix_aug": {**DEMO, "train_cam.split": "train_aug"}},
    "voc12": {
        **{m: {**VOC_CAM_MVA_WSSS, **VOC_REFINE, **VOC_SEGMENT} for m in MVA_WSSS_METHODS},
        "fmix": {**VOC_CAM_MVA_WSSS, **VOC_REFINE, **VOC_SEGMENT,
                 "train_cam.epochs": 25},    # mva_wsss_fmix: mva-wsss README --max_epochs 25
        "fmix_aug": {**VOC_CAM_MVA_WSSS, **VOC_REFINE, **VOC_SEGMENT,  # mva_wsss_fmix_v2, mva-wsss README step 9:
                     "train_cam.epochs": 20,         # --max_epochs 20
                     "train_cam.lr": 0.05,           # --lr 0.05
                     "train_cam.split": "train_aug"},  # --data_train data_train_aug.csv
        "sc_cam": {**VOC_CAM_SC_CAM, **VOC_REFINE, **VOC_SEGMENT}},
    "voc_sample": {
        **{m: {**SAMPLE_CAM_MVA_WSSS, **SAMPLE_REFINE, **VOC_SEGMENT} for m in MVA_WSSS_METHODS + ("fmix_aug",)},
        "fmix": {**SAMPLE_CAM_MVA_WSSS, **SAMPLE_REFINE, **VOC_SEGMENT,
                 "train_cam.epochs": 10},    # voc_sample's own fmix block
        "sc_cam": {**SAMPLE_CAM_SC_CAM, **SAMPLE_REFINE, **VOC_SEGMENT}},
    "train_aug": {m: {**DEMO, "train_cam.split": "train_aug"}  # config/train_aug.yaml
                  for m in MVA_WSSS_METHODS + ("fmix", "fmix_aug", "sc_cam")},
}
EFFECTIVE["voc_sample_cpu_deeplab"] = {m: {**row, **CPU_DEEPLAB_SEGMENT} for m, row in EFFECTIVE["voc_sample"].items()}


def test_the_table_covers_every_method_and_combination():
    assert set(EFFECTIVE) == set(SHIPPED)
    for combination, rows in EFFECTIVE.items():
        assert set(rows) == set(load_config()["methods"]), combination


@pytest.mark.parametrize("combination", sorted(SHIPPED))
def test_shipped_combination_is_valid(combination):
    config = shipped_config(combination)
    validate(config, SCHEMA)
    check_config(config)


@pytest.mark.parametrize("method", sorted(PROTOCOLS))
@pytest.mark.parametrize("combination", sorted(SHIPPED))
def test_effective_schedule_of_every_method_under_every_shipped_config(combination, method):
    effective = method_config(shipped_config(combination), method)
    mismatched = {key: (dotted(effective, key), value) for key, value in EFFECTIVE[combination][method].items()
                  if dotted(effective, key) != value}
    assert not mismatched, mismatched  # key: (effective, expected)


SCHEDULE_KEYS = {"epochs", "lr", "split", "batch_size", "crop", "resize_long", "select", "poly_steps", "iterations",
                 "grad_clip_norm", "early_stop_patience", "warmup_steps", "momentum", "new_layer_lr_mult"}


def schedule_keys(block, path=""):
    for key, value in (block or {}).items():
        if isinstance(value, dict):
            yield from schedule_keys(value, f"{path}{key}.")
        elif key in SCHEDULE_KEYS:
            yield f"{path}{key}"


def test_a_method_block_says_what_the_method_is_and_its_protocol_the_schedule():
    config = load_config()
    assert {m: sorted(schedule_keys({k: v for k, v in (b or {}).items() if k != "published"}))
            for m, b in config["methods"].items()} == {m: [] for m in config["methods"]}
    assert {m: b["protocol"] for m, b in config["methods"].items()} == {
        **dict.fromkeys(MVA_WSSS_METHODS, "mva_wsss"), "fmix": "mva_wsss_fmix", "fmix_aug": "mva_wsss_fmix_v2",
        "sc_cam": "sc_cam"}


def test_the_train_aug_switch_is_one_value():
    switch = yaml.safe_load((REPO / "config" / "train_aug.yaml").read_text())
    assert switch == {"defaults": {"train_cam": {"split": "train_aug"}}}
