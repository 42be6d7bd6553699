"""Sub-category discovery: cluster the images of each parent class into sub-categories.

Sub-category exploration follows SC-CAM (Chang et al., "Weakly-Supervised Semantic Segmentation
via Sub-category Exploration", CVPR 2020): for every parent class, the feature vectors of the
training images that contain it are clustered, and a second classifier head learns the resulting
sub-category labels. SC-CAM uses k-means with k = 10 per class; here the default finds the number
of sub-categories itself with FINCH (Sarfraz et al., "Efficient Parameter-free Clustering Using
First Neighbor Relations", CVPR 2019), so the user never types it.

FINCH in one paragraph: link every sample to its first (nearest) neighbour; the connected
components of that graph (links taken as undirected) are the first partition. Replace each
cluster by the mean of its members and repeat, giving successively coarser, nested partitions,
until a round would leave a single cluster or merge fewer than two clusters. A requested number of
clusters k is obtained by merging, one pair at a time, the two clusters whose means are closest,
starting from the coarsest FINCH level that still has more than k clusters.

The outputs of :func:`cluster_by_class` are the workflow's ``clusters.csv`` (table) and
``clusters.json`` (info); :func:`check_clusters` verifies that the two agree.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from typing import Any, Sequence

import numpy as np
import pandas as pd

from wsss_lib.progress import track

METHODS = ("finch", "kmeans")


def _finch():
    """The ``FINCH`` function, imported lazily and without its import-time pynndescent warning.

    finch-clust warns at import when pynndescent is missing; we never use its approximate
    nearest-neighbour path below ``ann_threshold`` samples, so the warning is noise here.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="pynndescent is not installed")
        from finch import FINCH
    return FINCH


def relabel_contiguous(labels: np.ndarray) -> np.ndarray:
    """Cluster ids renumbered 0..n-1 in order of first appearance.

    First-appearance order (rather than sorted ids) makes the numbering a function of the
    partition alone, so the same grouping always gives the same labels whatever produced it.
    """
    labels = np.asarray(labels).ravel()
    _, first, inverse = np.unique(labels, return_index=True, return_inverse=True)
    rank = np.empty(len(first), dtype=np.int64)
    rank[np.argsort(first)] = np.arange(len(first))
    return rank[inverse]


def n_clusters_of(labels: np.ndarray) -> int:
    """Number of distinct cluster ids in a label vector."""
    return int(len(np.unique(labels)))


def _validate_features(features: np.ndarray) -> np.ndarray:
    """``features`` as a float64 (N, D) array with N, D >= 1 and only finite values."""
    array = np.asarray(features, dtype=np.float64)
    if array.ndim != 2:
        raise ValueError(f"features must be 2-D (n_samples, n_features), got shape {array.shape}")
    if array.shape[0] < 1 or array.shape[1] < 1:
        raise ValueError(f"features must have at least one sample and one feature, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError("features must be finite (found NaN or inf)")
    return array


def finch_partitions(features: np.ndarray, distance: str = "cosine") -> list[np.ndarray]:
    """All FINCH partitions of ``features``, finest first, each relabelled 0..n-1.

    ``FINCH`` returns ``(c, num_clust, req_c)``: ``c`` is an (N, L) int array, one column of
    cluster ids per level; ``num_clust`` the L cluster counts (strictly decreasing); ``req_c`` the
    labels for ``req_clust`` or None. We pass ``ensure_early_exit=False`` as in the authors'
    reference runs (no distance-threshold pruning of first-neighbour links).

    1 sample: the single partition ``[0]``. 2 samples: each is the other's first neighbour, so
    the first (and only) partition joins them; both are answered without calling FINCH, whose
    pairwise step is pointless there.
    """
    array = _validate_features(features)
    n_samples = array.shape[0]
    if n_samples <= 2:
        return [np.zeros(n_samples, dtype=np.int64)]
    partitions, _, _ = _finch()(array, distance=distance, ensure_early_exit=False, verbose=False)
    return [relabel_contiguous(partitions[:, level]) for level in range(partitions.shape[1])]


def cluster_means(features: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(n_clusters, D) mean feature of each cluster; ``labels`` must be contiguous 0..n-1."""
    counts = np.bincount(labels)
    sums = np.zeros((len(counts), features.shape[1]))
    np.add.at(sums, labels, features)
    return sums / counts[:, None]


def merge_closest_until(features: np.ndarray, labels: np.ndarray, n_clusters: int,
                        distance: str = "cosine") -> np.ndarray:
    """Merge the two clusters with the closest means, one pair at a time, until ``n_clusters`` remain.

    This is FINCH's own "required number of clusters" step (Sarfraz et al. 2019, Sec. 3.2: the
    closest pair of cluster means is a mutual first-neighbour pair), done here one merge per
    round so that ties between equally close pairs cannot overshoot the requested count. Ties are
    broken by the lowest cluster index, so the result is deterministic. O(m^2 D) per merge for m
    clusters: used only for the few merges between FINCH levels or on small classes.
    """
    from sklearn.metrics import pairwise_distances  # here, as in _kmeans: sklearn.metrics costs ~1.5 s to import

    labels = relabel_contiguous(labels)
    while n_clusters_of(labels) > n_clusters:
        means = cluster_means(features, labels)
        dist = pairwise_distances(means, metric=distance)
        np.fill_diagonal(dist, np.inf)
        first, second = np.unravel_index(np.argmin(dist), dist.shape)
        labels = relabel_contiguous(np.where(labels == max(first, second), min(first, second), labels))
    return labels


def finch_required(features: np.ndarray, n_clusters: int, distance: str = "cosine") -> np.ndarray:
    """A partition with exactly ``min(n_clusters, n_samples)`` clusters from FINCH's hierarchy.

    FINCH's ``req_clust`` answer is used when it has exactly the requested count. FINCH cannot
    give more clusters than its first partition (it then prints a note and returns that
    partition), and ties can make its merge step overshoot; in those cases the count is reached
    with :func:`merge_closest_until` from the coarsest FINCH level that still has more clusters
    than asked, or from singletons when even the first level has too few.
    """
    array = _validate_features(features)
    n_samples = array.shape[0]
    if n_clusters >= n_samples:
        return np.arange(n_samples, dtype=np.int64)
    if n_samples <= 2:  # then n_clusters == 1: the two samples join
        return np.zeros(n_samples, dtype=np.int64)
    # FINCH prints (not warns) when req_clust exceeds its first partition; keep logs clean.
    with contextlib.redirect_stdout(io.StringIO()):
        partitions, counts, requested = _finch()(array, req_clust=n_clusters, distance=distance,
                                                 ensure_early_exit=False, verbose=False)
    if requested is not None and n_clusters_of(requested) == n_clusters:
        return relabel_contiguous(requested)
    finer = [level for level, count in enumerate(counts) if count > n_clusters]
    start = partitions[:, finer[-1]] if finer else np.arange(n_samples)
    return merge_closest_until(array, start, n_clusters, distance)


def choose_partition(features: np.ndarray, method: str = "finch", level: int | str = 0,
                     n_clusters: int | None = None, distance: str = "cosine",
                     seed: int = 0) -> tuple[np.ndarray, str]:
    """Sub-category labels for one class's features, and a short description of how they were made.

    - ``method="finch"``, ``n_clusters=None``: FINCH partition ``level`` (0 = finest), clamped to
      the coarsest level available; ``level="coarsest"`` takes the last one, as mva-wsss
      (compute_clusters.py: ``c[:, -1]``). Description ``"finch:level<L>"`` with the level used.
    - ``method="finch"``, ``n_clusters=k``: exactly ``min(k, N)`` clusters via
      :func:`finch_required`. Description ``"finch:req<k>"``.
    - ``method="kmeans"``: scikit-learn KMeans with ``min(k, N)`` clusters, ``n_init=10``,
      ``random_state=seed`` (SC-CAM, Chang et al. 2020, uses k = 10 per class); ``k`` is required.
      KMeans is Euclidean, so ``distance`` is ignored. Description ``"kmeans:k<k>"``.

    Labels are numbered 0..n-1 in order of first appearance.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if n_clusters is not None and (isinstance(n_clusters, bool) or int(n_clusters) != n_clusters
                                   or n_clusters < 1):
        raise ValueError(f"n_clusters must be a positive integer or None, got {n_clusters!r}")
    if level != "coarsest" and (isinstance(level, (bool, str)) or int(level) != level or level < 0):
        raise ValueError(f"level must be a non-negative integer or 'coarsest', got {level!r}")
    array = _validate_features(features)
    if method == "kmeans":
        if n_clusters is None:
            raise ValueError("n_clusters is required for method='kmeans'")
        k = min(int(n_clusters), array.shape[0])
        return _kmeans(array, k, seed), f"kmeans:k{k}"
    if n_clusters is not None:
        k = min(int(n_clusters), array.shape[0])
        return finch_required(array, k, distance), f"finch:req{k}"
    partitions = finch_partitions(array, distance)
    used = len(partitions) - 1 if level == "coarsest" else min(int(level), len(partitions) - 1)
    return partitions[used], f"finch:level{used}"


def _kmeans(features: np.ndarray, n_clusters: int, seed: int) -> np.ndarray:
    """KMeans labels (relabelled); sklearn imported here to keep module import light."""
    from sklearn.cluster import KMeans

    with warnings.catch_warnings():
        # Duplicate features can leave fewer distinct clusters than asked; the labels are still
        # valid and the relabelling below keeps them contiguous.
        warnings.filterwarnings("ignore", message="Number of distinct clusters")
        fitted = KMeans(n_clusters=n_clusters, n_init=10, random_state=seed).fit(features)
    return relabel_contiguous(fitted.labels_)


def subcategory_columns(class_name: str, n_sub: int) -> list[str]:
    """Column names ``<class>_0 .. <class>_<n_sub-1>``."""
    return [f"{class_name}_{j}" for j in range(n_sub)]


def _validate_inputs(ids: Sequence[str], features: np.ndarray, labels: np.ndarray,
                     class_names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Shape/value checks shared by :func:`cluster_by_class`; returns (features, 0/1 int labels)."""
    array = np.asarray(features, dtype=np.float64)
    if array.ndim != 2:
        raise ValueError(f"features must be 2-D (n_images, n_features), got shape {array.shape}")
    label_array = np.asarray(labels)
    if label_array.ndim != 2:
        raise ValueError(f"labels must be 2-D (n_images, n_classes), got shape {label_array.shape}")
    if not (len(ids) == array.shape[0] == label_array.shape[0]):
        raise ValueError(f"ids ({len(ids)}), features ({array.shape[0]}) and labels "
                         f"({label_array.shape[0]}) must have the same number of images")
    if len(set(ids)) != len(ids):
        raise ValueError("ids must be unique")
    if label_array.shape[1] != len(class_names):
        raise ValueError(f"labels have {label_array.shape[1]} classes but class_names has {len(class_names)}")
    if len(set(class_names)) != len(class_names):
        raise ValueError("class_names must be unique")
    if not np.isin(label_array, (0, 1)).all():
        raise ValueError("labels must contain only 0 and 1")
    return array, label_array.astype(np.int64)


def cluster_by_class(ids: Sequence[str], features: np.ndarray, labels: np.ndarray,
                     class_names: Sequence[str], **choose_kwargs: Any) -> tuple[pd.DataFrame, dict]:
    """Cluster, class by class, the features of the images containing that class (SC-CAM).

    ``labels`` is the (N, K) 0/1 image-level label matrix. Returns ``(table, info)``:

    - ``table``: column ``"id"`` then one 0/1 column ``<class>_<j>`` per sub-category, class by
      class; an image has exactly one 1 among the sub-categories of each class it contains and
      0 elsewhere. A class without images has no columns.
    - ``info`` (JSON-ready): ``total``, ``per_class`` (sub-categories per class, 0 for classes
      without images), ``partition`` (per class, the description from :func:`choose_partition`,
      ``"none"`` for classes without images), ``method``, ``n_images`` and ``columns``.

    ``choose_kwargs`` go to :func:`choose_partition` unchanged.
    """
    array, label_array = _validate_inputs(ids, features, labels, class_names)
    blocks: list[np.ndarray] = []
    per_class: dict[str, int] = {}
    partition: dict[str, str] = {}
    columns: list[str] = []
    # one bar tick per class: FINCH or k-means on a frequent VOC class (person: ~4k train_aug images) takes a while
    for index, name in enumerate(track(class_names, "clustering", len(class_names), unit="classes")):
        members = np.flatnonzero(label_array[:, index] == 1)
        if len(members) == 0:
            per_class[str(name)], partition[str(name)] = 0, "none"
            continue
        sub, description = choose_partition(array[members], **choose_kwargs)
        n_sub = n_clusters_of(sub)
        block = np.zeros((len(ids), n_sub), dtype=np.int64)
        block[members, sub] = 1
        blocks.append(block)
        per_class[str(name)], partition[str(name)] = n_sub, description
        columns += subcategory_columns(str(name), n_sub)
    values = np.concatenate(blocks, axis=1) if blocks else np.zeros((len(ids), 0), dtype=np.int64)
    table = pd.DataFrame(values, columns=columns)
    table.insert(0, "id", [str(i) for i in ids])
    info = {
        "total": len(columns),
        "per_class": per_class,
        "partition": partition,
        "method": str(choose_kwargs.get("method", "finch")),
        "n_images": len(ids),
        "columns": columns,
    }
    return table, info


def check_clusters(table: pd.DataFrame, info: dict) -> None:
    """Raise ValueError, naming the inconsistency, unless ``clusters.csv`` agrees with ``clusters.json``.

    Checked: first column ``id`` with unique ids, one row per image (``n_images``); the other
    columns equal ``info["columns"]``, which equals ``<class>_<j>`` for ``per_class`` in order;
    ``total`` equals the number of sub-category columns and the sum of ``per_class``; values are
    0/1; every image has at most one sub-category per class; every sub-category has an image
    (clusters come from partitions, so an empty one means the two files do not belong together).
    """
    for key in ("total", "per_class", "n_images", "columns"):
        if key not in info:
            raise ValueError(f"clusters info lacks {key!r}")
    if len(table.columns) == 0 or table.columns[0] != "id":
        raise ValueError("clusters table must start with column 'id'")
    if table["id"].duplicated().any():
        raise ValueError("clusters table has duplicate ids")
    if len(table) != info["n_images"]:
        raise ValueError(f"n_images is {info['n_images']} but the table has {len(table)} rows")
    sub_columns = [str(c) for c in table.columns[1:]]
    if sub_columns != list(info["columns"]):
        raise ValueError(f"table columns {sub_columns} differ from info columns {list(info['columns'])}")
    expected = [c for name, n in info["per_class"].items() for c in subcategory_columns(name, int(n))]
    if expected != list(info["columns"]):
        raise ValueError(f"info columns {list(info['columns'])} do not match "
                         f"per_class {dict(info['per_class'])}")
    if info["total"] != len(sub_columns) or info["total"] != sum(info["per_class"].values()):
        raise ValueError(f"total is {info['total']} but there are {len(sub_columns)} sub-category columns "
                         f"and per_class sums to {sum(info['per_class'].values())}")
    values = table[sub_columns].to_numpy()
    if values.size and not np.isin(values, (0, 1)).all():
        raise ValueError("sub-category values must be 0/1")
    _check_one_per_class(table, info["per_class"])
    empty = [c for c in sub_columns if not (table[c] == 1).any()]
    if empty:
        raise ValueError(f"sub-categories without any image: {empty}")


def _check_one_per_class(table: pd.DataFrame, per_class: dict) -> None:
    """Each image has at most one sub-category of each parent class."""
    for name, n_sub in per_class.items():
        if int(n_sub) == 0:
            continue
        hits = table[subcategory_columns(name, int(n_sub))].to_numpy().sum(axis=1)
        bad = table["id"][hits > 1].tolist()
        if bad:
            raise ValueError(f"images with more than one sub-category of class {name!r}: "
                             f"{bad[:5]}")

