"""AP against scikit-learn's average_precision_score (tie-free and tie-aware, PROTOCOLS.md §7.1)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from xdomain_bench.eval.engine import evaluate_scores


def sk_ap(y_true: np.ndarray, y_score: np.ndarray) -> float:
    if not y_true.any():
        return 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(average_precision_score(y_true, y_score))


def problem(seed: int, ties: bool):
    rng = np.random.default_rng(seed)
    nq, ng = 30, 80
    scores = rng.integers(0, 6, (nq, ng)).astype(np.float64) if ties else rng.standard_normal((nq, ng))
    gl, ql = rng.integers(0, 4, ng), rng.integers(0, 5, nq)  # label 4: no relevant item
    return scores, ql, gl


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_tie_free_ap_equals_sklearn(seed):
    scores, ql, gl = problem(seed, ties=False)
    want = np.mean([sk_ap(gl == ql[i], scores[i]) for i in range(len(ql))])
    got = evaluate_scores(scores, ql, gl, ["mAP@all"])
    assert got["mAP@all"] == pytest.approx(want, abs=1e-12)
    got = evaluate_scores(scores, ql, gl, ["mAP@all"], tie_mode="sklearn")
    assert got["mAP@all"] == pytest.approx(want, abs=1e-12)


@pytest.mark.parametrize("backend", ["search", "sort"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_tie_aware_ap_equals_sklearn(seed, backend):
    scores, ql, gl = problem(seed, ties=True)
    want = np.mean([sk_ap(gl == ql[i], scores[i]) for i in range(len(ql))])
    got = evaluate_scores(scores, ql, gl, ["mAP@all"], tie_mode="sklearn", backend=backend)
    assert got["mAP@all"] == pytest.approx(want, abs=1e-12)
    stable = evaluate_scores(scores, ql, gl, ["mAP@all"], backend=backend)["mAP@all"]
    assert stable != pytest.approx(want, abs=1e-6)  # with this many ties the two rules must differ


@pytest.mark.parametrize("k", [1, 7, 20])
def test_tie_aware_ap_at_k_is_sklearn_on_the_stable_top_k_slice(k):
    scores, ql, gl = problem(4, ties=True)
    vals = []
    for i in range(len(ql)):
        top = np.lexsort((np.arange(len(gl)), -scores[i]))[:k]  # stable: -score, then index
        vals.append(sk_ap(gl[top] == ql[i], scores[i][top]))
    got = evaluate_scores(scores, ql, gl, [f"mAP@{k}"], tie_mode="sklearn")
    assert got[f"mAP@{k}"] == pytest.approx(np.mean(vals), abs=1e-12)
