"""Simple key-sequence detectors, the floor any learnt detector must clear.

Landauer, Skopik and Wurzenberger (FSE 2024, "a critical review of common log data sets") show
that detectors as plain as these reach high F1 on HDFS. All read the splits of ``python -m logdata
sequences`` (normal-only ``train``, mixed ``test``); chunks of a sequence are put back together.

* **new key** — abnormal when the sequence holds a key never seen in training (``<unk>``).
* **PCA** (Xu et al., SOSP 2009, as loglizer runs it on HDFS): event-count vectors weighted by
  tf-idf (idf from training), zero-mean, the principal subspace holding ``variance`` of the
  training variance; abnormal when the squared prediction error (SPE) exceeds the Q-statistic
  threshold of Jackson and Mudholkar at ``c_alpha`` (loglizer's defaults: 95 %, 3.2905).
* **isolation forest** (scikit-learn, default contamination) on the raw count vectors, fitted on
  normal training sequences; abnormal where it predicts an outlier.
* **local outlier factor** (scikit-learn, ``novelty=True``) on the raw count vectors of normal
  training sequences; abnormal when less dense than the least dense 1 % of training.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from logdata.keyseq.vocab import UNK, KeyVocab
from reward.labels import ABNORMAL, NORMAL


def per_sequence(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per ``sequence_id``: its label and all its key ids (chunks joined in order)."""
    ordered = rows.sort_values(["sequence_id", "chunk"]) if "chunk" in rows else rows
    return ordered.groupby("sequence_id", sort=True).agg(
        label=("label", "first"),
        key_ids=("key_ids", lambda parts: [int(i) for part in parts for i in part])).reset_index()


def count_vectors(sequences: pd.DataFrame, vocab_size: int) -> np.ndarray:
    """``(sequences, vocab_size)`` event counts.

    >>> count_vectors(pd.DataFrame({"key_ids": [[4, 4, 5], [5]]}), 6).tolist()
    [[0.0, 0.0, 0.0, 0.0, 2.0, 1.0], [0.0, 0.0, 0.0, 0.0, 0.0, 1.0]]
    """
    out = np.zeros((len(sequences), vocab_size))
    for row, ids in enumerate(sequences["key_ids"]):
        np.add.at(out[row], np.asarray(ids, dtype=np.int64), 1.0)
    return out


def new_key_flags(sequences: pd.DataFrame, vocab: KeyVocab) -> np.ndarray:
    """Whether each sequence holds a key unseen in training."""
    unk = vocab.id_of(UNK)
    return np.array([unk in ids for ids in sequences["key_ids"]], dtype=bool)


def q_threshold(residual_eigenvalues: np.ndarray, c_alpha: float) -> float:
    """Jackson–Mudholkar Q statistic: the SPE threshold from the residual subspace's eigenvalues.

    >>> round(q_threshold(np.array([1.0, 0.5, 0.25]), 3.2905), 3)
    14.498
    """
    phi = [float(np.sum(residual_eigenvalues ** i)) for i in (1, 2, 3)]
    if phi[0] <= 0:
        return 0.0
    h0 = 1.0 - 2.0 * phi[0] * phi[2] / (3.0 * phi[1] ** 2)
    return float(phi[0] * (c_alpha * np.sqrt(2.0 * phi[1] * h0 ** 2) / phi[0] + 1.0
                     + phi[1] * h0 * (h0 - 1.0) / phi[0] ** 2) ** (1.0 / h0))


def tf_idf(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Tf-idf weighting as loglizer does it: counts times ``log(N / df)``, ``df`` counted in training.

    >>> a, b = tf_idf(np.array([[1.0, 1.0], [2.0, 0.0]]), np.array([[0.0, 3.0]]))
    >>> a.round(3).tolist(), b.round(3).tolist()
    ([[0.0, 0.693], [0.0, 0.0]], [[0.0, 2.079]])
    """
    idf = np.log(len(train) / np.maximum((train > 0).sum(axis=0), 1e-8))
    return train * idf, test * idf


def pca_flags(train: np.ndarray, test: np.ndarray, variance: float = 0.95,
              c_alpha: float = 3.2905) -> tuple[np.ndarray, dict[str, Any]]:
    """PCA detector (loglizer's): SPE of each tf-idf test vector above the Q threshold.

    Returns:
        Flags and the fit (components kept, threshold).
    """
    train, test = tf_idf(train, test)
    mean = train.mean(axis=0)
    centred = train - mean
    _, singular, vt = np.linalg.svd(centred, full_matrices=False)
    eigen = singular ** 2 / max(1, len(train) - 1)
    share = np.cumsum(eigen) / eigen.sum() if eigen.sum() > 0 else np.ones_like(eigen)
    kept = int(np.searchsorted(share, variance) + 1)
    basis = vt[:kept].T
    residual = (test - mean) - (test - mean) @ basis @ basis.T
    spe = np.sum(residual ** 2, axis=1)
    threshold = q_threshold(eigen[kept:], c_alpha)
    return spe > threshold, {"components": kept, "threshold": float(threshold)}


def isolation_forest_flags(train: np.ndarray, test: np.ndarray, seed: int
                           ) -> tuple[np.ndarray, dict[str, Any]]:
    """Isolation forest fitted on normal training vectors; flags its predicted outliers."""
    from sklearn.ensemble import IsolationForest

    forest = IsolationForest(n_estimators=100, random_state=seed).fit(train)
    return forest.predict(test) == -1, {"n_estimators": 100}


def local_outlier_flags(train: np.ndarray, test: np.ndarray, share: float = 0.01
                        ) -> tuple[np.ndarray, dict[str, Any]]:
    """Local outlier factor (novelty mode): flags test vectors less dense than ``share`` of training."""
    from sklearn.neighbors import LocalOutlierFactor

    lof = LocalOutlierFactor(novelty=True, contamination=share).fit(train)
    return lof.predict(test) == -1, {"n_neighbors": lof.n_neighbors_, "contamination": share}


@dataclass(frozen=True)
class Baseline:
    """One simple detector: ``flags(train counts, test counts, test sequences, vocab, seed)``."""

    name: str
    flags: Callable[[np.ndarray, np.ndarray, pd.DataFrame, KeyVocab, int],
                    tuple[np.ndarray, dict[str, Any]]]
    seeded: bool


#: The simple detectors, in table order.
BASELINES: tuple[Baseline, ...] = (
    Baseline("new_key", lambda tr, te, seqs, vocab, seed: (new_key_flags(seqs, vocab), {}), False),
    Baseline("pca", lambda tr, te, seqs, vocab, seed: pca_flags(tr, te), False),
    Baseline("isolation_forest",
             lambda tr, te, seqs, vocab, seed: isolation_forest_flags(tr, te, seed), True),
    Baseline("local_outlier_factor",
             lambda tr, te, seqs, vocab, seed: local_outlier_flags(tr, te), False),
)


def run_baselines(train_rows: pd.DataFrame, test_rows: pd.DataFrame, vocab: KeyVocab,
                  seeds: list[int]) -> dict[str, list[dict[str, Any]]]:
    """Every baseline on the test split (seeded ones once per seed).

    Returns:
        ``{name: [{"seed", "labels", "pred", "fit"}, …]}`` with per-sequence predictions.
    """
    train, test = per_sequence(train_rows), per_sequence(test_rows)
    train_x, test_x = count_vectors(train, len(vocab)), count_vectors(test, len(vocab))
    out: dict[str, list[dict[str, Any]]] = {}
    for baseline in BASELINES:
        runs = []
        for seed in seeds if baseline.seeded else seeds[:1]:
            flags, fit = baseline.flags(train_x, test_x, test, vocab, seed)
            runs.append({"seed": seed, "sequence_id": test["sequence_id"].tolist(),
                         "labels": test["label"].tolist(),
                         "pred": [ABNORMAL if f else NORMAL for f in flags], "fit": fit})
        out[baseline.name] = runs
    return out
