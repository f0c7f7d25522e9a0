"""The worked examples of PROTOCOLS.md §7.3, through the engine's public entry points."""

from __future__ import annotations

import numpy as np
import pytest

from xdomain_bench.eval.engine import evaluate_class_retrieval, evaluate_scores

RELEVANT_RANKS = [1, 3, 51, 61, 71, 81, 91, 101, 111, 121]


def example1_scores() -> tuple[np.ndarray, np.ndarray]:
    """N = 1000 candidates ranked in index order (score = -index); relevant at the listed ranks."""
    scores = -np.arange(1000, dtype=np.float64)[None, :]
    labels = np.zeros(1000, dtype=np.int64)
    labels[[r - 1 for r in RELEVANT_RANKS]] = 1
    return scores, labels


@pytest.mark.parametrize("backend", ["search", "sort"])
def test_example1_table(backend):
    scores, labels = example1_scores()
    names = ["mAP@5", "mAP@5:A", "mAP@5:B", "mAP@5:C", "Prec@5", "mAP@all", "R-Precision", "MAP@R", "R@1", "Recall@5"]
    got = evaluate_scores(scores, [1], labels, names, backend=backend)
    table = {"mAP@5": 0.8333, "mAP@5:A": 0.8333, "mAP@5:B": 0.3333, "mAP@5:C": 0.1667, "Prec@5": 0.4,
             "mAP@all": 0.2255, "R-Precision": 0.2, "MAP@R": 0.1667, "R@1": 1.0, "Recall@5": 0.2}  # fmt: skip
    for name, value in table.items():
        assert got[name] == pytest.approx(value, abs=5e-5), name
    # exact fractions of the worked example
    assert got["mAP@5"] == pytest.approx((1 + 2 / 3) / 2, abs=1e-15)
    full = sum((m + 1) / r for m, r in enumerate(RELEVANT_RANKS)) / 10
    assert got["mAP@all"] == pytest.approx(full, abs=1e-15)


def test_example1_sklearn_ties_agree_without_ties():
    scores, labels = example1_scores()
    got = evaluate_scores(scores, [1], labels, ["mAP@5", "mAP@all"], tie_mode="sklearn")
    assert got["mAP@5"] == pytest.approx(0.8333, abs=5e-5)
    assert got["mAP@all"] == pytest.approx(0.2255, abs=5e-5)


@pytest.mark.parametrize("backend", ["search", "sort"])
@pytest.mark.parametrize(
    ("relevance", "stable", "sklearn"),
    [([0, 1, 1], 0.5833, 0.5833), ([1, 0, 1], 0.8333, 0.5833)],
)
def test_example2_ties(backend, relevance, stable, sklearn):
    scores = np.array([[0.9, 0.9, 0.5]])
    got = evaluate_scores(scores, [1], relevance, ["mAP@all"], backend=backend)
    assert got["mAP@all"] == pytest.approx(stable, abs=5e-5)
    got = evaluate_scores(scores, [1], relevance, ["mAP@all", "mAP@3"], tie_mode="sklearn", backend=backend)
    assert got["mAP@all"] == pytest.approx(sklearn, abs=5e-5)
    assert got["mAP@3"] == pytest.approx(sklearn, abs=5e-5)


def test_example2_ties_from_embeddings():
    # query (1, 0); gallery rows 0 and 1 tie exactly at cos = 0.6, row 2 scores 0
    q = np.array([[1.0, 0.0]], dtype=np.float32)
    g = np.array([[0.6, 0.8], [0.6, -0.8], [0.0, 1.0]], dtype=np.float32)
    assert evaluate_class_retrieval(q, [1], g, [0, 1, 1], ["mAP@all"])["mAP@all"] == pytest.approx(7 / 12)
    assert evaluate_class_retrieval(q, [1], g, [1, 0, 1], ["mAP@all"])["mAP@all"] == pytest.approx(10 / 12)


def test_example3_empty_query_scores_zero_and_counts():
    scores = np.array([[0.9, 0.8, 0.7], [0.9, 0.8, 0.7]])
    names = ["mAP@all", "mAP@2", "mAP@2:B", "mAP@2:C", "Prec@2", "R@1", "Recall@2", "MAP@R", "R-Precision"]
    got = evaluate_scores(scores, [5, 0], [0, 1, 0], names)  # query 0: label 5, R = 0
    assert got["n_queries_no_relevant"] == 1 and got["n_queries"] == 2
    # query 1 alone: relevant at ranks 1 and 3
    alone = evaluate_scores(scores[1:], [0], [0, 1, 0], names)
    for name in names:
        assert got[name] == pytest.approx(alone[name] / 2, abs=1e-15), name  # the empty query counts as 0
    assert alone["mAP@all"] == pytest.approx((1 + 2 / 3) / 2)
    only_empty = evaluate_scores(scores[:1], [5], [0, 1, 0], names)
    assert all(only_empty[name] == 0.0 for name in names)
