"""The torchmetrics wrapper: single process, and 2-process DDP (gloo, CPU) with padded shards."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from xdomain_bench.errors import InputError
from xdomain_bench.eval.engine import evaluate_class_retrieval
from xdomain_bench.eval.torchmetric import RetrievalMetrics

NAMES = ["mAP@5", "mAP@all", "Prec@5", "R@1", "MAP@R", "R-Precision"]
WORKER = Path(__file__).with_name("ddp_worker.py")


def data(seed: int = 0):
    rng = np.random.default_rng(seed)
    q = rng.integers(-2, 3, (13, 6)).astype(np.float32)  # integer rows: exact float32 ties
    g = rng.integers(-2, 3, (29, 6)).astype(np.float32)
    q[np.abs(q).sum(1) == 0, 0] = 1
    g[np.abs(g).sum(1) == 0, 0] = 1
    return q, rng.integers(0, 3, 13), g, rng.integers(0, 3, 29)


def as_floats(result: dict) -> dict:
    return {k: v.item() for k, v in result.items()}


def test_shuffled_batches_with_duplicates_equal_the_engine():
    q, ql, g, gl = data()
    metric = RetrievalMetrics(NAMES, distance="l2")
    rng = np.random.default_rng(1)
    for role, emb, lab in (("q", q, ql), ("g", g, gl)):
        idx = np.concatenate([rng.permutation(len(emb)), [0, 3]])  # two padded repeats
        for batch in np.array_split(idx, 4):
            metric.update(torch.from_numpy(emb[batch]), torch.from_numpy(lab[batch]), torch.from_numpy(batch),
                          is_query=role == "q")  # fmt: skip
    want = evaluate_class_retrieval(q, ql, g, gl, NAMES, distance="l2")
    got = as_floats(metric.compute())
    assert got == want
    assert isinstance(metric.compute()["n_queries"].item(), int)


def test_same_set_mode():
    _, _, g, gl = data(2)
    metric = RetrievalMetrics(NAMES, same_set=True)
    metric.update(torch.from_numpy(g[10:]), torch.from_numpy(gl[10:]), torch.arange(10, 29))
    metric.update(torch.from_numpy(g[:10]), torch.from_numpy(gl[:10]), torch.arange(10))
    assert as_floats(metric.compute()) == evaluate_class_retrieval(g, gl, g, gl, NAMES, same_set=True)
    with pytest.raises(InputError, match="is_query=True"):
        metric.update(torch.from_numpy(g), torch.from_numpy(gl), torch.arange(29), is_query=False)


@pytest.mark.filterwarnings("ignore:The ``compute`` method")
def test_wrapper_errors():
    metric = RetrievalMetrics(["mAP@all"])
    with pytest.raises(InputError, match="no query embeddings"):
        metric.compute()
    with pytest.raises(InputError, match="labels must be a 1-D integer tensor with 2 entries"):
        metric.update(torch.ones(2, 3), torch.ones(2), torch.arange(2))
    metric.update(torch.ones(2, 3), torch.tensor([0, 1]), torch.tensor([0, 0]))
    metric.update(torch.ones(1, 3), torch.tensor([0]), torch.tensor([0]), is_query=False)
    with pytest.raises(InputError, match="repeat with different labels"):
        metric.compute()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # three fresh interpreters importing torch + torchmetrics: > 20 s on the shared 2-core box
def test_ddp_two_processes_count_each_sample_once(tmp_path):
    q, ql, g, gl = data(3)
    np.savez(tmp_path / "data.npz", q=q, ql=ql, g=g, gl=gl)
    out = tmp_path / "result.json"
    proc = subprocess.run(
        [sys.executable, str(WORKER), str(tmp_path / "data.npz"), str(out), str(free_port()), ",".join(NAMES)],
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    # 13 queries and 29 gallery rows over 2 ranks: DistributedSampler pads each role by one duplicate
    assert report["rows_seen"] == {"query": 14, "gallery": 30}
    want = evaluate_class_retrieval(q, ql, g, gl, NAMES, distance="l2")
    for rank_result in report["results"]:
        assert rank_result == want
