"""demo-clip: deterministic pretraining, the cache, source domains only, captions, the backend."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace

import pytest
import torch

from xdomain_bench.errors import BackboneError
from xdomain_bench.vlm import demo_clip as dc

# A pretraining config small enough for a unit test (one render per class and source domain, two steps).
TINY = ("image_size=16,patch_size=8,vision_width=32,vision_layers=1,text_width=32,text_layers=1,embed_dim=16,"
        "per_class_domain=1,steps=2,batch_size=8,warmup=1")
HELD_OUT = {"sketch", "quickdraw", "infograph"}


def _weights_sha(path) -> str:
    """SHA-256 over the saved tensors in name order."""
    from safetensors.torch import load_file

    h = hashlib.sha256()
    for name, tensor in sorted(load_file(str(path / "model.safetensors")).items()):
        h.update(name.encode())
        h.update(tensor.contiguous().numpy().tobytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """XBENCH_CACHE pointed at a fresh folder holding the pretrained TINY config."""
    root = tmp_path_factory.mktemp("xbench_cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XBENCH_CACHE", str(root))
        path = dc.ensure_demo_clip(dc.parse_demo_spec(TINY), log=lambda *_: None)
        yield {"root": root, "path": path}


def test_pretraining_is_deterministic_by_seed(cache, tmp_path):
    cfg = dc.parse_demo_spec(TINY)
    again = tmp_path / "again"
    again.mkdir()
    dc.pretrain(cfg, again, log=lambda *_: None)
    assert _weights_sha(again) == _weights_sha(cache["path"])
    other = tmp_path / "seed1"
    other.mkdir()
    dc.pretrain(replace(cfg, seed=1), other, log=lambda *_: None)
    assert _weights_sha(other) != _weights_sha(cache["path"])


def test_cache_hit_reuses_without_retraining(cache, monkeypatch):
    monkeypatch.setenv("XBENCH_CACHE", str(cache["root"]))
    cfg = dc.parse_demo_spec(TINY)
    assert dc.demo_clip_dir(cfg) == cache["path"] and dc.is_cached(cfg)
    before = (cache["path"] / "model.safetensors").stat().st_mtime_ns

    def no_training(*args, **kwargs):
        raise AssertionError("pretrain called on a cache hit")

    monkeypatch.setattr(dc, "pretrain", no_training)
    assert dc.ensure_demo_clip(cfg) == cache["path"]
    assert (cache["path"] / "model.safetensors").stat().st_mtime_ns == before
    info = json.loads((cache["path"] / "demo_clip.json").read_text())
    assert info["key"] == cfg.key() and info["config"]["steps"] == 2


def test_config_hash_names_the_cache_folder():
    a, b = dc.parse_demo_spec(TINY), dc.parse_demo_spec(TINY + ",steps=3")
    assert a.key() != b.key() and a.key() == dc.parse_demo_spec(TINY).key()
    assert dc.demo_clip_dir(a).name == a.key()


def test_failed_pretraining_leaves_no_cache_entry(tmp_path, monkeypatch):
    monkeypatch.setenv("XBENCH_CACHE", str(tmp_path))
    cfg = dc.parse_demo_spec(TINY + ",seed=7")

    def boom(cfg, out_dir, log):
        (out_dir / "partial.bin").write_bytes(b"x")
        raise RuntimeError("interrupted")

    monkeypatch.setattr(dc, "pretrain", boom)
    with pytest.raises(RuntimeError):
        dc.ensure_demo_clip(cfg)
    assert not dc.is_cached(cfg) and not dc.demo_clip_dir(cfg).exists()
    assert not [p for p in (tmp_path / "demo-clip").iterdir() if p.name.startswith(".tmp-")]


def test_pretraining_pool_never_renders_held_out_domains(monkeypatch):
    from xdomain_bench.data.synth import objects
    from xdomain_bench.data.synth.catalog import appearance_catalog

    seen: list[str] = []
    real_render = objects.render

    def spy(spec, domain, rng, size=64):
        seen.append(domain)
        return real_render(spec, domain, rng, size=size)

    monkeypatch.setattr(objects, "render", spy)
    cfg = dc.parse_demo_spec(TINY)
    pool, labels, domains, captions, _ = dc.render_pool(cfg, log=lambda *_: None)
    assert set(seen) == set(domains) == {"real", "clipart", "painting", "photo"}
    assert not set(seen) & HELD_OUT
    catalog = appearance_catalog()
    assert sorted(set(labels)) == list(range(len(catalog)))  # every class of every synthetic dataset
    assert pool.shape == (len(seen), 3, 16, 16) and pool.dtype == torch.uint8


def test_captions_name_the_class_and_its_attributes():
    from xdomain_bench.data.synth.catalog import appearance_catalog

    cfg = dc.parse_demo_spec(TINY)
    catalog = appearance_catalog()
    _, labels, domains, captions, _ = dc.render_pool(cfg, log=lambda *_: None)
    for i in range(0, len(labels), 97):
        entry = catalog[labels[i]]
        assert all(entry.display in c for c in captions[i])
        assert any(entry.spec.describe() in c for c in captions[i])
        assert any(dc.DOMAIN_WORDS[domains[i]] in c for c in captions[i])
    carrier = next(e for e in catalog if e.class_name == "aircraft_carrier")
    text = dc.captions_for(carrier.display, carrier.spec.describe(), "painting")[0]
    assert "aircraft carrier" in text and "painting" in text
    assert all(word in text for word in carrier.spec.attributes())


def test_scene_captions_match_their_own_render_only():
    keys = [("image", 5), ("class", 1), ("image", 9)]
    match = dc.caption_matches(keys, [1, 1, 2], [("circle", "red", "plain", "none")] * 3)
    assert match.tolist() == [[True, False, False], [True, True, False], [False, False, True]]


def test_vocabulary_spells_every_word_of_a_synthetic_fdrd_caption(cache, tmp_path):
    """Scene captions teach the words FDRD's captions use (size, place, background): each is one token."""
    from transformers import CLIPTokenizer

    from xdomain_bench.data.synth.fdrd import write_synth

    tok = CLIPTokenizer.from_pretrained(str(cache["path"]))
    root = write_synth(tmp_path, "tiny", seed=0)
    entries = json.loads((root / "test" / "pets_test.json").read_text())
    words = {w for e in entries.values() for w in e["positive"].lower().replace("-", " ").replace(",", " ")
             .replace(".", " ").replace("_", " ").split()}
    assert {"background", "at", "small", "top"} <= words  # the scene words are there to check
    for word in sorted(words):
        assert len(tok.tokenize(word)) == 1, word


def test_backend_loads_through_the_frozen_interface(cache, monkeypatch):
    from xdomain_bench.vlm import load_backbone

    monkeypatch.setenv("XBENCH_CACHE", str(cache["root"]))
    vlm = load_backbone(f"demo-clip:{TINY}")
    cfg = dc.parse_demo_spec(TINY)
    assert vlm.spec["backend"] == "demo-clip" and vlm.spec["config_key"] == cfg.key()
    assert vlm.spec["weights_sha256"] and vlm.sizes.image_size == 16 and vlm.sizes.embed_dim == 16
    assert all(not p.requires_grad for p in vlm.parameters())
    emb = vlm.encode_image(torch.zeros(2, 3, 16, 16))
    assert emb.shape == (2, 16)
    assert vlm.encode_text(["a photo of a aircraft carrier."]).shape == (1, 16)
    for word in ("aircraft", "carrier", "albatross", "checkered"):  # class names and attributes: one token each
        assert len(vlm.tokenizer.tokenize(word)) == 1, word


@pytest.mark.parametrize("spec, message", [("demo-clip:bogus=1", "unknown option 'bogus'"),
                                           ("demo-clip:steps=many", "must be int"),
                                           ("demo-clip:steps", "write key=value")])
def test_bad_spec_is_one_clear_error(spec, message):
    from xdomain_bench.vlm import load_backbone

    with pytest.raises(BackboneError, match=message):
        load_backbone(spec)


def test_pretrain_demo_command_reports_the_cache(cache, monkeypatch, capsys):
    from xdomain_bench.cli import main

    monkeypatch.setenv("XBENCH_CACHE", str(cache["root"]))
    assert main(["pretrain-demo", "--config", TINY]) == 0
    out = capsys.readouterr().out
    assert "is cached in" in out and dc.parse_demo_spec(TINY).key() in out
    assert f"demo-clip:{TINY}" in out.replace("\n", "")


def _noisy_model(prompt_noise: float, **extra):
    """A seeded two-layer CLIP with PromptNoise hooks, its tokenizer and the hooks object."""
    from transformers import CLIPModel

    from xdomain_bench.vlm.backends import tiny_clip_config
    from xdomain_bench.vlm.tokenizer import build_clip_tokenizer

    cfg = dc.DemoClipConfig(prompt_noise=prompt_noise, prompt_tokens=3, **extra)
    tokenizer = build_clip_tokenizer(["red circle", "a photo of a"], model_max_length=24)
    sizes = {"image_size": 16, "patch_size": 8, "vision_width": 32, "vision_layers": 2, "vision_heads": 2,
             "text_width": 32, "text_layers": 2, "text_heads": 2, "embed_dim": 16, "context_length": 24}
    torch.manual_seed(0)
    model = CLIPModel(tiny_clip_config(sizes, len(tokenizer))).eval()
    noise = dc.PromptNoise(model, tokenizer, cfg, torch.Generator().manual_seed(0))
    return model, tokenizer, noise


def test_prompt_noise_prefixes_a_share_of_captions_with_placeholders():
    _, _, always = _noisy_model(1.0)
    texts = ["a photo of a red circle."] * 200
    out = always.captions(texts)
    counts = [len(t.split()) - 6 for t in out]
    assert all(t.endswith("a photo of a red circle.") for t in out)
    assert all(t.split()[:c] == ["X"] * c for t, c in zip(out, counts))
    assert set(counts) == {1, 2, 3}  # 1..prompt_tokens, each drawn
    _, _, half = _noisy_model(0.5)
    share = sum(t != texts[0] for t in half.captions(texts)) / len(texts)
    assert 0.35 < share < 0.65
    _, _, never = _noisy_model(0.0)
    assert never.captions(texts) == texts


def test_prompt_noise_replaces_only_placeholder_embeddings():
    model, tokenizer, noise = _noisy_model(1.0)
    ids = tokenizer(["X X a photo of a red circle.", "a red circle."], padding=True, return_tensors="pt")["input_ids"]
    emb = model.text_model.embeddings.token_embedding
    out = emb(ids)
    reference = torch.nn.functional.embedding(ids, emb.weight)  # the table lookup, no hook
    slots = ids == noise.placeholder_id
    assert int(slots.sum()) == 2
    assert torch.equal(out[~slots], reference[~slots])
    assert not torch.allclose(out[slots], reference[slots])
    assert 0.005 < float(out[slots].detach().std()) < 0.05  # CoOp-style N(0, 0.02) context


def test_prompt_noise_appends_visual_tokens_and_overwrites_deep_slots():
    model, tokenizer, noise = _noisy_model(1.0)
    pixels = torch.randn(3, 3, 16, 16)
    noise.visual, noise.deep = 0, False
    plain = model.vision_model.embeddings(pixels)
    noise.visual = 2
    prompted = model.vision_model.embeddings(pixels)
    assert prompted.shape[1] == plain.shape[1] + 2
    assert torch.equal(prompted[:, : plain.shape[1]], plain)

    seen = {}
    layers = model.vision_model.encoder.layers
    layers[0].register_forward_hook(lambda m, a, out: seen.__setitem__("after0", out[0] if isinstance(out, tuple)
                                                                         else out))
    layers[1].register_forward_pre_hook(lambda m, a: seen.__setitem__("into1", a[0]))  # runs after the noise hook
    for deep in (False, True):
        noise.deep = deep
        model.vision_model(pixel_values=pixels)
        after0, into1 = seen["after0"], seen["into1"]
        assert torch.equal(into1[:, :-2], after0[:, :-2])
        assert torch.equal(into1[:, -2:], after0[:, -2:]) is not deep

    tok = tokenizer(["X X X a red circle."], return_tensors="pt")
    slots = tok["input_ids"] == noise.placeholder_id
    text_layers = model.text_model.encoder.layers
    text_layers[0].register_forward_hook(lambda m, a, out: seen.__setitem__("t0", out[0] if isinstance(out, tuple)
                                                                              else out))
    text_layers[1].register_forward_pre_hook(lambda m, a: seen.__setitem__("t1", a[0]))
    for deep in (False, True):
        noise.deep = deep
        model.text_model(**tok)
        assert torch.equal(seen["t1"][~slots], seen["t0"][~slots])
        assert torch.equal(seen["t1"][slots], seen["t0"][slots]) is not deep
