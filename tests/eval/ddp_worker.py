"""Helper for test_torchmetric: RetrievalMetrics under 2-process DDP (gloo, CPU).

Usage: python ddp_worker.py DATA.npz OUT.json PORT METRICS. Each rank feeds its DistributedSampler
shard (padded with repeats), computes, and rank 0 writes every rank's result and the rows fed.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils.data import DistributedSampler

WORLD = 2


def worker(rank: int, data_path: str, out_path: str, port: str, names: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    from xdomain_bench.eval.torchmetric import RetrievalMetrics

    arrays = np.load(data_path)
    metric = RetrievalMetrics(names.split(","), distance="l2")
    seen = {}
    for role, emb, lab in (("query", arrays["q"], arrays["ql"]), ("gallery", arrays["g"], arrays["gl"])):
        idx = np.array(list(DistributedSampler(range(len(emb)), num_replicas=WORLD, rank=rank, shuffle=False)))
        for batch in np.array_split(idx, 3):
            metric.update(torch.from_numpy(emb[batch]), torch.from_numpy(lab[batch]), torch.from_numpy(batch),
                          is_query=role == "query")  # fmt: skip
        count = torch.tensor([len(idx)])
        dist.all_reduce(count)
        seen[role] = int(count)
    result = {k: v.item() for k, v in metric.compute().items()}
    gathered: list = [None] * WORLD
    dist.all_gather_object(gathered, result)
    if rank == 0:
        with open(out_path, "w") as f:
            json.dump({"results": gathered, "rows_seen": seen}, f)
    dist.barrier()
    dist.destroy_process_group()
    # Every rank is past the barrier and the result is written. Leave without C++ static destructors: gloo's
    # background threads can still be joinable then, and their teardown aborts the process now and then
    # ("terminate called without an active exception"), which would fail the test for a shutdown race.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    mp.spawn(worker, args=tuple(sys.argv[1:5]), nprocs=WORLD, join=True)
