"""The engine against float64 brute force (PROTOCOLS.md §7.1-7.2, §7.4) on data with many exact ties."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from xdomain_bench.eval.engine import evaluate_class_retrieval, evaluate_scores


def assert_matches(got: dict, want: dict, names: list[str], tol: float = 1e-12) -> None:
    for name in names:
        assert got[name] == pytest.approx(want[name], abs=tol), name
    assert got["n_queries_no_relevant"] == want["n_queries_no_relevant"]


def tied_problem(seed: int, nq: int = 23, ng: int = 61, n_values: int = 7):
    """Integer scores (heavy ties), 4 gallery classes; query label 4 has no relevant item (R = 0)."""
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, n_values, size=(nq, ng)).astype(np.float64)
    gl = rng.integers(0, 4, size=ng)
    ql = rng.integers(0, 5, size=nq)
    ql[0] = 4
    return scores, ql, gl


@pytest.mark.parametrize("backend", ["search", "sort"])
@pytest.mark.parametrize("tie_mode", ["stable", "sklearn"])
@pytest.mark.parametrize("seed", [0, 1])
def test_scores_with_ties_match_bruteforce(brute, all_metrics, backend, tie_mode, seed):
    scores, ql, gl = tied_problem(seed)
    got = evaluate_scores(scores, ql, gl, all_metrics, tie_mode=tie_mode, backend=backend, chunk_size=5)
    want = brute.class_metrics(scores, ql, gl, all_metrics, tie_mode=tie_mode)
    assert_matches(got, want, all_metrics)
    assert got["n_queries_no_relevant"] >= 1
    assert (got["n_queries"], got["n_gallery"]) == (23, 61)


@pytest.mark.parametrize("backend", ["search", "sort"])
def test_float32_scores_and_many_tie_groups(brute, all_metrics, backend):
    # 300 candidates over 40 integer values: rows hold > 16 distinct tied values (whole-row fallback)
    scores, ql, gl = tied_problem(5, nq=9, ng=300, n_values=40)
    got = evaluate_scores(scores.astype(np.float32), ql, gl, all_metrics, backend=backend)
    assert_matches(got, brute.class_metrics(scores, ql, gl, all_metrics), all_metrics)


@pytest.mark.parametrize("backend", ["search", "sort"])
@pytest.mark.parametrize("tie_mode", ["stable", "sklearn"])
def test_same_set_scores_exclude_self_by_index(brute, all_metrics, backend, tie_mode):
    rng = np.random.default_rng(3)
    scores = rng.integers(0, 5, size=(40, 40)).astype(np.float64)
    np.fill_diagonal(scores, 10.0)  # self would always be rank 1 if it were not excluded
    labels = rng.integers(0, 6, size=40)
    labels[7] = 99  # singleton class: R = 0 after self-exclusion
    got = evaluate_scores(scores, labels, labels, all_metrics, same_set=True, tie_mode=tie_mode, backend=backend)
    want = brute.class_metrics(scores, labels, labels, all_metrics, same_set=True, tie_mode=tie_mode)
    assert_matches(got, want, all_metrics)
    assert got["n_queries_no_relevant"] == 1


def sign_embeddings(rng, n: int, dim: int = 16) -> np.ndarray:
    """±1 vectors times a positive integer: cosines are exact multiples of 1/16 in float32, with ties."""
    signs = rng.choice([-1.0, 1.0], size=(n, dim))
    signs[:, 4:] = 1.0  # only 4 free signs: few distinct cosines, many ties
    return signs * rng.integers(1, 4, size=(n, 1))


def test_cosine_embeddings_match_bruteforce(brute, all_metrics):
    rng = np.random.default_rng(7)
    q, g = sign_embeddings(rng, 30), sign_embeddings(rng, 50)
    ql, gl = rng.integers(0, 3, 30), rng.integers(0, 3, 50)
    ref = (np.sign(q) @ np.sign(g).T) / 16.0
    got = evaluate_class_retrieval(q.astype(np.float32), ql, g.astype(np.float32), gl, all_metrics, chunk_size=7)
    assert_matches(got, brute.class_metrics(ref, ql, gl, all_metrics), all_metrics)


def test_l2_embeddings_match_bruteforce_and_differ_from_cosine(brute, all_metrics):
    rng = np.random.default_rng(11)
    q, g = sign_embeddings(rng, 25), sign_embeddings(rng, 70)  # norms differ, so L2 and cosine disagree
    ql, gl = rng.integers(0, 3, 25), rng.integers(0, 3, 70)
    ref_l2 = -((q[:, None, :] - g[None, :, :]) ** 2).sum(axis=2)  # integers: exact in float32 too
    got_l2 = evaluate_class_retrieval(q, ql, g, gl, all_metrics, distance="l2", chunk_size=6)
    assert_matches(got_l2, brute.class_metrics(ref_l2, ql, gl, all_metrics), all_metrics)
    got_cos = evaluate_class_retrieval(q, ql, g, gl, all_metrics, distance="cosine", chunk_size=6)
    ref_cos = (np.sign(q) @ np.sign(g).T) / 16.0
    assert_matches(got_cos, brute.class_metrics(ref_cos, ql, gl, all_metrics), all_metrics)
    assert got_cos["mAP@all"] != pytest.approx(got_l2["mAP@all"], abs=1e-6)


def test_same_set_embeddings_keep_identical_duplicates(brute, all_metrics):
    rng = np.random.default_rng(2)
    x = sign_embeddings(rng, 40)
    x[10] = x[11]  # an exact duplicate of another item must stay in the gallery
    labels = rng.integers(0, 4, 40)
    ref = (np.sign(x) @ np.sign(x).T) / 16.0
    got = evaluate_class_retrieval(x, labels, x, labels, all_metrics, same_set=True, chunk_size=9)
    want = brute.class_metrics(ref, labels, labels, all_metrics, same_set=True)
    assert_matches(got, want, all_metrics)
    assert got["n_gallery"] == 40


def test_continuous_embeddings_tie_free(brute):
    rng = np.random.default_rng(4)
    q, g = rng.standard_normal((40, 12)), rng.standard_normal((90, 12))
    ql, gl = rng.integers(0, 5, 40), rng.integers(0, 5, 90)
    names = ["mAP@10", "mAP@all", "Prec@10", "MAP@R", "R-Precision", "R@1"]
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    gn = g / np.linalg.norm(g, axis=1, keepdims=True)
    got = evaluate_class_retrieval(torch.from_numpy(q).float(), torch.from_numpy(ql), g, gl, names)
    assert_matches(got, brute.class_metrics(qn @ gn.T, ql, gl, names), names, tol=1e-9)


def test_chunk_size_invariance(all_metrics):
    rng = np.random.default_rng(9)
    q, g = sign_embeddings(rng, 37), sign_embeddings(rng, 53)
    ql, gl = rng.integers(0, 4, 37), rng.integers(0, 4, 53)
    results = [evaluate_class_retrieval(q, ql, g, gl, all_metrics, chunk_size=cs) for cs in (1, 2, 8, 37, 4096)]
    for other in results[1:]:
        assert other == results[0]  # bit-identical, not just close


def test_string_labels_equal_integer_labels(all_metrics):
    scores, ql, gl = tied_problem(8)
    names = np.array(["cat", "dog", "eel", "fox", "gnu"])
    as_int = evaluate_scores(scores, ql, gl, all_metrics)
    as_str = evaluate_scores(scores, list(names[ql]), names[gl], all_metrics)
    assert as_int == as_str
