"""Per-speaker standardisation of stats and the fusion of a CNN with a stats model (Spark-free)."""

from __future__ import annotations

import numpy as np
import pytest

from training.models.fusion import choose_fusion_weight, fuse_probabilities
from training.speaker_norm import speaker_standardise


def _stats_and_groups(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    groups = np.repeat(np.array(["a/1", "a/2", "b/1"], dtype=object), [5, 7, 4])
    offsets = {"a/1": -40.0, "a/2": 3.0, "b/1": 250.0}
    stats = rng.normal(0, 2, (len(groups), 6)) + np.array([offsets[g] for g in groups])[:, None]
    return stats, groups


def test_each_speaker_is_standardised_with_its_own_rows() -> None:
    stats, groups = _stats_and_groups()
    standardised = speaker_standardise(stats, groups)
    for key in np.unique(groups):
        rows = standardised[groups == key]
        np.testing.assert_allclose(rows.mean(axis=0), 0.0, atol=1e-9)
        np.testing.assert_allclose(rows.std(axis=0), 1.0, atol=1e-9)
        expected = (stats[groups == key] - stats[groups == key].mean(axis=0)) / stats[groups == key].std(axis=0)
        np.testing.assert_allclose(rows, expected, atol=1e-9)


def test_a_speakers_values_do_not_depend_on_other_speakers_or_row_order() -> None:
    stats, groups = _stats_and_groups()
    full = speaker_standardise(stats, groups)
    alone = speaker_standardise(stats[groups == "a/2"], groups[groups == "a/2"])
    np.testing.assert_allclose(full[groups == "a/2"], alone, atol=1e-12)
    order = np.random.default_rng(1).permutation(len(stats))
    unshuffled = np.empty_like(full)
    unshuffled[order] = speaker_standardise(stats[order], groups[order])
    np.testing.assert_allclose(unshuffled, full, atol=1e-12)


def test_single_clip_speakers_and_constant_stats_give_zeros_not_infinities() -> None:
    stats = np.array([[1.0, 5.0], [2.0, 5.0], [7.0, 5.0], [3.0, 9.0]])
    groups = np.array(["s1", "s1", "s1", "s2"], dtype=object)
    standardised = speaker_standardise(stats, groups)
    assert np.isfinite(standardised).all()
    np.testing.assert_array_equal(standardised[:, 1], 0.0)  # constant within s1; one row in s2
    np.testing.assert_array_equal(standardised[3], 0.0)
    assert speaker_standardise(np.zeros((0, 2)), np.array([], dtype=object)).shape == (0, 2)
    with pytest.raises(ValueError, match="groups"):
        speaker_standardise(stats, groups[:3])


def test_fusion_is_a_weighted_geometric_mean() -> None:
    cnn = np.array([[0.5, 0.5], [0.2, 0.8]])
    stats = np.array([[0.9, 0.1], [0.6, 0.4]])
    np.testing.assert_allclose(fuse_probabilities(cnn, stats, 0.5)[0], [0.75, 0.25], atol=1e-6)  # sqrt(.45):sqrt(.05) = 3:1
    np.testing.assert_allclose(fuse_probabilities(cnn, stats, 0.0), cnn, atol=1e-6)
    np.testing.assert_allclose(fuse_probabilities(cnn, stats, 1.0), stats, atol=1e-6)
    fused = fuse_probabilities(cnn, stats, 0.3)
    np.testing.assert_allclose(fused.sum(axis=1), 1.0, atol=1e-6)
    expected = cnn[1] ** 0.7 * stats[1] ** 0.3
    np.testing.assert_allclose(fused[1], expected / expected.sum(), atol=1e-6)
    assert np.isfinite(fuse_probabilities(np.array([[1.0, 0.0]]), np.array([[0.0, 1.0]]), 0.5)).all()
    with pytest.raises(ValueError):
        fuse_probabilities(cnn, stats, 1.5)


def test_the_fusion_weight_chosen_is_the_one_that_fuses_best_on_held_out_clips() -> None:
    rng = np.random.default_rng(0)
    targets = rng.integers(0, 4, 200)
    right = np.full((200, 4), 0.1)
    right[np.arange(200), targets] = 0.7
    noise = rng.dirichlet(np.ones(4), 200)
    # the model that knows the classes takes the larger weight, whichever side it is on
    assert choose_fusion_weight(noise, right, targets, [0.2, 0.5, 0.8]) == 0.8
    assert choose_fusion_weight(right, noise, targets, [0.2, 0.5, 0.8]) == 0.2
    # equal UAs: the lower cross-entropy decides (here the weight that lets the sharper model count more)
    flat = np.full((200, 4), 0.25)
    flat[np.arange(200), targets] = 0.26
    flat /= flat.sum(axis=1, keepdims=True)
    assert choose_fusion_weight(flat, right, targets, [0.3, 0.6]) == 0.6
    with pytest.raises(ValueError, match="at least one candidate"):
        choose_fusion_weight(right, noise, targets, [])
