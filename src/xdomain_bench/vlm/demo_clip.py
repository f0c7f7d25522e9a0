"""`demo-clip`: a small CLIP that the suite pretrains on its own synthetic world, then caches.

Contrastive image-caption pretraining on fresh renders of every synthetic class, in the source
domains only (real, clipart, painting; photo), so that zero-shot retrieval works and the held-out
domains (sketch, quickdraw, infograph) remain a real domain shift. Deterministic by seed; cached under
the user cache directory keyed by the hash of its config.
"""

from __future__ import annotations

import contextlib
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
from ..progress import bar
from .backends import BACKENDS, tiny_clip_config
from .preprocess import CLIP_MEAN, CLIP_STD

VERSION = 5  # bump when pretraining changes in a way the config does not show
DOMAIN_WORDS = {"real": "photo", "photo": "photo", "clipart": "clipart", "painting": "painting"}


@dataclass(frozen=True)
class DemoClipConfig:
    """Everything that determines the weights; its hash names the cache folder."""

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
    per_class_domain: int = 12  # pretraining renders per (class, source domain)
    steps: int = 400
    batch_size: int = 128  # images per step: batch_size / 2 classes, two renders each (two domains if it has them)
    lr: float = 2e-3
    warmup: int = 40
    weight_decay: float = 0.05
    image_loss: float = 0.5  # weight of the image-image class-contrastive term (0: image-text only)
    paired: int = 1  # 1: class-paired batches (see batch_size); 0: uniform over the pool
    attribute_captions: float = 0.5  # share of captions naming a random subset of attributes instead of the class
    scene_captions: float = 0.25  # share of the rest describing that one render: class, size, place, background
    prompt_noise: float = 0.5  # share of captions (and of image batches) given 1..prompt_tokens random tokens
    prompt_tokens: int = 16  # most random tokens inserted (prompt-slot noise, see `PromptNoise`)
    threads: int = 2  # torch CPU threads: the weights depend on it, so it is part of the config (and its hash)

    def key(self) -> str:
        blob = json.dumps({"version": VERSION, **asdict(self)}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


# `demo-clip:quick`: a smaller, shorter-trained config for the quick check (`xbench demo --quick`); it pretrains
# in seconds on one thread. Cached apart from the full config (its own hash); weak, but enough to exercise the path.
PRESETS = {"quick": {"image_size": 32, "vision_width": 64, "vision_layers": 2, "text_width": 64, "text_layers": 2,
                     "embed_dim": 64, "per_class_domain": 1, "steps": 60, "batch_size": 64, "warmup": 10,
                     "threads": 1}}


def captions_for(display: str, describe: str, domain: str) -> list[str]:
    word = DOMAIN_WORDS[domain]
    return [f"a {word} of a {display}, a {describe}.", f"a {word} of a {display}.", f"a {display}, a {describe}.",
            f"a photo of a {display}."]


def render_pool(cfg: DemoClipConfig, log=print) -> tuple[torch.Tensor, list[int], list[str], list[list[str]], list[str]]:
    """Images (uint8, N×3×S×S), class index, domain, candidate class captions and a scene caption per image."""
    from ..data.synth.catalog import appearance_catalog
    from ..data.synth.fdrd import scene_caption, scene_words
    from ..data.synth.objects import render

    catalog = appearance_catalog()
    rng = np.random.default_rng(cfg.seed)
    images, labels, domains, captions, scenes = [], [], [], [], []
    t0 = time.perf_counter()
    for ci, entry in enumerate(catalog):
        for domain in entry.domains:
            for _ in range(cfg.per_class_domain):
                img, box = render(entry.spec, domain, rng, size=64)
                scenes.append(scene_caption(entry.display, entry.spec.describe(), scene_words(box, img, 64),
                                            DOMAIN_WORDS[domain]))
                if cfg.image_size != 64:
                    img = img.resize((cfg.image_size, cfg.image_size), Image.BICUBIC)
                images.append(np.asarray(img, dtype=np.uint8).transpose(2, 0, 1))
                labels.append(ci)
                domains.append(domain)
                captions.append(captions_for(entry.display, entry.spec.describe(), domain))
    log(f"rendered {len(images)} pretraining images of {len(catalog)} classes in {time.perf_counter() - t0:.0f} s")
    return torch.from_numpy(np.stack(images)), labels, domains, captions, scenes


class BatchSampler:
    """Seeded batches: uniform over the pool, or class-paired (two renders per class, two domains if it has them)."""

    def __init__(self, labels: list[int], domains: list[str], cfg: DemoClipConfig) -> None:
        self.cfg, self.n = cfg, len(labels)
        self.gen = torch.Generator().manual_seed(cfg.seed)
        by_class: dict[int, dict[str, list[int]]] = {}
        for i, (c, d) in enumerate(zip(labels, domains)):
            by_class.setdefault(c, {}).setdefault(d, []).append(i)
        self.groups = [list(by_class[c].values()) for c in sorted(by_class)]

    def _pick(self, items: list[int]) -> int:
        return items[int(torch.randint(len(items), (1,), generator=self.gen))]

    def __call__(self) -> torch.Tensor:
        if not self.cfg.paired:
            return torch.randint(self.n, (self.cfg.batch_size,), generator=self.gen)
        classes = torch.randperm(len(self.groups), generator=self.gen)[: self.cfg.batch_size // 2].tolist()
        out = []
        for c in classes:
            groups = self.groups[c]
            order = torch.randperm(len(groups), generator=self.gen).tolist()
            first, second = groups[order[0]], groups[order[-1]]
            out += [self._pick(first), self._pick(second)]
        return torch.tensor(out)


def attribute_caption(spec, domain: str, gen: torch.Generator) -> tuple[str, tuple]:
    """A caption naming a random non-empty subset of the object's attributes, and that subset as a key."""
    names = ["shape", "colour", "pattern"] + (["part"] if spec.part != "none" else [])
    keep = [n for n, u in zip(names, torch.rand(len(names), generator=gen).tolist()) if u < 0.5]
    if not keep:
        keep = [names[int(torch.randint(len(names), (1,), generator=gen))]]
    val = {n: getattr(spec, n) if n in keep else None for n in ("shape", "colour", "pattern", "part")}
    adjectives = " ".join(v for v in (val["colour"], val["pattern"]) if v)
    text = f"a {DOMAIN_WORDS[domain]} of a {adjectives + ' ' if adjectives else ''}{val['shape'] or 'object'}"
    text += f" with {val['part']}." if val["part"] else "."
    return text, (val["shape"], val["colour"], val["pattern"], val["part"])


def caption_matches(keys: list[tuple], labels: list[int], attrs: list[tuple]) -> torch.Tensor:
    """match[i, j]: caption i describes image j (its class, every attribute it names, or that one render)."""
    out = torch.zeros(len(keys), len(labels), dtype=torch.bool)
    for i, key in enumerate(keys):
        if key[0] == "image":
            out[i, i] = True
        elif key[0] == "class":
            out[i] = torch.tensor([c == key[1] for c in labels])
        else:
            out[i] = torch.tensor([all(k is None or k == v for k, v in zip(key, a)) for a in attrs])
    return out


def contrastive_loss(img: torch.Tensor, txt: torch.Tensor, match: torch.Tensor, y: torch.Tensor,
                     scale: torch.Tensor, image_weight: float) -> torch.Tensor:
    """Symmetric image-text cross-entropy with soft targets over every matching pair (+ image-image SupCon
    over same-class pairs, weighted by `image_weight`)."""
    logits = txt @ img.t() * scale  # captions × images
    m = match.float()
    t2i = -(m / m.sum(1, keepdim=True) * logits.log_softmax(1)).sum(1).mean()
    i2t = -(m.t() / m.t().sum(1, keepdim=True) * logits.t().log_softmax(1)).sum(1).mean()
    loss = 0.5 * (t2i + i2t)
    if image_weight > 0:
        eye = torch.eye(len(y), dtype=torch.bool)
        sim = (img @ img.t() * scale).masked_fill(eye, float("-inf"))
        pos = (y[:, None] == y[None, :]) & ~eye
        has = pos.any(1)
        if has.any():
            logp = sim.log_softmax(1).masked_fill(eye, 0.0)
            per = -(logp * pos).sum(1) / pos.sum(1).clamp(min=1)
            loss = loss + image_weight * per[has].mean()
    return loss


TEXT_NOISE_STD = 0.02  # demo-clip's token embeddings have std 0.024; CoOp-style context starts at N(0, 0.02)
VISION_DEEP_NOISE_STD = 0.05  # about the scale of generated deep visual prompts at init (a Linear's bias, ±1/√T)


class PromptNoise:
    """Random tokens in the places where prompt methods put theirs, so that the towers learn to tolerate them.

    Web-scale CLIP has read enough varied text that a few uninformative tokens barely move its features; a small
    CLIP pretrained on templated captions has not. With version 4, untrained CoOp (16 random context vectors in
    front of each caption) scored FDRD RSUM 27 against zero-shot's 188, and untrained DCAR 136; with this noise,
    174 and 185 against 182. A share of the captions starts with a run of placeholder tokens whose embeddings
    are replaced by fresh N(0, 0.02) vectors (the scale of the token embeddings and of CoOp's context init); a
    share of the image batches gets random tokens appended after the patches, before the pre-layer norm, where
    the suite inserts visual prompts; in a share of the steps those slots get fresh noise before every later
    block as well, as deep prompts do. The noise says nothing about any class or caption: all it teaches is to
    pass over tokens that carry no meaning."""

    def __init__(self, model, tokenizer, cfg: DemoClipConfig, gen: torch.Generator) -> None:
        from .frozen import PLACEHOLDER, single_token_id

        self.cfg, self.gen, self.word = cfg, gen, PLACEHOLDER
        self.placeholder_id = single_token_id(tokenizer, PLACEHOLDER)
        self.visual, self.deep = 0, False
        self._text_slots: torch.Tensor | None = None
        model.text_model.embeddings.token_embedding.register_forward_hook(self._text_hook)
        model.vision_model.embeddings.register_forward_hook(self._vision_hook)
        for layer in model.text_model.encoder.layers[1:]:
            layer.register_forward_pre_hook(self._deep_text_hook)
        for layer in model.vision_model.encoder.layers[1:]:
            layer.register_forward_pre_hook(self._deep_vision_hook)

    def _count(self) -> int:
        return int(torch.randint(1, self.cfg.prompt_tokens + 1, (1,), generator=self.gen))

    def captions(self, texts: list[str]) -> list[str]:
        out = []
        for text in texts:
            if self.cfg.prompt_noise and float(torch.rand(1, generator=self.gen)) < self.cfg.prompt_noise:
                text = " ".join([self.word] * self._count() + [text])
            out.append(text)
        return out

    def next_step(self) -> None:
        """Draws this step's visual prompt count (0: none) and whether slots get deep noise."""
        use = self.cfg.prompt_noise and float(torch.rand(1, generator=self.gen)) < self.cfg.prompt_noise
        self.visual = self._count() if use else 0
        self.deep = bool(self.cfg.prompt_noise) and float(torch.rand(1, generator=self.gen)) < self.cfg.prompt_noise

    def _noise(self, x: torch.Tensor, mask: torch.Tensor, std: float) -> torch.Tensor:
        out = x.clone()
        out[mask] = (torch.randn(int(mask.sum()), x.shape[-1], generator=self.gen) * std).to(out)
        return out

    def _text_hook(self, module, inputs, output):
        mask = inputs[0] == self.placeholder_id
        self._text_slots = mask if bool(mask.any()) else None
        return output if self._text_slots is None else self._noise(output, mask, TEXT_NOISE_STD)

    def _deep_text_hook(self, module, args):
        if not self.deep or self._text_slots is None:
            return None
        return (self._noise(args[0], self._text_slots, TEXT_NOISE_STD), *args[1:])

    def _deep_vision_hook(self, module, args):
        if not self.deep or not self.visual:
            return None
        mask = torch.zeros(args[0].shape[:2], dtype=torch.bool)
        mask[:, -self.visual:] = True
        return (self._noise(args[0], mask, VISION_DEEP_NOISE_STD), *args[1:])

    def _vision_hook(self, module, inputs, output):
        if not self.visual:
            return output
        noise = torch.randn(output.shape[0], self.visual, output.shape[-1], generator=self.gen)
        return torch.cat([output, noise.to(output)], dim=1)


def pretrain(cfg: DemoClipConfig, out_dir: Path, log=print) -> dict[str, Any]:
    """Train and save (model, tokenizer, preprocessor config, training log) into `out_dir`."""
    from transformers import CLIPModel

    from ..data.synth.catalog import appearance_catalog
    from ..data.synth.fdrd import SCENE_WORDS
    from .tokenizer import build_clip_tokenizer

    torch.manual_seed(cfg.seed)
    catalog = appearance_catalog()
    words = [e.display for e in catalog] + [e.spec.describe() for e in catalog] + list(SCENE_WORDS)
    tokenizer = build_clip_tokenizer(words + list(DOMAIN_WORDS.values()) + ["object"],
                                     model_max_length=cfg.context_length)
    pool, labels, domains, captions, scenes = render_pool(cfg, log)
    model_cfg = tiny_clip_config({k: getattr(cfg, k) for k in ("image_size", "patch_size", "vision_width",
                                  "vision_layers", "vision_heads", "text_width", "text_layers", "text_heads",
                                  "embed_dim", "context_length")}, len(tokenizer))
    torch.manual_seed(cfg.seed)
    model = CLIPModel(model_cfg).float().train()
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sampler = BatchSampler(labels, domains, cfg)
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    lab = torch.tensor(labels)
    attrs = [(e.spec.shape, e.spec.colour, e.spec.pattern, e.spec.part) for e in catalog]
    noise = PromptNoise(model, tokenizer, cfg, torch.Generator().manual_seed(cfg.seed + 2))
    history, t0 = [], time.perf_counter()
    with bar("pretraining demo-clip", cfg.steps) as shown:  # a progress bar (off under --quiet)
        for step in range(cfg.steps):
            lr = cfg.lr * min(1.0, (step + 1) / cfg.warmup) * 0.5 * (1 + math.cos(math.pi * step / cfg.steps))
            for group in opt.param_groups:
                group["lr"] = lr
            idx = sampler()
            x = pool[idx].float() / 255.0
            flip = torch.rand(len(idx), generator=gen) < 0.5
            x[flip] = x[flip].flip(-1)
            x = (x - mean) / std
            texts, keys = [], []
            for i in idx.tolist():
                if float(torch.rand(1, generator=gen)) < cfg.attribute_captions:
                    text, key = attribute_caption(catalog[labels[i]].spec, domains[i], gen)
                elif cfg.scene_captions and float(torch.rand(1, generator=gen)) < cfg.scene_captions:
                    text, key = scenes[i], ("image", i)
                else:
                    text = captions[i][int(torch.randint(len(captions[i]), (1,), generator=gen))]
                    key = ("class", labels[i])
                texts.append(text)
                keys.append(key)
            batch_labels = [labels[i] for i in idx.tolist()]
            match = caption_matches(keys, batch_labels, [attrs[c] for c in batch_labels])
            noise.next_step()
            tok = tokenizer(noise.captions(texts), padding=True, truncation=True, max_length=cfg.context_length,
                            return_tensors="pt")
            img = F.normalize(_pooled(model.get_image_features(pixel_values=x)), dim=-1)
            txt = F.normalize(_pooled(model.get_text_features(input_ids=tok["input_ids"],
                                                              attention_mask=tok["attention_mask"])), dim=-1)
            loss = contrastive_loss(img, txt, match, lab[idx], model.logit_scale.exp().clamp(max=100), cfg.image_loss)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            shown.update(step + 1, info=f"loss {loss.item():.3f}")
            if step % 50 == 0 or step == cfg.steps - 1:
                history.append({"step": step + 1, "loss": round(loss.item(), 4)})
    log(f"pretrained demo-clip in {time.perf_counter() - t0:.0f} s ({cfg.steps} steps, final loss {loss.item():.3f})")
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


def is_cached(cfg: DemoClipConfig) -> bool:
    return (demo_clip_dir(cfg) / "demo_clip.json").is_file()


@contextlib.contextmanager
def _exclusive(lock_path: Path):
    """An inter-process lock (POSIX flock), so that concurrent runs pretrain a config once."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    with lock_path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def torch_threads(threads: int):
    """Run a block with this many torch CPU threads, restoring the previous count after."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def ensure_demo_clip(cfg: DemoClipConfig, log=print, force: bool = False) -> Path:
    """The cached checkpoint directory, pretraining it first when absent (atomic: temp dir + rename)."""
    target = demo_clip_dir(cfg)
    if is_cached(cfg) and not force:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive(target.parent / f".{cfg.key()}.lock"):
        if is_cached(cfg) and not force:  # another process finished it while we waited
            return target
        log(f"pretraining demo-clip (config {cfg.key()}) into {target}; this happens once")
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=target.parent))
        try:
            with torch_threads(cfg.threads):
                pretrain(cfg, tmp, log)
            if target.exists():
                shutil.rmtree(target)
            tmp.rename(target)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return target


def parse_demo_spec(arg: str) -> DemoClipConfig:
    """`k=v,...` over DemoClipConfig's fields (integers and floats), after an optional preset name
    (`quick`, PRESETS) whose values the pairs override."""
    defaults = asdict(DemoClipConfig())
    values: dict[str, Any] = {}
    for item in filter(None, arg.split(",")):
        if item in PRESETS and not values:
            values.update(PRESETS[item])
            continue
        key, sep, value = item.partition("=")
        if not sep:
            raise BackboneError(f"bad option '{item}' in backbone spec 'demo-clip:{arg}'; write key=value (after "
                                f"an optional preset first: {', '.join(PRESETS)})")
        if key not in defaults:
            raise BackboneError(f"unknown option '{key}' in 'demo-clip:{arg}'; known: {', '.join(sorted(defaults))}")
        kind = type(defaults[key])
        try:
            values[key] = kind(value)
        except ValueError:
            raise BackboneError(f"option '{key}' in 'demo-clip:{arg}' must be {kind.__name__}, got '{value}'") from None
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
