"""Bad input gives one-line InputError/ConfigError messages naming what and how to fix."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from xdomain_bench.errors import ConfigError, InputError
from xdomain_bench.eval.engine import evaluate_class_retrieval, evaluate_scores
from xdomain_bench.eval.ranking import relevant_ranks

Q = np.eye(3, 4, dtype=np.float32) + 0.1
G = np.ones((5, 4), dtype=np.float32)
QL, GL = np.array([0, 1, 0]), np.array([0, 1, 1, 0, 2])


def run(**kw):
    args = dict(query=Q, query_labels=QL, gallery=G, gallery_labels=GL, metrics=["mAP@all"])
    args.update(kw)
    return evaluate_class_retrieval(**args)


@pytest.mark.parametrize(
    ("kw", "pattern"),
    [
        ({"query": np.where(np.arange(4) == 2, np.nan, Q)}, "query embeddings contains NaN in row 0"),
        ({"gallery": np.vstack([G, [[np.inf, 0, 0, 0]]]), "gallery_labels": np.append(GL, 1)}, "inf in row 5"),
        ({"query": Q[0]}, "must be 2-D"),
        ({"gallery": G[:, :3]}, "query dim 4 != gallery dim 3"),
        ({"query_labels": QL[:2]}, "query labels has 2 entries but there are 3 embedding rows"),
        ({"gallery_labels": GL.reshape(5, 1)}, "gallery labels must be 1-D"),
        ({"gallery_labels": GL.astype(float)}, "integer or string labels"),
        ({"query_labels": np.array(["a", "b", "a"])}, "same kind"),
        ({"query": np.zeros((3, 4), np.float32)}, "zero norm"),
        ({"query": np.empty((0, 4), np.float32), "query_labels": QL[:0]}, "is empty"),
        ({"query": "embeddings.npy"}, "torch.Tensor or numpy array"),
        ({"same_set": True}, "same_set=True means query row i is gallery row i"),
    ],
)
def test_input_errors(kw, pattern):
    with pytest.raises(InputError, match=pattern) as info:
        run(**kw)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("kw", "pattern"),
    [
        ({"distance": "dot"}, "unknown distance 'dot'; choose one of: cosine, l2"),
        ({"tie_mode": "random"}, "unknown tie_mode"),
        ({"chunk_size": 0}, "chunk_size must be a positive integer"),
        ({"metrics": ["mAP@200", "nDCG@10"]}, "unknown metric 'nDCG@10'"),
    ],
)
def test_option_errors(kw, pattern):
    with pytest.raises(ConfigError, match=pattern):
        run(**kw)


def test_nan_scores_raise():
    scores = np.zeros((2, 3))
    scores[1, 2] = np.nan
    with pytest.raises(InputError, match="NaN or inf in query row 1"):
        evaluate_scores(scores, [0, 1], [0, 1, 1], ["mAP@all"])


@pytest.mark.parametrize("similarity", ["neg_sq_euclidean", "exp_neg_euclidean"])
def test_float32_extreme_embeddings_score_in_float64(similarity):
    # |q - g|^2 = 3.6e77 overflowed the old float32 score block (inf - inf = NaN); float64 holds it exactly
    q = torch.tensor([[3e38, 0.0]])
    g = torch.tensor([[-3e38, 0.0], [3e38, 0.0], [3e38, 1.0]])
    got = evaluate_class_retrieval(q, [0], g, [0, 1, 0], ["mAP@all", "Prec@1"], similarity=similarity)
    # ranking: g1 (distance 0), g2 (distance 1), g0 (distance 6e38): relevant at ranks 2 and 3
    assert got["mAP@all"] == pytest.approx((1 / 2 + 2 / 3) / 2, abs=1e-15)
    assert got["Prec@1"] == 0.0 and got["n_queries_no_hit@1"] == 1


@pytest.mark.parametrize("backend", ["search", "sort"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_ranking_backends_reject_non_finite_scores(backend, bad):
    S = torch.tensor([[0.5, 0.1, 0.2], [0.3, 0.2, 0.1]])
    rel, valid = torch.tensor([[0, 1], [0, 2]]), torch.ones(2, 2, dtype=torch.bool)
    codes = np.array([0, 0, 0])
    relevant_ranks(S.clone(), rel, valid, 3, codes, np.array([0, 0]), backend=backend)  # finite: fine
    S[1, 1] = bad
    with pytest.raises(InputError, match="not finite .NaN or inf. in query row 1"):
        relevant_ranks(S, rel, valid, 3, codes, np.array([0, 0]), backend=backend)
    S[1, 1] = float("-inf")  # one -inf per row is allowed when it is the excluded self
    S[0, 0] = float("-inf")
    relevant_ranks(S, rel, valid, 3, codes, np.array([0, 0]), backend=backend, n_excluded=1)


def test_same_set_single_row_has_no_candidates():
    scores = np.ones((1, 1))
    got = evaluate_scores(scores, [0], [0], ["mAP@all", "Prec@5"], same_set=True)
    assert got["n_queries_no_relevant"] == 1 and got["mAP@all"] == 0.0 and got["Prec@5"] == 0.0
