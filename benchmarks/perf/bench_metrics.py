"""Benchmark of the retrieval metric engine (mAP@200, Prec@200, mAP@all), every path timed in full.

    python benchmarks/perf/bench_metrics.py [--quick] [--queries N] [--gallery N]

Random L2-normalised 512-d float32 embeddings (default 20,000 queries x 60,000 gallery, 45 classes), timed in
the same run, on every query (nothing is extrapolated):

(a) engine:    xdomain_bench.eval.engine.evaluate_class_retrieval (chunked, exact stable ranks);
(b) reference: the ranking of the UCDR/ProS evaluation code: the similarity matrix (chunked matmul), then for
               each query a full stable argsort of its row and AP / precision from the sorted relevance;
(c) faiss:     faiss.IndexFlatIP over the gallery, search(k=200), then mAP@200 and Prec@200 from the top 200
               (a top-k index cannot give mAP@all, which needs every rank; the engine is timed again on the
               two @200 metrics alone for this ratio);
(d) floor:     chunked similarity matmul + top-200 only (no metric at all).

max_abs_diff: (a) against (b) on the same float32 scores (the reference uses the engine's chunked matmul, so the
figure measures ranking and AP arithmetic, not BLAS rounding): the means over all queries, and per query for the
first 50 (one query at a time through `evaluate_scores`). max_abs_diff_faiss: (a) against (c), faiss's own
scores (its BLAS may round differently, so a near-tie can swap). The last line is
``RESULT speedup_vs_reference=<x> speedup_vs_faiss=<y> floor_ratio=<z> matmul_ratio=<m> max_abs_diff=<w>
max_abs_diff_faiss=<v>`` (one line) with speedup = other path's time / engine time, floor_ratio = engine time /
floor time and matmul_ratio = engine time / time of the chunked matmul alone.
Targets (issue 3): speedup_vs_reference >= 10, floor_ratio <= 3, max_abs_diff <= 1e-9.
"""

from __future__ import annotations

import argparse
import os
import time

import faiss
import numpy as np
import torch

from xdomain_bench.eval.engine import evaluate_class_retrieval, evaluate_scores, exact_matmul, matmul_into

METRICS = ("mAP@200", "Prec@200", "mAP@all")
TOPK_METRICS = ("mAP@200", "Prec@200")
K = 200


def make_data(n_query: int, n_gallery: int, dim: int, n_classes: int, seed: int):
    gen = torch.Generator().manual_seed(seed)
    q = torch.nn.functional.normalize(torch.randn(n_query, dim, generator=gen), dim=1)
    g = torch.nn.functional.normalize(torch.randn(n_gallery, dim, generator=gen), dim=1)
    ql = torch.randint(0, n_classes, (n_query,), generator=gen).numpy()
    gl = torch.randint(0, n_classes, (n_gallery,), generator=gen).numpy()
    return q, ql, g, gl


def reference_query(sim: np.ndarray, label: int, gallery_labels: np.ndarray) -> tuple[float, float, float]:
    """mAP@200 (normalisation A), Prec@200 and AP@all of one query: full stable sort of its row."""
    order = np.argsort(-sim, kind="stable")
    rel = (gallery_labels[order] == label).astype(np.float64)
    hits = np.cumsum(rel)
    prec_at = hits / np.arange(1, len(rel) + 1)
    top = rel[:K]
    hk = top.sum()
    ap_k = float((prec_at[:K] * top).sum() / hk) if hk > 0 else 0.0
    prec_k = float(hk / min(K, len(rel)))
    n_rel = rel.sum()
    ap_all = float((prec_at * rel).sum() / n_rel) if n_rel > 0 else 0.0
    return ap_k, prec_k, ap_all


def unit_rows(x: torch.Tensor) -> torch.Tensor:
    """x / |x| row by row, the very operation the engine applies for cosine, so both see identical scores."""
    return x / x.norm(dim=1)[:, None]


def run_reference(q: torch.Tensor, ql: np.ndarray, g: torch.Tensor, gl: np.ndarray, chunk: int) -> np.ndarray:
    """Per-query (mAP@200, Prec@200, AP@all) of every query: cosine similarity in chunks, then one full sort
    per row."""
    q, g = unit_rows(q), unit_rows(g)
    gt = g.t()
    buf = torch.empty(min(chunk, len(q)), len(g))
    out = np.empty((len(q), 3))
    with exact_matmul(q.device):
        for q0 in range(0, len(q), chunk):
            c = min(chunk, len(q) - q0)
            sims = matmul_into(q[q0 : q0 + c], gt, buf[:c]).numpy()
            for i in range(c):
                out[q0 + i] = reference_query(sims[i], ql[q0 + i], gl)
    return out


def run_faiss(q: torch.Tensor, ql: np.ndarray, g: torch.Tensor, gl: np.ndarray) -> dict[str, float]:
    """faiss.IndexFlatIP top-200 search, then mAP@200 (normalisation A) and Prec@200 from those ranks."""
    q, g = unit_rows(q), unit_rows(g)
    index = faiss.IndexFlatIP(g.shape[1])
    index.add(np.ascontiguousarray(g.numpy()))
    _, idx = index.search(np.ascontiguousarray(q.numpy()), K)
    rel = (gl[idx] == ql[:, None]).astype(np.float64)
    hits = rel.sum(1)
    prec_at = np.cumsum(rel, 1) / np.arange(1, K + 1)
    ap = np.divide((prec_at * rel).sum(1), hits, out=np.zeros(len(q)), where=hits > 0)
    return {"mAP@200": float(ap.mean()), "Prec@200": float((hits / min(K, len(gl))).mean())}


def time_floor(q: torch.Tensor, g: torch.Tensor, chunk: int, topk: bool = True) -> float:
    """Chunked matmul + top-200 into reused buffers (the floor); with topk=False the matmul alone."""
    gt = g.t()
    buf = torch.empty(min(chunk, len(q)), len(g))
    vals = torch.empty(buf.shape[0], K)
    idx = torch.empty(buf.shape[0], K, dtype=torch.int64)
    t0 = time.perf_counter()
    with exact_matmul(q.device):
        for q0 in range(0, len(q), chunk):
            c = min(chunk, len(q) - q0)
            matmul_into(q[q0 : q0 + c], gt, buf[:c])  # the engine's own float32 matmul
            if topk:
                torch.topk(buf[:c], K, dim=1, out=(vals[:c], idx[:c]))
    return time.perf_counter() - t0


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def per_query_diff(q: torch.Tensor, ql: np.ndarray, g: torch.Tensor, gl: np.ndarray, ref: np.ndarray,
                   n: int) -> float:
    """Engine vs reference, one query at a time, on the same float32 scores."""
    with exact_matmul(q.device):
        scores = (unit_rows(q[:n]) @ unit_rows(g).t()).numpy()
    diff = 0.0
    for i in range(n):
        one = evaluate_scores(scores[i : i + 1], ql[i : i + 1], gl, METRICS)
        row = reference_query(scores[i], ql[i], gl)
        diff = max(diff, *(abs(one[m] - row[j]) for j, m in enumerate(METRICS)))
    return diff


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (2,000 x 6,000) for a smoke run")
    parser.add_argument("--queries", type=int, default=None)
    parser.add_argument("--gallery", type=int, default=None)
    parser.add_argument("--chunk-size", type=int, default=1024)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    nq, ng = (2_000, 6_000) if args.quick else (20_000, 60_000)
    nq, ng = args.queries or nq, args.gallery or ng
    dim, n_classes = 512, 45
    threads = torch.get_num_threads()
    faiss.omp_set_num_threads(threads)
    print(f"torch {torch.__version__}, faiss {faiss.__version__}, threads={threads}; {nq} queries x {ng} gallery, "
          f"d={dim}, {n_classes} classes, chunk={args.chunk_size}; load average {os.getloadavg()[0]:.2f}")
    q, ql, g, gl = make_data(nq, ng, dim, n_classes, args.seed)
    chunk = args.chunk_size

    evaluate_class_retrieval(q[:64], ql[:64], g, gl, METRICS, chunk_size=chunk)  # warm-up
    engine, t_engine = timed(lambda: evaluate_class_retrieval(q, ql, g, gl, METRICS, chunk_size=chunk))
    print(f"(a) engine:    {t_engine:8.2f} s  " + "  ".join(f"{m}={engine[m]:.6f}" for m in METRICS))
    engine_k, t_engine_k = timed(lambda: evaluate_class_retrieval(q, ql, g, gl, TOPK_METRICS, chunk_size=chunk))
    print(f"(a') engine, @200 metrics only: {t_engine_k:8.2f} s")

    ref, t_ref = timed(lambda: run_reference(q, ql, g, gl, chunk))
    print(f"(b) reference: {t_ref:8.2f} s  " + "  ".join(f"{m}={ref[:, j].mean():.6f}" for j, m in enumerate(METRICS))
          + f"  ({nq} full sorts of {ng} scores)")
    fs, t_faiss = timed(lambda: run_faiss(q, ql, g, gl))
    print(f"(c) faiss:     {t_faiss:8.2f} s  " + "  ".join(f"{m}={fs[m]:.6f}" for m in TOPK_METRICS)
          + "  (IndexFlatIP, search k=200, then the metrics)")
    t_floor = time_floor(q, g, chunk)
    print(f"(d) floor:     {t_floor:8.2f} s  chunked matmul + top-{K} only")
    t_matmul = time_floor(q, g, chunk, topk=False)
    print(f"    matmul alone {t_matmul:6.2f} s: engine / matmul = {t_engine / t_matmul:.2f} (torch.topk can cost more "
          "than the engine's own ranking, so (d) is not always below (a))")

    diff = max(abs(engine[m] - ref[:, j].mean()) for j, m in enumerate(METRICS))
    diff = max(diff, per_query_diff(q, ql, g, gl, ref, min(50, nq)))
    diff_faiss = max(abs(engine_k[m] - fs[m]) for m in TOPK_METRICS)
    print(f"engine vs reference: max abs diff {diff:.3e} (means over {nq} queries; per query for the first 50)")
    print(f"engine vs faiss:     max abs diff {diff_faiss:.3e} (faiss scores its own way; near-ties may swap)")
    print(f"load average at end {os.getloadavg()[0]:.2f} (ratios are measured in one run, on one machine state)")
    print(f"RESULT speedup_vs_reference={t_ref / t_engine:.2f} speedup_vs_faiss={t_faiss / t_engine_k:.2f} "
          f"floor_ratio={t_engine / t_floor:.2f} matmul_ratio={t_engine / t_matmul:.2f} max_abs_diff={diff:.3e} "
          f"max_abs_diff_faiss={diff_faiss:.3e}")


if __name__ == "__main__":
    main()
