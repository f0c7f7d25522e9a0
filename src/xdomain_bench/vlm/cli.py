"""`xbench pretrain-demo`: pretrain (or find in the cache) the `demo-clip` backbone."""

from __future__ import annotations

import argparse
import json
import time


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pretrain-demo", help="pretrain the demo-clip backbone on the synthetic world (cached)",
                       description="Contrastive image-caption pretraining of the small demo CLIP on fresh renders of "
                                   "every synthetic class in its source domains (real, clipart, painting; photo). "
                                   "The result is cached under the user cache directory (XBENCH_CACHE overrides "
                                   "it), keyed by the hash of its config; a cached backbone is reused.")
    p.add_argument("--seed", type=int, default=0, help="pretraining seed (default 0)")
    p.add_argument("--config", default="", metavar="K=V,...",
                   help="other config fields, as in the backbone spec demo-clip:K=V,... (e.g. steps=100, threads=4)")
    p.add_argument("--force", action="store_true", help="pretrain again even when the cache holds this config")
    p.set_defaults(func=pretrain_demo_command)
    b = sub.add_parser("backbones", help="list the backbone backends and open_clip's architectures and tags",
                       description="The backend kinds a --backbone spec can name and, when open_clip_torch is "
                                   "installed, every architecture/tag open_clip knows: whether the interface "
                                   "supports the architecture and whether the weights are in the local cache.")
    b.add_argument("--arch", default="", metavar="TEXT", help="only open_clip architectures containing TEXT")
    b.add_argument("--cached", action="store_true", help="only open_clip weights present in the local cache")
    b.set_defaults(func=backbones_command)


def demo_spec(seed: int, config: str = "") -> str:
    """The backbone spec naming a demo-clip config (`demo-clip` for the default one)."""
    items = [item for item in config.split(",") if item]
    if seed != 0:
        items.insert(0, f"seed={seed}")
    return "demo-clip:" + ",".join(items) if items else "demo-clip"


def pretrain_demo_command(args: argparse.Namespace) -> int:
    from rich.console import Console

    from .demo_clip import demo_clip_dir, ensure_demo_clip, parse_demo_spec

    console = Console()
    spec = demo_spec(args.seed, args.config)
    cfg = parse_demo_spec(spec.partition(":")[2])
    target = demo_clip_dir(cfg)
    cached = (target / "demo_clip.json").is_file()
    if cached and not args.force:
        console.print(f"demo-clip (config {cfg.key()}) is cached in {target}; --force pretrains it again")
    else:
        t0 = time.perf_counter()
        ensure_demo_clip(cfg, log=console.print, force=args.force)
        console.print(f"pretrained demo-clip in {time.perf_counter() - t0:.0f} s")
    info = json.loads((target / "demo_clip.json").read_text())
    console.print(f"backbone spec: {spec}  ({info['parameters'] / 1e6:.1f} M parameters, {info['images']} "
                  f"pretraining images, final loss {info['history'][-1]['loss']:.3f})")
    console.print(f"use it with: xbench run --backbone {spec} ...")
    return 0


def backbones_command(args: argparse.Namespace) -> int:
    from rich.console import Console

    from .catalog import backend_lines, open_clip_rows

    console = Console(highlight=False, soft_wrap=True)
    console.print("backends (--backbone SPEC):")
    for spec, what in backend_lines():
        console.print(f"  {spec:<40} {what}")
    rows = open_clip_rows(args.arch)
    if rows is None:
        console.print("open_clip: not installed (pip install '.[open_clip]' lists its architectures and tags)")
        return 0
    rows = [r for r in rows if r["cached"] or not args.cached]
    console.print(f"open_clip architectures/tags ({len(rows)}; spec open-clip:ARCH/TAG):")
    for r in rows:
        console.print(f"  {r['arch'] + '/' + r['tag']:<52} {'cached' if r['cached'] else 'not cached':<11} "
                      f"{'supported' if r['supported'] is True else 'unsupported: ' + r['supported']}")
    return 0
