"""Per-query results from the engine's chunk hook, against brute force: Python's sort for the top-k order,
scikit-learn's average_precision_score for AP, label counts for the relevant count."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score

from xdomain_bench.eval.engine import evaluate_class_retrieval
from xdomain_bench.eval.per_query import PerQuery, stable_top_k, top_k_size


def _brute_top(row: np.ndarray, k: int) -> list[int]:
    return sorted(range(len(row)), key=lambda i: (-row[i], i))[:k]


@pytest.mark.parametrize("k", [1, 5, 17, 40])
def test_stable_top_k_orders_ties_by_gallery_index(k):
    rng = np.random.default_rng(3)
    S = rng.integers(0, 4, size=(9, 17)).astype(np.float32)  # many ties, also across the k-th value
    idx, val = stable_top_k(torch.from_numpy(S), k)
    for r in range(S.shape[0]):
        want = _brute_top(S[r], k)
        assert idx[r].tolist() == want
        assert val[r].tolist() == [S[r, i] for i in want]


def test_top_k_size_is_the_largest_cutoff_capped():
    assert top_k_size(["mAP@200", "Prec@100", "mAP@all"], 100) == 100
    assert top_k_size(["mAP@10", "R@1"], 100) == 10
    assert top_k_size(["mAP@all"], 50) == 50


@pytest.mark.parametrize("same_set", [False, True])
def test_per_query_matches_sklearn_and_brute_force(same_set):
    rng = np.random.default_rng(0)
    q = rng.normal(size=(23, 8)).astype(np.float32)
    ql = rng.integers(0, 4, size=23)
    g, gl = (q, ql) if same_set else (rng.normal(size=(31, 8)).astype(np.float32), rng.integers(0, 4, size=31))
    pq = PerQuery(top_k=6)
    out = evaluate_class_retrieval(q, ql, g, gl, ["mAP@all"], same_set=same_set, chunk_size=5, on_chunk=pq)
    res = pq.arrays()
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    gn = g / np.linalg.norm(g, axis=1, keepdims=True)
    S = qn.astype(np.float64) @ gn.T.astype(np.float64)
    for i in range(len(q)):
        keep = np.arange(len(g)) != i if same_set else np.ones(len(g), bool)
        cand = np.flatnonzero(keep)
        order = [cand[j] for j in _brute_top(S[i, cand], 6)]
        assert res["top_index"][i].tolist() == order
        rel = gl[cand] == ql[i]
        assert res["n_relevant"][i] == rel.sum()
        want = average_precision_score(rel, S[i, cand]) if rel.any() else 0.0
        assert res["ap"][i] == pytest.approx(want, abs=1e-9)
    assert res["ap"].mean() == pytest.approx(out["mAP@all"], abs=1e-12)
    assert pq.ap_tie_mode == "stable"


def test_sklearn_tie_mode_ap_matches_sklearn_on_tied_scores():
    rng = np.random.default_rng(1)
    q = rng.integers(0, 2, size=(12, 3)).astype(np.float32) + 0.5  # few distinct directions: tied scores
    g = rng.integers(0, 2, size=(20, 3)).astype(np.float32) + 0.5
    ql, gl = rng.integers(0, 3, size=12), rng.integers(0, 3, size=20)
    pq = PerQuery(top_k=4)
    evaluate_class_retrieval(q, ql, g, gl, ["mAP@all"], tie_mode="sklearn", chunk_size=4, on_chunk=pq)
    res = pq.arrays()
    assert pq.ap_tie_mode == "sklearn"
    S = torch.nn.functional.normalize(torch.from_numpy(q), dim=1) @ torch.nn.functional.normalize(
        torch.from_numpy(g), dim=1).T  # the engine's float32 scores, so ties are the same ties
    for i in range(len(q)):
        rel = gl == ql[i]
        want = average_precision_score(rel, S[i].numpy()) if rel.any() else 0.0
        assert res["ap"][i] == pytest.approx(want, abs=1e-9)
