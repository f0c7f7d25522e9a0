"""SnMpNet's published evaluation (mvp18/UCDR, PROTOCOLS.md §7.4) on raw features whose exp scores underflow.

The reference is written from SnMpNet's formula: similarity exp(-Euclidean) from scipy's cdist in
float64 on the raw features; per query, the top k by descending similarity, scikit-learn's
average_precision_score on that slice (0 when the slice holds no relevant item), precision
|relevant ∩ top k| / min(k, |top k|), and sklearn AP over the whole row for mAP@all.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from xdomain_bench.cli import main
from xdomain_bench.eval.engine import evaluate_class_retrieval

from .test_sklearn_oracle import sk_ap  # scikit-learn's average_precision_score; 0 without a relevant item

METRICS = ["mAP@200", "Prec@200", "mAP@all"]
EXP_UNDERFLOW = 745.2  # exp(-d) is exactly 0.0 in float64 beyond this distance


def raw_features(seed: int, n_query: int, n_gallery: int, spread: float, noise: float):
    """Class-clustered features ×200 (float32, as saved embeddings): far pairs underflow exp."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((6, 16)) * spread

    def make(n: int):
        y = rng.integers(0, 6, n)
        return ((centers[y] + rng.standard_normal((n, 16)) * noise) * 200).astype(np.float32), y

    (q, ql), (g, gl) = make(n_query), make(n_gallery)
    return q, ql, g, gl


def snmpnet_reference(q, ql, g, gl, k: int = 200, sort_kind: str = "quicksort") -> dict[str, float]:
    """mAP@k, Prec@k and mAP@all as SnMpNet computes them. SnMpNet sorts with numpy's default
    (quicksort, no defined order among ties); `sort_kind="stable"` is the slice rule of §7.1."""
    sim = np.exp(-cdist(q.astype(np.float64), g.astype(np.float64), metric="euclidean"))
    rel = ql[:, None] == gl[None, :]
    ap_k, prec_k, ap_all = [], [], []
    for i in range(len(ql)):
        top = np.argsort(-sim[i], kind=sort_kind)[:k]
        ap_k.append(sk_ap(rel[i, top], sim[i, top]))
        prec_k.append(rel[i, top].sum() / min(k, len(top)))
        ap_all.append(sk_ap(rel[i], sim[i]))
    return {f"mAP@{k}": float(np.mean(ap_k)), f"Prec@{k}": float(np.mean(prec_k)), "mAP@all": float(np.mean(ap_all))}


def underflow_share(q, g) -> tuple[float, np.ndarray]:
    d = cdist(q.astype(np.float64), g.astype(np.float64))
    return float((np.exp(-d) == 0).mean()), d


@pytest.fixture
def snmpnet_files(tmp_path):
    # 180 gallery items: the top-200 slice is the whole row, so SnMpNet's unstable sort cannot matter
    q, ql, g, gl = raw_features(0, 60, 180, spread=0.3, noise=0.52)
    paths = {}
    for name, arr in {"q": q, "ql": ql, "g": g, "gl": gl}.items():
        paths[name] = str(tmp_path / f"{name}.npy")
        np.save(paths[name], arr)
    return (q, ql, g, gl), paths


def test_cli_exp_neg_euclidean_sklearn_reproduces_snmpnet(snmpnet_files, capsys):
    (q, ql, g, gl), p = snmpnet_files
    share, d = underflow_share(q, g)
    assert 0.15 < share < 0.25  # about a fifth of the scores are exactly 0: one big tie group per row
    assert (d[ql[:, None] == gl[None, :]] > EXP_UNDERFLOW).any()  # relevant items sit in that tie
    args = ["eval-embeddings", "--query", p["q"], "--query-labels", p["ql"], "--gallery", p["g"],
            "--gallery-labels", p["gl"], "--metrics", ",".join(METRICS), "--json"]  # fmt: skip
    assert main([*args, "--similarity", "exp_neg_euclidean", "--tie-mode", "sklearn"]) == 0
    got = json.loads(capsys.readouterr().out)
    want = snmpnet_reference(q, ql, g, gl)
    for name in METRICS:
        assert got[name] == pytest.approx(want[name], abs=1e-6), name
    # ranking by distance alone breaks the underflow ties and gives another number
    assert main([*args, "--distance", "l2", "--tie-mode", "sklearn"]) == 0
    l2 = json.loads(capsys.readouterr().out)
    assert abs(l2["mAP@200"] - want["mAP@200"]) > 1e-3


def test_underflow_tie_straddling_rank_k_uses_the_stable_slice():
    # ~45 % underflow on 300 items: each row's zero-score tie group crosses rank 200
    q, ql, g, gl = raw_features(1, 40, 300, spread=0.3, noise=0.6)
    _, d = underflow_share(q, g)
    zeros = (d > EXP_UNDERFLOW).sum(axis=1)
    assert ((zeros > 100) & (zeros < 300)).mean() > 0.5
    got = evaluate_class_retrieval(q, ql, g, gl, METRICS, similarity="exp_neg_euclidean", tie_mode="sklearn")
    want = snmpnet_reference(q, ql, g, gl, sort_kind="stable")
    for name in METRICS:
        assert got[name] == pytest.approx(want[name], abs=1e-6), name
    # the slice decides: the gallery reversed picks other zero-score items and moves mAP@200
    rev = evaluate_class_retrieval(q, ql, g[::-1].copy(), gl[::-1].copy(), METRICS,
                                   similarity="exp_neg_euclidean", tie_mode="sklearn")  # fmt: skip
    assert rev["mAP@200"] == pytest.approx(snmpnet_reference(q, ql, g[::-1], gl[::-1], sort_kind="stable")["mAP@200"],
                                           abs=1e-6)  # fmt: skip
    assert abs(rev["Prec@200"] - got["Prec@200"]) > 1e-3  # why §7.1 asks for both tie modes here
    assert rev["mAP@all"] == pytest.approx(got["mAP@all"], abs=1e-12)  # sklearn over the whole row: order-free
