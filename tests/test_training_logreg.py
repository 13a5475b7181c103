"""Logistic regression: NumPy prediction equals scikit-learn's, binary and absent classes."""

from __future__ import annotations

import numpy as np
import pytest

from ser_udfs.errors import UserError
from training.models.logreg import LogregConfig, LogregModel, fit_logreg, searched_config


def _data(n_classes: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.arange(60) % n_classes
    stats = rng.normal(0, 1, (60, 5)) * [1, 10, 100, 1, 1] + np.eye(5)[labels] * 2
    return stats, labels


@pytest.mark.parametrize("n_classes", [2, 3])
def test_numpy_prediction_matches_scikit_learn(n_classes: int) -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    stats, labels = _data(n_classes)
    model = fit_logreg(stats, labels, n_classes=n_classes, config=LogregConfig(), seed=0)
    assert model.coef.shape == (n_classes, 5) and model.intercept.shape == (n_classes,)
    scaler = StandardScaler().fit(stats)
    reference = LogisticRegression(class_weight="balanced", max_iter=3000).fit(scaler.transform(stats), labels)
    np.testing.assert_allclose(model.predict_proba(stats), reference.predict_proba(scaler.transform(stats)), atol=1e-5)


def test_a_class_without_training_rows_is_never_predicted() -> None:
    stats, labels = _data(3)
    model = fit_logreg(stats, labels, n_classes=4, config=LogregConfig(), seed=0)
    assert model.predict_proba(stats)[:, 3].max() < 1e-6


def test_tensors_round_trip_and_shape_checks() -> None:
    stats, labels = _data(3)
    model = fit_logreg(stats, labels, n_classes=3, config=LogregConfig(), seed=0)
    again = LogregModel.from_tensors(model.tensors(), n_classes=3)
    np.testing.assert_array_equal(again.predict_proba(stats), model.predict_proba(stats))
    with pytest.raises(UserError, match="expected \\[4, 5\\]"):
        LogregModel.from_tensors(model.tensors(), n_classes=4)
    with pytest.raises(UserError, match="stats vectors of length 5"):
        model.predict_proba(stats[:, :4])
    with pytest.raises(UserError, match="only 1 class"):
        fit_logreg(stats, np.zeros(60, dtype=int), n_classes=3, config=LogregConfig(), seed=0)


def test_an_unknown_stats_normalisation_is_refused() -> None:
    with pytest.raises(ValueError, match="logreg.normalisation"):
        LogregConfig(normalisation="corpus")


def test_with_several_corpora_every_corpus_and_class_weighs_the_same() -> None:
    from training.fitting import balanced_row_weights

    labels = np.array([0, 0, 0, 1, 0, 1, 1, 1, 1, 1])
    corpora = np.array(["big"] * 4 + ["small"] * 6)
    weights = balanced_row_weights(labels, corpora)
    cells = {(c, y): weights[(corpora == c) & (labels == y)].sum() for c, y in set(zip(corpora, labels))}
    assert np.allclose(list(cells.values()), len(labels) / 4)  # four cells, equal totals
    one = balanced_row_weights(labels, np.zeros(len(labels)))
    np.testing.assert_allclose(one, len(labels) / (2 * np.bincount(labels)[labels]))  # scikit-learn's "balanced"


def test_a_small_corpus_is_not_drowned_by_a_large_one() -> None:
    """A large corpus where a feature says class 0 and a small one where it says class 1: balanced
    across corpora, the fit does not simply follow the large corpus's rows."""
    rng = np.random.default_rng(0)
    big = rng.normal(size=(400, 2)); big_y = (big[:, 0] > 0).astype(int)
    small = rng.normal(size=(40, 2)); small_y = (small[:, 1] > 0).astype(int)
    stats, labels = np.vstack([big, small]), np.concatenate([big_y, small_y])
    corpora = np.array(["big"] * 400 + ["small"] * 40)
    pooled = fit_logreg(stats, labels, n_classes=2, config=LogregConfig(), seed=0)
    balanced = fit_logreg(stats, labels, n_classes=2, config=LogregConfig(), seed=0, corpora=corpora)

    def cue_ratio(model) -> float:  # weight of the small corpus's cue against the large one's
        return abs(model.coef[1, 1]) / abs(model.coef[1, 0])

    assert cue_ratio(pooled) < 0.1 and cue_ratio(balanced) > 0.5
    small_accuracy = [float((model.predict_proba(small).argmax(axis=1) == small_y).mean()) for model in (pooled, balanced)]
    assert small_accuracy[1] > small_accuracy[0] + 0.05


def _nuisance_data(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two features that share a large nuisance: only a weakly regularised fit learns to subtract
    it (a strongly regularised one follows the class means, i.e. feature 0 alone, near chance)."""
    rng = np.random.default_rng(seed)
    labels = np.arange(120) % 2
    nuisance = rng.normal(0, 5, 120)
    stats = np.column_stack([labels + nuisance + rng.normal(0, 0.1, 120), nuisance])
    return stats, labels, np.repeat(np.arange(12), 10)  # 12 speakers of 10 clips


@pytest.mark.parametrize("candidates", [(1e-4, 10.0), (10.0, 1e-4)])
def test_the_regularisation_search_picks_the_c_that_generalises_to_held_out_speakers(candidates, caplog) -> None:
    from training.models.logreg import choose_regularisation

    stats, labels, speakers = _nuisance_data()
    config = LogregConfig(regularisation_c=1e-4, regularisation_search=candidates)
    with caplog.at_level("INFO", logger="training.models.logreg"):
        chosen = choose_regularisation(stats, labels, n_classes=2, config=config, seed=0, corpora=None, groups=speakers)
    assert chosen == 10.0
    assert "C = 10 chosen over 5 folds of 12 speakers" in caplog.text
    resolved = searched_config(config, stats, labels, n_classes=2, seed=0, groups=speakers)
    assert resolved.regularisation_c == 10.0 and resolved.regularisation_search == ()
    searched = fit_logreg(stats, labels, n_classes=2, config=resolved, seed=0)
    direct = fit_logreg(stats, labels, n_classes=2, config=LogregConfig(regularisation_c=10.0), seed=0)
    np.testing.assert_allclose(searched.coef, direct.coef)
    weak = fit_logreg(stats, labels, n_classes=2, config=LogregConfig(regularisation_c=1e-4), seed=0)
    assert (searched.predict_proba(stats).argmax(axis=1) == labels).mean() > 0.95
    assert (weak.predict_proba(stats).argmax(axis=1) == labels).mean() < 0.7


def test_without_two_speakers_the_search_keeps_regularisation_c(caplog) -> None:
    stats, labels, _ = _nuisance_data()
    config = LogregConfig(regularisation_c=1e-4, regularisation_search=(10.0,))
    with caplog.at_level("WARNING", logger="training.models.logreg"):
        resolved = searched_config(config, stats, labels, n_classes=2, seed=0, groups=np.zeros(len(labels)))
    model = fit_logreg(stats, labels, n_classes=2, config=resolved, seed=0)
    assert "too few to choose C" in caplog.text
    direct = fit_logreg(stats, labels, n_classes=2, config=LogregConfig(regularisation_c=1e-4), seed=0)
    np.testing.assert_allclose(model.coef, direct.coef)


def test_a_fit_refuses_a_config_whose_search_was_not_resolved() -> None:
    stats, labels, _ = _nuisance_data()
    with pytest.raises(ValueError, match="searched_config"):
        fit_logreg(stats, labels, n_classes=2, config=LogregConfig(regularisation_search=(0.1, 1.0)), seed=0)


@pytest.mark.parametrize("settings", [{"regularisation_search": (0.1, 0.0)}, {"search_folds": 1}])
def test_a_bad_regularisation_search_is_refused(settings) -> None:
    with pytest.raises(ValueError, match="logreg.regularisation_search"):
        LogregConfig(**settings)


def _disagreeing_corpora(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two corpora where feature 0 tells the classes apart in both, and feature 1 points to
    class 1 in one and to class 0 in the other: a shared weight on feature 1 cannot serve both."""
    rng = np.random.default_rng(seed)
    labels = np.arange(400) % 2
    corpora = np.repeat(["east", "west"], 200)
    sign = np.where(corpora == "east", 1.0, -1.0)
    stats = np.column_stack([labels + rng.normal(0, 1.0, 400), sign * (2 * labels - 1) * 1.5 + rng.normal(0, 0.7, 400)])
    return stats, labels, corpora


def test_per_corpus_weights_serve_corpora_that_disagree() -> None:
    stats, labels, corpora = _disagreeing_corpora()
    shared = fit_logreg(stats, labels, n_classes=2, config=LogregConfig(), seed=0, corpora=corpora)
    own = fit_logreg(stats, labels, n_classes=2, config=LogregConfig(per_corpus_weights=True), seed=0, corpora=corpora)
    assert shared.corpora == () and own.corpora == ("east", "west") and own.corpus_coef.shape == (2, 2, 2)
    test, test_labels, test_corpora = _disagreeing_corpora(seed=1)

    def accuracy(model: LogregModel, corpora: np.ndarray | None) -> float:
        return float((model.predict_proba(test, corpora).argmax(axis=1) == test_labels).mean())

    assert accuracy(own, test_corpora) > accuracy(shared, test_corpora) + 0.15
    # the corpus-specific blocks carry feature 1, with opposite signs; the shared weights little of it
    east, west = own.corpus_coef[:, 1, 1] - own.corpus_coef[:, 0, 1]
    assert east > 0 > west and abs(own.coef[1, 1] - own.coef[0, 1]) < 0.5 * min(east, -west)
    # a row of no training corpus (or without a corpus) gets the mean of the corpora's weights
    unseen = own.predict_proba(test, np.array(["north"] * len(test)))
    mean_model = LogregModel(own.mean, own.scale, own.coef + own.corpus_coef.mean(axis=0), own.intercept)
    np.testing.assert_allclose(unseen, mean_model.predict_proba(test), atol=1e-6)
    np.testing.assert_array_equal(own.predict_proba(test), unseen)
    # one corpus: nothing of its own to fit
    alone = fit_logreg(stats[corpora == "east"], labels[corpora == "east"], n_classes=2,
                       config=LogregConfig(per_corpus_weights=True), seed=0, corpora=corpora[corpora == "east"])
    assert alone.corpora == () and alone.corpus_coef is None


def test_per_corpus_weights_round_trip_and_are_checked() -> None:
    stats, labels, corpora = _disagreeing_corpora()
    model = fit_logreg(stats, labels, n_classes=3, config=LogregConfig(per_corpus_weights=True), seed=0, corpora=corpora)
    again = LogregModel.from_tensors(model.tensors(), n_classes=3, corpora=model.corpora)
    np.testing.assert_array_equal(again.predict_proba(stats, corpora), model.predict_proba(stats, corpora))
    with pytest.raises(UserError, match="no corpora are named"):
        LogregModel.from_tensors(model.tensors(), n_classes=3)
    with pytest.raises(UserError, match="lack tensor 'corpus_coef'"):
        LogregModel.from_tensors({k: v for k, v in model.tensors().items() if k != "corpus_coef"}, n_classes=3,
                                 corpora=model.corpora)
    with pytest.raises(UserError, match="expected \\[3, 3, 2\\]"):
        LogregModel.from_tensors(model.tensors(), n_classes=3, corpora=("east", "west", "north"))
