"""Wall time of one training step of each method against a zero-shot forward pass on the same batch.

Usage: python benchmarks/perf/bench_step_cost.py [--backbone tiny-clip] [--dataset domainnet] [--root DIR]
       [--batch 32] [--repeats 5] [--methods m1,m2]
Writes a synthetic tiny tree when --root is not given. Ratios are measured in the same process, so they
compare methods on equal terms; absolute times depend on the machine and its load. Every method and phase with
trainable tensors is timed; one that cannot take a step fails the benchmark. The last line is
``RESULT step_cost_<method>_<phase>=<step time / zero-shot forward time> ...``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    from xdomain_bench.data.base import get_dataset
    from xdomain_bench.data.datamodule import RetrievalDataModule
    from xdomain_bench.methods.base import get_method_class, method_names
    from xdomain_bench.methods.config import resolve_config
    from xdomain_bench.vlm import load_backbone

    ap = argparse.ArgumentParser()
    ap.add_argument("--backbone", default="tiny-clip")
    ap.add_argument("--dataset", default="domainnet")
    ap.add_argument("--root")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--methods")
    args = ap.parse_args()
    torch.manual_seed(0)
    root = args.root or tempfile.mkdtemp(prefix="bench_step_")
    if not args.root:
        get_dataset(args.dataset).synth(root, scale="tiny", seed=0)
    vlm = load_backbone(args.backbone)
    dm = RetrievalDataModule(args.dataset, root, preprocess=vlm.preprocess, batch_size=args.batch)
    dm.setup()
    batch = next(iter(dm.train_dataloader()))
    names = args.methods.split(",") if args.methods else method_names()
    zs = get_method_class("zero_shot")(vlm, dm.info, resolve_config("zero_shot", dataset=args.dataset))
    zs.eval()

    def zero_shot_forward():
        with torch.no_grad():
            zs.embed_images(batch)

    t_zs = timed(zero_shot_forward, args.repeats)
    print(f"backbone {args.backbone}, dataset {args.dataset}, batch {batch['pixels'].shape[0]}, "
          f"threads {torch.get_num_threads()}")
    print(f"zero-shot forward: {t_zs * 1000:.1f} ms")
    ratios: dict[str, float] = {}
    for name in names:
        if name == "zero_shot":
            continue
        method = get_method_class(name)(vlm, dm.info, resolve_config(name, dataset=args.dataset))
        for phase in method.phases():
            method.set_phase(phase)
            params = [p for p in method.parameters() if p.requires_grad]
            if not params:
                continue
            opt = torch.optim.Adam(params, lr=1e-4)
            method.train()

            def step(method=method, opt=opt):
                loss, _ = method.training_loss(batch)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()

            t = timed(step, args.repeats)  # an error here is a bug to see, not a row to skip
            ratios[f"{name}_{phase}"] = t / t_zs
            print(f"{name:14s} {phase:8s} step {t * 1000:8.1f} ms   = {t / t_zs:5.1f} x zero-shot forward")
    print("RESULT " + " ".join(f"step_cost_{key}={r:.2f}" for key, r in ratios.items()))


if __name__ == "__main__":
    main()
