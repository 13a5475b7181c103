"""Class-balanced logistic regression on the standardised ``stats`` vector.

scikit-learn fits it; prediction is plain NumPy on the stored arrays (scaler mean and scale,
coefficients, intercepts), so a bundle needs neither pickle nor scikit-learn to predict.

Trained on several corpora with ``per_corpus_weights``, the model holds weights every corpus
shares and, for each corpus, weights of its own (feature augmentation: each standardised vector
``z`` of corpus ``c`` is fitted as ``[z, 0, .., z, .., 0]``, ``z`` in ``c``'s block; Daumé III,
"Frustratingly easy domain adaptation", 2007). The L2 penalty makes the shared weights carry what
the corpora agree on and each corpus's block only where it differs, so no corpus has to accept
the others' acoustics where they disagree. A row of a corpus the model was trained on is scored
with the shared weights plus its corpus's; a row of any other corpus (a call) with the shared
weights plus the mean of the corpora's blocks.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import numpy as np

from ser_udfs.errors import UserError
from training.fitting import balanced_row_weights
from training.metrics import classification_metrics
from training.speaker_norm import STATS_NORMALISATIONS, StatsNormalisation
from training.stats_inputs import check_stats_inputs

logger = logging.getLogger(__name__)

# Logit offset given to a class the training side never saw, so it is (almost) never predicted.
ABSENT_CLASS_LOGIT_OFFSET = 30.0


@dataclass(frozen=True)
class LogregConfig:
    """Settings of the logistic regression (``[logreg]`` in ``conf/train_logreg.toml``).

    ``regularisation_c`` is scikit-learn's ``C`` (inverse L2 strength). ``normalisation``:
    ``"global"`` standardises the stats with the training set's mean and std only; ``"speaker"``
    first standardises each speaker's vectors with that speaker's own (:mod:`training.speaker_norm`),
    in training and wherever the model is applied (which then needs each row's speaker).
    ``regularisation_search``: when not empty, the candidate values of ``C``; each fit chooses
    among them by ``search_folds``-fold cross-validation on its own rows, grouped by speaker (the
    mean UA on the held-out speakers; the first best wins), and ``regularisation_c`` is not used.
    ``calibration_fraction`` (``--model logreg`` only): share of each fit's speakers held out of
    a second fit whose probabilities on them fit the bundle's temperature
    (:mod:`training.calibration`); the model itself is fitted on all the rows. ``inputs``: the
    feature columns side by side in its vector (:mod:`training.stats_inputs`: ``stats``,
    ``egemaps``). ``per_corpus_weights``: on rows of several corpora, fit weights of each corpus's
    own beside the shared ones (the module's docstring); on one corpus it changes nothing.
    """

    inputs: tuple[str, ...] = ("stats",)
    regularisation_c: float = 1.0
    regularisation_search: tuple[float, ...] = ()
    search_folds: int = 5
    max_iter: int = 3000
    class_balanced: bool = True
    normalisation: StatsNormalisation = "global"
    calibration_fraction: float = 0.15
    per_corpus_weights: bool = False

    def __post_init__(self) -> None:
        if self.regularisation_c <= 0 or self.max_iter < 1:
            raise ValueError("logreg.regularisation_c must be positive and logreg.max_iter at least 1")
        if any(c <= 0 for c in self.regularisation_search) or self.search_folds < 2:
            raise ValueError("logreg.regularisation_search must hold positive values and logreg.search_folds be at least 2")
        if not 0 < self.calibration_fraction < 1:
            raise ValueError("logreg.calibration_fraction must lie in (0, 1)")
        check_stats_inputs(self.inputs, setting="logreg.inputs")
        if self.normalisation not in STATS_NORMALISATIONS:
            raise ValueError(f"logreg.normalisation must be one of {list(STATS_NORMALISATIONS)}, got {self.normalisation!r}")


@dataclass(frozen=True)
class LogregModel:
    """A fitted multinomial logistic regression with its standardisation.

    Attributes
    ----------
    mean, scale
        Standardisation ``[d]``: ``z = (stats - mean) / scale``.
    coef
        ``[n_classes, d]``: the weights every row gets.
    intercept
        ``[n_classes]``.
    corpora
        The corpora with weights of their own (``per_corpus_weights``), ``()`` without.
    corpus_coef
        ``[len(corpora), n_classes, d]``: what each of them adds to ``coef`` for its rows (rows of
        other corpora get the mean of these); ``None`` without corpora.
    """

    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: np.ndarray
    corpora: tuple[str, ...] = ()
    corpus_coef: np.ndarray | None = None

    def __post_init__(self) -> None:
        shape = None if self.corpus_coef is None else tuple(self.corpus_coef.shape)
        if (shape is None) != (not self.corpora) or (shape is not None and shape != (len(self.corpora), *self.coef.shape)):
            raise UserError(f"the per-corpus weights have shape {list(shape or [])}, expected "
                            f"{[len(self.corpora), *self.coef.shape]} for the corpora {list(self.corpora)}")

    @property
    def n_classes(self) -> int:
        """Number of classes."""
        return int(self.coef.shape[0])

    @property
    def n_stats(self) -> int:
        """Length ``d`` of the stats vector the model takes."""
        return int(self.coef.shape[1])

    def predict_proba(self, stats: np.ndarray, corpora: np.ndarray | None = None) -> np.ndarray:
        """Class probabilities ``[n, n_classes]`` for stats vectors ``[n, d]``.

        ``corpora`` ``[n]``: each row's corpus, which picks its corpus's weights in a model with
        :attr:`corpora`; rows of other corpora, or all rows when ``None``, get the mean of them.
        """
        stats = np.asarray(stats, dtype=np.float64)
        if stats.ndim != 2 or stats.shape[1] != self.n_stats:
            raise UserError(
                f"the model takes stats vectors of length {self.n_stats}, got an array of shape {stats.shape}"
            )
        z = (stats - self.mean) / self.scale
        logits = z @ self.coef.T + self.intercept
        if self.corpus_coef is not None:
            names = np.full(len(z), "") if corpora is None else np.asarray(corpora).astype(str)
            if names.shape != (len(z),):
                raise ValueError(f"corpora must name one corpus per row ({len(z)}), got shape {names.shape}")
            unseen = self.corpus_coef.mean(axis=0)
            for name in np.unique(names):
                rows = names == name
                block = self.corpus_coef[self.corpora.index(name)] if name in self.corpora else unseen
                logits[rows] += z[rows] @ block.T
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        return (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)

    def tensors(self) -> dict[str, np.ndarray]:
        """Named arrays for a safetensors file (the names of :attr:`corpora` go in the bundle's config)."""
        extra = {} if self.corpus_coef is None else {"corpus_coef": self.corpus_coef}
        return {"scaler_mean": self.mean, "scaler_scale": self.scale, "coef": self.coef, "intercept": self.intercept, **extra}

    @classmethod
    def from_tensors(cls, tensors: dict[str, np.ndarray], *, n_classes: int, corpora: tuple[str, ...] = ()) -> "LogregModel":
        """Rebuild from :meth:`tensors` and the names of the corpora with weights of their own,
        refusing missing tensors or inconsistent shapes."""
        if corpora and "corpus_coef" not in tensors:
            raise UserError(f"the model weights lack tensor 'corpus_coef' for the corpora {list(corpora)}")
        if "corpus_coef" in tensors and not corpora:
            raise UserError("the model weights hold per-corpus weights ('corpus_coef') but no corpora are named for them")
        missing = sorted({"scaler_mean", "scaler_scale", "coef", "intercept"} - set(tensors))
        if missing:
            raise UserError(f"the model weights lack tensor(s) {missing}")
        coef = np.asarray(tensors["coef"], dtype=np.float64)
        n_stats = coef.shape[1] if coef.ndim == 2 else -1
        expected = {
            "coef": (n_classes, n_stats),
            "intercept": (n_classes,),
            "scaler_mean": (n_stats,),
            "scaler_scale": (n_stats,),
        }
        for name, shape in expected.items():
            if tuple(tensors[name].shape) != shape or n_stats < 1:
                raise UserError(
                    f"tensor {name!r} has shape {list(tensors[name].shape)}, expected {list(shape)} "
                    f"for {n_classes} classes"
                )
        return cls(
            mean=np.asarray(tensors["scaler_mean"], dtype=np.float64),
            scale=np.asarray(tensors["scaler_scale"], dtype=np.float64),
            coef=coef,
            intercept=np.asarray(tensors["intercept"], dtype=np.float64),
            corpora=tuple(corpora),
            corpus_coef=np.asarray(tensors["corpus_coef"], dtype=np.float64) if corpora else None,
        )


def fit_logreg(
    stats: np.ndarray, labels: np.ndarray, *, n_classes: int, config: LogregConfig, seed: int,
    corpora: np.ndarray | None = None,
) -> LogregModel:
    """Standardise ``stats`` ``[n, d]`` and fit a (class-balanced) multinomial logistic regression
    with ``C = config.regularisation_c`` (a config with a ``regularisation_search`` goes through
    :func:`searched_config` first).

    Parameters
    ----------
    stats
        Training vectors ``[n, d]``.
    labels
        Class indices ``[n]`` in ``0 .. n_classes - 1``; classes without rows get a very low
        logit so that they are (almost) never predicted.
    corpora
        The corpus of each row ``[n]``. With ``config.class_balanced`` and rows of more than one
        corpus, each (corpus, class) cell weighs the same in the fit (:func:`balanced_row_weights`),
        so a large corpus does not drown a small one; otherwise classes are balanced. With
        ``config.per_corpus_weights`` and more than one corpus, each gets weights of its own.
    """
    if config.regularisation_search:
        raise ValueError("the config still holds a regularisation search: resolve it with searched_config first")
    stats = _checked(stats, labels)
    return _fit(stats, labels, config.regularisation_c, n_classes=n_classes, config=config, seed=seed, corpora=corpora)


def searched_config(
    config: LogregConfig, stats: np.ndarray, labels: np.ndarray, *, n_classes: int, seed: int,
    corpora: np.ndarray | None = None, groups: np.ndarray | None = None,
) -> LogregConfig:
    """``config`` with ``regularisation_c`` chosen among ``regularisation_search`` on these rows
    (:func:`choose_regularisation`) and the search removed; ``config`` itself without a search.

    ``stats`` ``[n, d]``, ``labels``, ``corpora`` and ``groups`` ``[n]`` are the rows the model
    will be fitted on; ``groups`` holds each row's speaker (or other unit a split never divides).
    A fit's second model (e.g. the one that calibrates on held-out speakers) takes the same C.
    """
    if not config.regularisation_search:
        return config
    c = choose_regularisation(_checked(stats, labels), labels, n_classes=n_classes, config=config, seed=seed,
                              corpora=corpora, groups=groups)
    return replace(config, regularisation_c=c, regularisation_search=())


def fit_logreg_searched(
    stats: np.ndarray, labels: np.ndarray, *, n_classes: int, config: LogregConfig, seed: int,
    corpora: np.ndarray | None = None, groups: np.ndarray | None = None,
) -> tuple[LogregModel, LogregConfig]:
    """:func:`searched_config` then :func:`fit_logreg` on the same rows: the model and the config
    it was fitted with (C resolved), for a second fit that must take the same C."""
    resolved = searched_config(config, stats, labels, n_classes=n_classes, seed=seed, corpora=corpora, groups=groups)
    return fit_logreg(stats, labels, n_classes=n_classes, config=resolved, seed=seed, corpora=corpora), resolved


def _checked(stats: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``stats`` as float64, refusing non-finite values and fewer than two classes."""
    stats = np.asarray(stats, dtype=np.float64)
    if not np.isfinite(stats).all():
        raise UserError("the stats vectors hold NaN or infinite values; re-extract the features")
    present = np.unique(labels)
    if len(present) < 2:
        raise UserError(f"the training side holds only {len(present)} class(es); at least 2 are needed")
    return stats


def choose_regularisation(
    stats: np.ndarray, labels: np.ndarray, *, n_classes: int, config: LogregConfig, seed: int,
    corpora: np.ndarray | None, groups: np.ndarray | None,
) -> float:
    """The value of ``config.regularisation_search`` with the best mean UA over folds of ``groups``.

    The rows ``[n]`` are cut into ``config.search_folds`` folds of whole groups (fewer when there
    are fewer groups); each candidate is fitted on all folds but one and scored (UA) on the one
    left out (folds whose training side holds a single class are skipped). With fewer than two
    groups there is nothing to hold out: ``config.regularisation_c``.
    """
    from sklearn.model_selection import GroupKFold

    n_groups = 0 if groups is None else len(np.unique(groups))
    folds = [] if n_groups < 2 else [
        (train, held_out) for train, held_out in GroupKFold(min(config.search_folds, n_groups)).split(stats, labels, groups)
        if len(np.unique(labels[train])) >= 2
    ]
    if not folds:
        logger.warning("logistic regression: %d speaker(s), too few to choose C among %s; using C = %g",
                       n_groups, list(config.regularisation_search), config.regularisation_c)
        return config.regularisation_c
    class_names = [str(k) for k in range(n_classes)]
    scores = []
    for c in config.regularisation_search:
        fold_scores = []
        for train, held_out in folds:
            model = _fit(stats[train], labels[train], c, n_classes=n_classes, config=config, seed=seed,
                         corpora=None if corpora is None else corpora[train])
            predicted = model.predict_proba(stats[held_out], None if corpora is None else corpora[held_out]).argmax(axis=1)
            fold_scores.append(classification_metrics(labels[held_out], predicted, class_names)["ua"])
        scores.append(float(np.mean(fold_scores)))
    best = config.regularisation_search[int(np.argmax(scores))]
    logger.info("logistic regression: C = %g chosen over %d folds of %d speakers (mean UA %s)", best, len(folds), n_groups,
                ", ".join(f"{c:g}: {score:.3f}" for c, score in zip(config.regularisation_search, scores)))
    return best


def _fit(
    stats: np.ndarray, labels: np.ndarray, c: float, *, n_classes: int, config: LogregConfig, seed: int,
    corpora: np.ndarray | None,
) -> LogregModel:
    """:func:`fit_logreg` with ``C = c``, on :func:`_checked` inputs."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    present = np.unique(labels)
    scaler = StandardScaler().fit(stats)
    several = corpora is not None and len(set(corpora)) > 1
    by_corpus = config.class_balanced and several
    names = np.asarray(corpora).astype(str) if config.per_corpus_weights and several else np.array([])
    own = sorted(set(names))
    z = scaler.transform(stats)
    design = np.hstack([z, *(z * (names == name)[:, None] for name in own)])
    classifier = LogisticRegression(
        C=c,
        max_iter=config.max_iter,
        class_weight="balanced" if config.class_balanced and not by_corpus else None,
        random_state=seed,
    ).fit(design, labels, sample_weight=balanced_row_weights(labels, corpora) if by_corpus else None)
    fitted_coef, fitted_intercept = classifier.coef_, classifier.intercept_
    if len(present) == 2:
        # scikit-learn gives one row for two classes; softmax over (-z/2, z/2) equals sigmoid(z).
        fitted_coef = np.vstack([-fitted_coef / 2, fitted_coef / 2])
        fitted_intercept = np.array([-fitted_intercept[0] / 2, fitted_intercept[0] / 2])
    d = stats.shape[1]
    blocks = np.zeros((1 + len(own), n_classes, d))
    blocks[:, classifier.classes_] = fitted_coef.reshape(len(fitted_coef), 1 + len(own), d).transpose(1, 0, 2)
    intercept = np.full(n_classes, fitted_intercept.min() - ABSENT_CLASS_LOGIT_OFFSET)
    intercept[classifier.classes_] = fitted_intercept
    logger.info("logistic regression: %d rows, %d stats, %d classes, C = %g, %d iterations%s",
                len(labels), d, len(present), c, int(np.max(classifier.n_iter_)),
                f", weights of their own for {own}" if own else "")
    return LogregModel(mean=scaler.mean_, scale=scaler.scale_, coef=blocks[0], intercept=intercept,
                       corpora=tuple(own), corpus_coef=blocks[1:] if own else None)
