"""The config overlays the tests run the workflow with, each merged over config/config.yaml (conftest.run_snakemake's
``overlay=``), in one place: what each is sized for is said above it. Two overlays are built inside their tests, from
what those tests make: test_workflow_voc12.voc12_overlay (the archives' URLs and digests) and test_resume.overlay (the
job it kills mid-training)."""

# The setup the learned-quality tests measure (tests/test_workflow.py tiny_run, test_envs, test_concurrency) and the
# base of the one-epoch overlays below: 48 train images of 64 px, 3 classes.
TINY_SYNTHETIC = {
    "device": "cpu",
    "synthetic": {
        "n_train": 48, "n_train_aug": 64, "n_val": 16, "image_size": 64, "n_classes": 3,
        # small_cnn at full width, DeepLab from scratch: the setup whose learned margins were measured over seeds
        # (benchmarks/learned_margins.py), whatever the demo (config.yaml) trades for speed
        "hparams": {
            "backbone": "small_cnn",
            "train_cam": {"epochs": 30, "lr": 0.02, "crop": 64, "resize_long": [56, 72], "batch_size": 8},
            "make_cams": {"scales": [1.0, 1.5]},
            "refine": {"affinity": {"crop": 64, "epochs": 8, "batch_size": 8}, "random_walk": {"beta": 8}},
            # lr: the demo's 0.02 (10x on the head) diverges here (first-epoch loss ~11) and DeepLab then fits its
            # own pseudo-labels barely above their majority label on some seeds; 0.002 fits them (benchmarks/
            # learned_margins.py)
            "segment": {"iterations": 120, "batch_size": 8, "crop": 64, "lr": 0.002, "backbone": "small_cnn",
                        "init": "pretrained"},
        },
    },
}

# The smallest setup that reaches the CAM jobs: 8 images of 32 px, one epoch, one CAM scale (tests/test_bad_input.py:
# hostile files met by the CAM jobs).
TINY = {
    "device": "cpu",
    "synthetic": {
        "n_train": 8, "n_train_aug": 8, "n_val": 4, "image_size": 32, "n_classes": 3,
        "hparams": {
            "backbone": "small_cnn",
            "train_cam": {"epochs": 1, "crop": 32, "resize_long": [28, 36], "batch_size": 4},
            "make_cams": {"scales": [1.0]},
        },
    },
}

# tests/test_jobs.py's hard stops. Enough training (~0.1 s an epoch) that the kill lands inside it, and enough CAM
# work (4 scales, 32 images) that it lands inside the store's write; small enough that the reruns finish in seconds.
HARD_STOP = {
    "device": "cpu",
    "synthetic": {
        "n_train": 32, "n_train_aug": 32, "n_val": 8, "image_size": 64, "n_classes": 3,
        "hparams": {
            "backbone": "small_cnn",
            "train_cam": {"epochs": 40, "crop": 48, "resize_long": [40, 56], "batch_size": 8},
            "make_cams": {"scales": [1.0, 0.5, 1.5, 2.0]},
        },
    },
}

# tests/test_rebuilds.py: baseline and fmix through DeepLab at one epoch and 6 DeepLab updates, the tree whose
# reruns it plans
ONE_EPOCH = {
    **TINY_SYNTHETIC,
    "synthetic": {**TINY_SYNTHETIC["synthetic"], "hparams": {
        "train_cam": {"epochs": 1, "crop": 64, "resize_long": [56, 72], "batch_size": 8},
        "make_cams": {"scales": [1.0]},
        "refine": {"affinity": {"crop": 64, "epochs": 1, "batch_size": 8}},
        "segment": {"iterations": 6, "batch_size": 8, "crop": 64}}},
    "methods": {"fmix": {"train_cam": {"epochs": 1}}},  # fmix's own block sets 25 epochs
}

# tests/test_slurm.py: one epoch on small images; sce with one round: the smallest chain through the sub-category
# checkpoint
ONE_EPOCH_SCE = {
    **TINY_SYNTHETIC,
    "synthetic": {**TINY_SYNTHETIC["synthetic"], "hparams": {
        "train_cam": {"epochs": 1, "crop": 64, "resize_long": [56, 72], "batch_size": 8}}},
    "methods": {"sce": {"subcategory": {"rounds": 1}}},
}

# tests/test_slurm.py: a config the schema accepts but train_cam rejects at run time: one batch needs more than the 48
# images (the dataset and split tables stay those of ONE_EPOCH_SCE: after that run, only train_cam is to do)
BATCH_TOO_LARGE = {
    **ONE_EPOCH_SCE,
    "synthetic": {**TINY_SYNTHETIC["synthetic"], "hparams": {
        "train_cam": {"epochs": 1, "crop": 64, "resize_long": [56, 72], "batch_size": 64}}},
}

# tests/test_workflow.py every_method_run: all eight methods through the default target (summary, figures, report) at
# one epoch, the sub-category methods through two rounds
ONE_EPOCH_EVERY_METHOD = {
    **TINY_SYNTHETIC,
    "synthetic": {**TINY_SYNTHETIC["synthetic"], "hparams": {
        "train_cam": {"epochs": 1, "crop": 64, "resize_long": [56, 72], "batch_size": 8},
        "make_cams": {"scales": [1.0]},
        "refine": {"affinity": {"crop": 64, "epochs": 1, "batch_size": 8}},
        "segment": {"iterations": 6, "batch_size": 8, "crop": 64},
        "teacher": {"preset": "vit_tiny_scratch", "pretrained": "none", "image_size": 64, "epochs": 2,
                    "batch_size": 8, "resize_long": [56, 72]}}},
    # method blocks override the dataset's hparams, so their own epoch counts are cut here too
    # fmix_aug also takes its pseudo-labels and DeepLab to train_aug; the sub-category methods learn from
    # train_aug (PSA / IRN / SC-CAM protocol): teacher, features, clusters and rounds all on its 64 images.
    # sce and sc_cam run 2 rounds (round 2 clusters round 1's features); sct keeps its one round: its
    # rounds would all cluster the same teacher's features from the same start
    "methods": {"fmix": {"train_cam": {"epochs": 1}},
                "fmix_aug": {"train_cam": {"epochs": 1}, "segment": {"split": "train_aug"}},
                "sce": {"subcategory": {"rounds": 2}, "train_cam": {"split": "train_aug"}},
                "sct": {"train_cam": {"split": "train_aug"}},
                "sc_cam": {"subcategory": {"rounds": 2}, "train_cam": {"split": "train_aug"}}},
}
