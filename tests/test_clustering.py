"""Sub-category clustering (SC-CAM, Chang et al. CVPR 2020) with FINCH (Sarfraz et al. CVPR 2019).

Expected answers are worked out by hand in the comments, from FINCH's rule: link each sample to
its first (nearest) neighbour, take connected components, repeat on cluster means; a level that
would leave one cluster (or merge fewer than two) is not kept.
"""

import io
import json

import numpy as np
import pandas as pd
import pytest

from wsss_lib.clustering import (
    check_clusters,
    choose_partition,
    cluster_by_class,
    finch_partitions,
    relabel_contiguous,
)


def as_groups(labels):
    """A partition as a set of frozensets of sample indices: comparison up to relabelling."""
    labels = np.asarray(labels)
    return {frozenset(np.flatnonzero(labels == value).tolist()) for value in np.unique(labels)}


def column(values):
    return np.asarray(values, dtype=float)[:, None]


# Three 1-D groups. First neighbours (distance):
#   0.0->0.1 (.1), 0.1->0.0 (.1 < .2), 0.3->0.1 (.2)
#   10.0->10.2 (.2), 10.2->10.0 (.2 < .3), 10.5->10.2 (.3)
#   20.0<->20.1 (.1)
# Components: {0,1,2}, {3,4,5}, {6,7}. Next round on means 0.133, 10.233, 20.05: A->B, B->C
# (9.82 < 10.1), C->B link all three -> one cluster, which FINCH drops: one partition only.
THREE_GROUPS_1D = column([0.0, 0.1, 0.3, 10.0, 10.2, 10.5, 20.0, 20.1])

# Two levels. First neighbours: 0<->0.01, 1<->1.02, 10<->10.03, 11.5<->11.54 -> 4 pairs.
# Means 0.005, 1.01, 10.015, 11.52: 0.005<->1.01 (1.005), 10.015<->11.52 (1.505) -> 2 clusters
# (4 - 2 = 2 merges, so the level is kept). Means 0.5075, 10.7675 link -> 1 cluster, dropped.
TWO_LEVELS_1D = column([0.0, 0.01, 1.0, 1.02, 10.0, 10.03, 11.5, 11.54])

# Directions x, y, z with very different magnitudes: cosine distance is ~0.001 within a
# direction and ~1 across, so every first neighbour stays in its own direction. A group of at
# most 3 samples whose links stay inside it is one component (no sample links to itself), so
# level 0 is exactly the three directions; the next round links three clusters -> one, dropped.
THREE_DIRECTIONS = np.array([
    [1.0, 0.05, 0.0], [10.0, 0.0, 0.3], [0.2, 0.01, 0.01],   # x
    [0.0, 1.0, 0.05], [0.1, 7.0, 0.0],                       # y
    [0.05, 0.0, 1.0], [0.0, 0.2, 3.0], [0.01, 0.01, 0.5],    # z
])


def test_finch_first_partition_three_euclidean_groups():
    partitions = finch_partitions(THREE_GROUPS_1D, distance="euclidean")
    assert len(partitions) == 1
    assert as_groups(partitions[0]) == {frozenset({0, 1, 2}), frozenset({3, 4, 5}), frozenset({6, 7})}


def test_finch_cosine_groups_by_direction_not_magnitude():
    # Premise, checked independently: each sample's cosine first neighbour is in its own group.
    unit = THREE_DIRECTIONS / np.linalg.norm(THREE_DIRECTIONS, axis=1, keepdims=True)
    dist = 1 - unit @ unit.T
    np.fill_diagonal(dist, np.inf)
    group = np.array([0, 0, 0, 1, 1, 2, 2, 2])
    assert (group[dist.argmin(1)] == group).all()
    partitions = finch_partitions(THREE_DIRECTIONS, distance="cosine")
    assert len(partitions) == 1
    assert as_groups(partitions[0]) == as_groups(group)


def test_finch_first_partition_merges_chains_of_first_neighbours():
    # A=0, B=3, C=5: A->B (3), B->C (2 < 3), C->B (2). No pair (A, C) link, A and B are not
    # mutual, yet the component is {A, B, C}. Likewise D=100, E=101, F=105: D<->E, F->E (4).
    # Means 2.67 and 102 then link -> one cluster, dropped.
    partitions = finch_partitions(column([0.0, 3.0, 5.0, 100.0, 101.0, 105.0]), distance="euclidean")
    assert len(partitions) == 1
    assert as_groups(partitions[0]) == {frozenset({0, 1, 2}), frozenset({3, 4, 5})}


def test_finch_hand_worked_two_levels():
    partitions = finch_partitions(TWO_LEVELS_1D, distance="euclidean")
    assert [as_groups(p) for p in partitions] == [
        {frozenset({0, 1}), frozenset({2, 3}), frozenset({4, 5}), frozenset({6, 7})},
        {frozenset({0, 1, 2, 3}), frozenset({4, 5, 6, 7})},
    ]


def test_finch_levels_coarser_nested_and_contiguous():
    features = np.random.default_rng(0).normal(size=(300, 5))
    partitions = finch_partitions(features)
    assert len(partitions) >= 2
    counts = [len(np.unique(p)) for p in partitions]
    assert all(a > b for a, b in zip(counts, counts[1:]))
    for finer, coarser in zip(partitions, partitions[1:]):
        for value in np.unique(finer):  # every finer cluster lies inside one coarser cluster
            assert len(np.unique(coarser[finer == value])) == 1
    for p in partitions:
        assert p.dtype.kind == "i" and set(p.tolist()) == set(range(p.max() + 1))


def test_finch_tiny_inputs_and_validation():
    assert [p.tolist() for p in finch_partitions(np.ones((1, 4)))] == [[0]]
    assert [p.tolist() for p in finch_partitions(np.array([[1.0, 0.0], [0.0, 1.0]]))] == [[0, 0]]
    # Three samples: each links to one of the other two, so level 0 is one component.
    assert [p.tolist() for p in finch_partitions(column([0.0, 1.0, 50.0]), "euclidean")] == [[0, 0, 0]]
    with pytest.raises(ValueError, match="2-D"):
        finch_partitions(np.ones(5))
    with pytest.raises(ValueError, match="finite"):
        finch_partitions(np.array([[1.0, np.nan], [0.0, 1.0], [1.0, 1.0]]))
    with pytest.raises(ValueError, match="at least one sample"):
        finch_partitions(np.ones((0, 3)))


def test_relabel_contiguous_uses_first_appearance():
    assert relabel_contiguous(np.array([7, 7, 2, 9, 2])).tolist() == [0, 0, 1, 2, 1]


def test_choose_partition_level_selection_and_clamp():
    labels, description = choose_partition(TWO_LEVELS_1D, level=0, distance="euclidean")
    assert description == "finch:level0" and labels.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    labels, description = choose_partition(TWO_LEVELS_1D, level=1, distance="euclidean")
    assert description == "finch:level1" and labels.tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    labels, description = choose_partition(TWO_LEVELS_1D, level=5, distance="euclidean")
    assert description == "finch:level1" and labels.tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    labels, description = choose_partition(TWO_LEVELS_1D, level="coarsest", distance="euclidean")
    assert description == "finch:level1" and labels.tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    with pytest.raises(ValueError, match="'finest'"):
        choose_partition(TWO_LEVELS_1D, level="finest")


@pytest.mark.parametrize("k, expected", [
    # Between the levels (4 and 2): one merge of the closest means, 0.005 and 1.01 (1.005 < 1.505).
    (3, [0, 0, 0, 0, 1, 1, 2, 2]),
    # Above level 0 (4): from singletons, merge the closest pairs: gaps .01, .02 -> 6; then .03 -> 5.
    (6, [0, 0, 1, 1, 2, 3, 4, 5]),
    (5, [0, 0, 1, 1, 2, 2, 3, 4]),
    # Exactly a FINCH level.
    (2, [0, 0, 0, 0, 1, 1, 1, 1]),
    (1, [0] * 8),
])
def test_choose_partition_required_clusters_hand_worked(k, expected):
    labels, description = choose_partition(TWO_LEVELS_1D, n_clusters=k, distance="euclidean")
    assert description == f"finch:req{k}"
    assert as_groups(labels) == as_groups(expected)


@pytest.mark.parametrize("k", [1, 2, 5, 17, 40, 59, 60])
def test_choose_partition_required_clusters_is_exact(k, capsys):
    features = np.random.default_rng(1).normal(size=(60, 4))
    labels, _ = choose_partition(features, n_clusters=k)
    assert len(np.unique(labels)) == k and set(labels.tolist()) == set(range(k))
    assert capsys.readouterr().out == ""  # FINCH's own print for large k is swallowed


@pytest.mark.parametrize("method, prefix", [("finch", "finch:req"), ("kmeans", "kmeans:k")])
def test_choose_partition_clamps_k_to_n_samples(method, prefix):
    labels, description = choose_partition(np.eye(4), method=method, n_clusters=10)
    assert description == f"{prefix}4" and sorted(labels.tolist()) == [0, 1, 2, 3]


def test_choose_partition_kmeans_k_clusters_and_deterministic():
    rng = np.random.default_rng(2)
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    blobs = np.concatenate([c + 0.1 * rng.normal(size=(10, 2)) for c in centres])
    labels, description = choose_partition(blobs, method="kmeans", n_clusters=3)
    assert description == "kmeans:k3"
    assert as_groups(labels) == as_groups(np.repeat([0, 1, 2], 10))
    noise = rng.normal(size=(50, 3))
    first, _ = choose_partition(noise, method="kmeans", n_clusters=5, seed=3)
    second, _ = choose_partition(noise, method="kmeans", n_clusters=5, seed=3)
    assert len(np.unique(first)) == 5 and np.array_equal(first, second)


@pytest.mark.parametrize("kwargs, name", [
    ({"method": "spectral"}, "method"),
    ({"method": "kmeans"}, "n_clusters"),
    ({"n_clusters": 0}, "n_clusters"),
    ({"n_clusters": 2.5}, "n_clusters"),
    ({"level": -1}, "level"),
])
def test_choose_partition_bad_arguments_name_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=name):
        choose_partition(THREE_DIRECTIONS, **kwargs)


# Ten images, classes cat/dog/bird/cow. Cat: images 0-1 (x), 2-4 (y), 5-6 (z) -> the three
# directions, as in THREE_DIRECTIONS -> 3 sub-categories. Dog: images 6, 7, 8 -> three samples
# always form one level-0 component -> 1. Bird: no image -> 0. Cow: image 8 only -> 1.
# Image 9 has no class. Image 6 is both cat and dog, image 8 both dog and cow.
IDS = [f"img{i}" for i in range(10)]
CLASSES = ["cat", "dog", "bird", "cow"]
FEATURES = np.array([
    [1.0, 0.05, 0.0], [10.0, 0.0, 0.3],
    [0.0, 1.0, 0.05], [0.1, 7.0, 0.0], [0.0, 2.0, 0.1],
    [0.05, 0.0, 1.0], [0.0, 0.2, 3.0],
    [1.0, 1.0, 1.0], [3.0, -1.0, 0.5], [0.3, 0.3, 0.3],
])
LABELS = np.zeros((10, 4), dtype=int)
LABELS[0:7, 0] = 1
LABELS[6:9, 1] = 1
LABELS[8, 3] = 1
EXPECTED = pd.DataFrame({
    "id": IDS,
    "cat_0": [1, 1, 0, 0, 0, 0, 0, 0, 0, 0],
    "cat_1": [0, 0, 1, 1, 1, 0, 0, 0, 0, 0],
    "cat_2": [0, 0, 0, 0, 0, 1, 1, 0, 0, 0],
    "dog_0": [0, 0, 0, 0, 0, 0, 1, 1, 1, 0],
    "cow_0": [0, 0, 0, 0, 0, 0, 0, 0, 1, 0],
})


def test_cluster_by_class_hand_made():
    table, info = cluster_by_class(IDS, FEATURES, LABELS, CLASSES)
    assert list(table.columns) == ["id", "cat_0", "cat_1", "cat_2", "dog_0", "cow_0"]
    assert info["per_class"] == {"cat": 3, "dog": 1, "bird": 0, "cow": 1}
    assert info["total"] == 5 and info["n_images"] == 10 and info["method"] == "finch"
    assert info["columns"] == ["cat_0", "cat_1", "cat_2", "dog_0", "cow_0"]
    assert info["partition"] == {"cat": "finch:level0", "dog": "finch:level0", "bird": "none",
                                 "cow": "finch:level0"}
    pd.testing.assert_frame_equal(table, EXPECTED, check_dtype=False)
    # Exactly one 1 per parent class an image has, none for classes it lacks.
    for name, index in (("cat", 0), ("dog", 1), ("cow", 3)):
        subs = table[[c for c in info["columns"] if c.startswith(f"{name}_")]].to_numpy()
        assert np.array_equal(subs.sum(1), LABELS[:, index])
    check_clusters(table, info)


def test_cluster_by_class_round_trip_through_csv_and_json():
    table, info = cluster_by_class(IDS, FEATURES, LABELS, CLASSES)
    buffer = io.StringIO()
    table.to_csv(buffer, index=False)
    buffer.seek(0)
    check_clusters(pd.read_csv(buffer), json.loads(json.dumps(info)))


def test_cluster_by_class_passes_kwargs_and_clamps_small_classes():
    table, info = cluster_by_class(IDS, FEATURES, LABELS, CLASSES, method="kmeans", n_clusters=2)
    assert info["per_class"] == {"cat": 2, "dog": 2, "bird": 0, "cow": 1}
    assert info["partition"]["cat"] == "kmeans:k2" and info["partition"]["cow"] == "kmeans:k1"
    assert info["method"] == "kmeans"
    check_clusters(table, info)


def test_cluster_by_class_class_without_images_and_single_image():
    labels = np.array([[1, 0], [0, 0], [0, 0]])
    table, info = cluster_by_class(["a", "b", "c"], np.eye(3), labels, ["solo", "empty"])
    assert info["per_class"] == {"solo": 1, "empty": 0} and info["total"] == 1
    assert list(table.columns) == ["id", "solo_0"] and table["solo_0"].tolist() == [1, 0, 0]
    check_clusters(table, info)


@pytest.mark.parametrize("kwargs, message", [
    ({"features": np.ones(10)}, "features"),
    ({"labels": np.full((10, 4), 2)}, "0 and 1"),
    ({"ids": IDS[:9]}, "same number"),
    ({"ids": ["x"] * 10}, "ids must be unique"),
    ({"class_names": ["cat", "dog", "bird"]}, "class_names"),
    ({"class_names": ["cat", "cat", "bird", "cow"]}, "unique"),
])
def test_cluster_by_class_validates_inputs(kwargs, message):
    args = {"ids": IDS, "features": FEATURES, "labels": LABELS, "class_names": CLASSES} | kwargs
    with pytest.raises(ValueError, match=message):
        cluster_by_class(**args)


def _drop_column(table, info):
    return table.drop(columns="cat_1"), info


def _change_total(table, info):
    return table, info | {"total": 6}


def _two_in_one_class(table, info):
    table = table.copy()
    table.loc[0, "cat_1"] = 1
    return table, info


def _non_binary(table, info):
    table = table.copy()
    table.loc[7, "dog_0"] = 2
    return table, info


def _wrong_n_images(table, info):
    return table.iloc[:-1], info


def _per_class_mismatch(table, info):
    return table, info | {"per_class": {"cat": 2, "dog": 2, "bird": 0, "cow": 1}}


def _empty_subcategory(table, info):
    table = table.copy()
    table["cow_0"] = 0
    return table, info


def _duplicate_id(table, info):
    table = table.copy()
    table.loc[1, "id"] = "img0"
    return table, info


@pytest.mark.parametrize("tamper, message", [
    (_drop_column, "columns"),
    (_change_total, "total is 6"),
    (_two_in_one_class, "more than one sub-category of class 'cat'.*img0"),
    (_non_binary, "0/1"),
    (_wrong_n_images, "n_images"),
    (_per_class_mismatch, "per_class"),
    (_empty_subcategory, "without any image.*cow_0"),
    (_duplicate_id, "duplicate ids"),
])
def test_check_clusters_names_the_inconsistency(tamper, message):
    table, info = cluster_by_class(IDS, FEATURES, LABELS, CLASSES)
    table, info = tamper(table, info)
    with pytest.raises(ValueError, match=message):
        check_clusters(table, info)
