"""eval/distributed.py: strided shares, gathering with padding, count checks; 2-process gloo evaluation
against the same data evaluated in one process."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from xdomain_bench.errors import XBenchError
from xdomain_bench.eval.distributed import StridedSampler, gather_rows, gather_val_store, share_sizes
from xdomain_bench.eval.engine import evaluate_class_retrieval

WORKER = Path(__file__).with_name("dist_eval_worker.py")
sys.path.insert(0, str(WORKER.parent))
from dist_eval_worker import METRICS, make_data  # noqa: E402

N_QUERY, N_GALLERY = 13, 17  # odd: the ranks' shares differ by one, so the gather pads


@pytest.mark.parametrize("n, world", [(13, 2), (17, 3), (2, 4), (0, 2)])
def test_strided_shares_cover_each_index_once(n, world):
    shares = [list(StridedSampler(n, r, world)) for r in range(world)]
    assert sorted(i for s in shares for i in s) == list(range(n))
    assert [len(s) for s in shares] == share_sizes(n, world)
    assert max(share_sizes(n, world)) - min(share_sizes(n, world)) <= 1


def test_one_process_is_the_identity_and_checks_the_count():
    rows = torch.arange(6.0).reshape(3, 2)
    out, counts = gather_rows(rows, 3, "query")
    assert out is rows and counts == [3]
    with pytest.raises(XBenchError, match="embedded 3 query samples but the manifest has 4"):
        gather_rows(rows, 4, "query")
    store = {"val_query": [(rows, torch.tensor([0, 1, 2]), None)]}
    assert gather_val_store(store, {"val_query": 3}) is store


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawn(tmp_path, *extra: str) -> list[dict]:
    out = tmp_path / "report.json"
    proc = subprocess.run([sys.executable, str(WORKER), str(out), str(_free_port()), str(N_QUERY), str(N_GALLERY),
                           *extra], capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.mark.slow  # fresh interpreters under gloo
def test_two_processes_evaluate_each_sample_once_and_match_one(tmp_path):
    ranks = _spawn(tmp_path)
    q, ql, g, gl, weights = make_data(N_QUERY, N_GALLERY)
    one = evaluate_class_retrieval(q @ weights, ql, g @ weights, gl, METRICS, distance="l2")  # one process
    for rank, res in enumerate(ranks):
        assert "error" not in res, res.get("error")
        # each rank embedded exactly its strided share, and together they embedded every sample once
        assert res["seen"] == {"query": list(range(rank, N_QUERY, 2)), "gallery": list(range(rank, N_GALLERY, 2))}
        assert res["per_rank"] == {"query": [7, 6], "gallery": [9, 8]}
        # gathered back in manifest order, identical on every rank
        torch.testing.assert_close(torch.tensor(res["query"]), q @ weights, rtol=0, atol=0)
        torch.testing.assert_close(torch.tensor(res["gallery"]), g @ weights, rtol=0, atol=0)
        assert res["q_lab"] == ql.tolist() and res["g_lab"] == gl.tolist()
        assert res["metrics"] == one
        assert res["val_equal"] and res["val_captions"] == [f"cap{i}" for i in range(N_QUERY)]


@pytest.mark.slow
def test_a_lost_sample_fails_on_every_rank(tmp_path):
    ranks = _spawn(tmp_path, "drop")
    for res in ranks:
        assert res["error"] == ("ranks embedded [7, 5] query samples (total 12), but the manifest's 13 split over "
                                "2 ranks is [7, 6]; the evaluation must see every sample exactly once")
