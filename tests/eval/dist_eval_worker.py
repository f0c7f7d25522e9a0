"""Helper for test_distributed: eval/distributed.py under 2-process DDP (gloo, CPU).

Usage: python dist_eval_worker.py OUT.json PORT N_QUERY N_GALLERY [drop]. Each rank embeds its strided share
of a query and a gallery set (integer features through an integer matrix: exact in float32, whatever the
batch), records which sample indices it embedded, gathers, and rank 0 writes the gathered rows, the per-rank
counts, the indices seen and the metrics. With `drop`, rank 1 loses its last query sample: every rank must
then fail the count check, and rank 0 writes the message.
"""

from __future__ import annotations

import json
import os
import sys

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils.data import DataLoader, Dataset

WORLD = 2
METRICS = ["mAP@all", "Prec@5", "R@1"]


def make_data(n_query: int, n_gallery: int):
    gen = torch.Generator().manual_seed(0)
    q = torch.randint(-3, 4, (n_query, 5), generator=gen).float()
    g = torch.randint(-3, 4, (n_gallery, 5), generator=gen).float()
    weights = torch.randint(-2, 3, (5, 4), generator=gen).float()
    return q, torch.randint(0, 3, (n_query,), generator=gen), g, torch.randint(0, 3, (n_gallery,), generator=gen), weights


class Rows(Dataset):
    def __init__(self, x, y) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict:
        return {"x": self.x[i], "class_id": self.y[i], "index": i}


def embedder(weights, seen: list, drop: bool):
    def embed(loader, expected: int):
        embs, labs = [], []
        for batch in loader:
            seen.extend(int(i) for i in batch["index"])
            embs.append(batch["x"] @ weights)
            labs.append(batch["class_id"])
        emb, lab = torch.cat(embs), torch.cat(labs)
        assert emb.shape[0] == expected
        if drop:
            emb, lab = emb[:-1], lab[:-1]
        return emb, lab
    return embed


def worker(rank: int, out_path: str, port: str, n_query: str, n_gallery: str, drop: str = "") -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    from xdomain_bench.errors import XBenchError
    from xdomain_bench.eval.distributed import embed_sharded, gather_val_store
    from xdomain_bench.eval.engine import evaluate_class_retrieval

    q, ql, g, gl, weights = make_data(int(n_query), int(n_gallery))
    seen: dict[str, list] = {"query": [], "gallery": []}
    result: dict = {}
    try:
        query, q_lab, q_ranks = embed_sharded(embedder(weights, seen["query"], drop == "drop" and rank == 1),
                                              DataLoader(Rows(q, ql), batch_size=3), len(q), "query")
        gallery, g_lab, g_ranks = embed_sharded(embedder(weights, seen["gallery"], False),
                                                DataLoader(Rows(g, gl), batch_size=4), len(g), "gallery")
        share = list(range(rank, len(q), WORLD))
        store = {"val_query": [(query[share], q_lab[share], [f"cap{i}" for i in share])]}
        val = gather_val_store(store, {"val_query": len(q)})["val_query"][0]
        result = {"query": query.tolist(), "gallery": gallery.tolist(), "q_lab": q_lab.tolist(),
                  "g_lab": g_lab.tolist(), "per_rank": {"query": q_ranks, "gallery": g_ranks},
                  "val_equal": bool(torch.equal(val[0], query) and torch.equal(val[1], q_lab)),
                  "val_captions": val[2],
                  "metrics": evaluate_class_retrieval(query, q_lab, gallery, g_lab, METRICS, distance="l2")}
    except XBenchError as exc:
        result = {"error": str(exc)}
    result["seen"] = seen
    gathered: list = [None] * WORLD
    dist.all_gather_object(gathered, result)
    if rank == 0:
        with open(out_path, "w") as f:
            json.dump(gathered, f)
    dist.barrier()
    dist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # as ddp_worker.py: no gloo teardown race at exit


if __name__ == "__main__":
    mp.spawn(worker, args=tuple(sys.argv[1:]), nprocs=WORLD, join=True)
