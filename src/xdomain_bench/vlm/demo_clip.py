"""`demo-clip`: a small CLIP that the suite pretrains on its own synthetic world, then caches.

Contrastive image-caption pretraining on fresh renders of every synthetic class, in the source
domains only (real, clipart, painting; photo), so that zero-shot retrieval works and the held-out
domains (sketch, quickdraw, infograph) remain a real domain shift. Deterministic by seed; cached under
the user cache directory keyed by the hash of its config.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..errors import BackboneError
from ..paths import cache_dir
from .backends import BACKENDS, parse_kv, tiny_clip_config
from .preprocess import CLIP_MEAN, CLIP_STD

VERSION = 1
DOMAIN_WORDS = {"real": "photo", "photo": "photo", "clipart": "clipart", "painting": "painting"}


@dataclass(frozen=True)
class DemoClipConfig:
    seed: int = 0
    image_size: int = 48
    patch_size: int = 8
    vision_width: int = 128
    vision_layers: int = 4
    vision_heads: int = 2
    text_width: int = 96
    text_layers: int = 3
    text_heads: int = 2
    embed_dim: int = 96
    context_length: int = 40
    per_class_domain: int = 12
    steps: int = 400
    batch_size: int = 128
    lr: int = 2  # ×1e-3
    warmup: int = 40

    def key(self) -> str:
        blob = json.dumps({"version": VERSION, **asdict(self)}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def captions_for(display: str, describe: str, domain: str) -> list[str]:
    word = DOMAIN_WORDS[domain]
    return [f"a {word} of a {display}, a {describe}.", f"a {word} of a {display}.", f"a {display}, a {describe}.",
            f"a photo of a {display}."]


def render_pool(cfg: DemoClipConfig, log=print) -> tuple[torch.Tensor, list[int], list[list[str]]]:
    """Images (uint8, N×3×S×S), class index per image and candidate captions per image."""
    from ..data.synth.catalog import appearance_catalog
    from ..data.synth.objects import render

    catalog = appearance_catalog()
    rng = np.random.default_rng(cfg.seed)
    images, labels, captions = [], [], []
    t0 = time.perf_counter()
    for ci, entry in enumerate(catalog):
        for domain in entry.domains:
            for _ in range(cfg.per_class_domain):
                img, _ = render(entry.spec, domain, rng, size=64)
                img = img.resize((cfg.image_size, cfg.image_size), Image.BICUBIC)
                images.append(np.asarray(img, dtype=np.uint8).transpose(2, 0, 1))
                labels.append(ci)
                captions.append(captions_for(entry.display, entry.spec.describe(), domain))
    log(f"rendered {len(images)} pretraining images of {len(catalog)} classes in {time.perf_counter() - t0:.0f} s")
    return torch.from_numpy(np.stack(images)), labels, captions


def pretrain(cfg: DemoClipConfig, out_dir: Path, log=print) -> dict[str, Any]:
    """Train and save (model, tokenizer, preprocessor config, training log) into `out_dir`."""
    from transformers import CLIPModel

    from ..data.synth.catalog import appearance_catalog
    from .tokenizer import build_clip_tokenizer

    torch.manual_seed(cfg.seed)
    words = [e.display for e in appearance_catalog()] + [f"{e.spec.describe()}" for e in appearance_catalog()]
    tokenizer = build_clip_tokenizer(words + list(DOMAIN_WORDS.values()), model_max_length=cfg.context_length)
    pool, labels, captions = render_pool(cfg, log)
    model_cfg = tiny_clip_config({k: getattr(cfg, k) for k in ("image_size", "patch_size", "vision_width",
                                  "vision_layers", "vision_heads", "text_width", "text_layers", "text_heads",
                                  "embed_dim", "context_length")}, len(tokenizer))
    torch.manual_seed(cfg.seed)
    model = CLIPModel(model_cfg).float().train()
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr * 1e-3, weight_decay=0.05)
    gen = torch.Generator().manual_seed(cfg.seed)
    lab = torch.tensor(labels)
    history, t0 = [], time.perf_counter()
    for step in range(cfg.steps):
        lr = cfg.lr * 1e-3 * min(1.0, (step + 1) / cfg.warmup) * 0.5 * (1 + math.cos(math.pi * step / cfg.steps))
        for group in opt.param_groups:
            group["lr"] = lr
        idx = torch.randint(len(pool), (cfg.batch_size,), generator=gen)
        x = pool[idx].float() / 255.0
        flip = torch.rand(len(idx), generator=gen) < 0.5
        x[flip] = x[flip].flip(-1)
        x = (x - mean) / std
        choice = torch.randint(4, (len(idx),), generator=gen)
        texts = [captions[i][c] for i, c in zip(idx.tolist(), choice.tolist())]
        tok = tokenizer(texts, padding=True, truncation=True, max_length=cfg.context_length, return_tensors="pt")
        img = F.normalize(_pooled(model.get_image_features(pixel_values=x)), dim=-1)
        txt = F.normalize(_pooled(model.get_text_features(input_ids=tok["input_ids"],
                                                          attention_mask=tok["attention_mask"])), dim=-1)
        logits = img @ txt.t() * model.logit_scale.exp().clamp(max=100)
        y = lab[idx]
        target = (y[:, None] == y[None, :]).float()
        target = target / target.sum(1, keepdim=True)
        loss = 0.5 * (-(target * logits.log_softmax(1)).sum(1).mean() - (target * logits.t().log_softmax(1)).sum(1).mean())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 50 == 0 or step == cfg.steps - 1:
            history.append({"step": step, "loss": round(float(loss), 4)})
            log(f"demo-clip pretraining step {step + 1}/{cfg.steps} loss {float(loss):.3f} "
                f"({time.perf_counter() - t0:.0f} s)")
    model.eval()
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    (out_dir / "preprocessor_config.json").write_text(json.dumps({
        "crop_size": {"height": cfg.image_size, "width": cfg.image_size}, "size": {"shortest_edge": cfg.image_size},
        "image_mean": list(CLIP_MEAN), "image_std": list(CLIP_STD), "resample": 3}))
    info = {"config": asdict(cfg), "key": cfg.key(), "train_seconds": time.perf_counter() - t0, "history": history,
            "images": len(pool), "parameters": sum(p.numel() for p in model.parameters())}
    (out_dir / "demo_clip.json").write_text(json.dumps(info, indent=2))
    return info


def _pooled(out):
    return getattr(out, "pooler_output", out)


def demo_clip_dir(cfg: DemoClipConfig) -> Path:
    return cache_dir() / "demo-clip" / cfg.key()


def ensure_demo_clip(cfg: DemoClipConfig, log=print) -> Path:
    """The cached checkpoint directory, pretraining it first when absent (atomic: temp dir + rename)."""
    target = demo_clip_dir(cfg)
    if (target / "demo_clip.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    log(f"pretraining demo-clip (config {cfg.key()}) into {target}; this happens once")
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=target.parent))
    try:
        pretrain(cfg, tmp, log)
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def parse_demo_spec(arg: str) -> DemoClipConfig:
    defaults = {k: v for k, v in asdict(DemoClipConfig()).items() if isinstance(v, int)}
    values = parse_kv(arg, defaults, {}, f"demo-clip:{arg}")
    return DemoClipConfig(**values)


@BACKENDS.register("demo-clip")
def demo_clip(arg: str = "", allow_download: bool = False):
    from .hf_clip import hf_clip

    cfg = parse_demo_spec(arg)
    try:
        path = ensure_demo_clip(cfg)
    except (OSError, RuntimeError) as exc:
        raise BackboneError(f"could not pretrain or cache demo-clip under {demo_clip_dir(cfg)}: {exc}") from None
    vlm = hf_clip(str(path))
    vlm.spec.update(backend="demo-clip", name=f"demo-clip:{arg}" if arg else "demo-clip", config=asdict(cfg),
                    config_key=cfg.key())
    return vlm
