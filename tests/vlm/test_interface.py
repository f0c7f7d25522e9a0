"""The frozen-VLM interface against transformers' own CLIP forward and the hook contracts."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from xdomain_bench.errors import BackboneError, ConfigError
from xdomain_bench.vlm import load_backbone


def _pixels(vlm, n=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    s = vlm.sizes.image_size
    return torch.randn(n, 3, s, s, generator=g)


def _hf_image(vlm, x):
    out = vlm.clip.get_image_features(pixel_values=x)
    return getattr(out, "pooler_output", out)


def _hf_text(vlm, texts):
    tok = vlm.tokenizer(texts, padding=True, return_tensors="pt")
    out = vlm.clip.get_text_features(input_ids=tok["input_ids"], attention_mask=tok["attention_mask"])
    return getattr(out, "pooler_output", out)


def test_plain_paths_match_transformers_forward(tiny_vlm):
    x = _pixels(tiny_vlm)
    torch.testing.assert_close(tiny_vlm.encode_image(x), _hf_image(tiny_vlm, x), rtol=0, atol=1e-5)
    texts = ["a photo of a cat.", "a red striped star with wings", "x"]
    torch.testing.assert_close(tiny_vlm.encode_text(texts), _hf_text(tiny_vlm, texts), rtol=0, atol=1e-5)


def test_sizes_and_scale_match_the_loaded_tensors(tiny_vlm, tmp_path):
    """A saved checkpoint with non-default shapes and a trained-looking logit scale, loaded from its folder:
    every size is read off the weights themselves, and s_clip is exp of the stored scalar."""
    other = load_backbone("tiny-clip:vision_width=96,text_width=40,embed_dim=24,patch_size=4,vision_layers=3,"
                          "text_layers=1,context_length=33")
    with torch.no_grad():
        other.clip.logit_scale.fill_(math.log(42.5))
    other.clip.save_pretrained(tmp_path / "ckpt")
    other.tokenizer.save_pretrained(tmp_path / "ckpt")
    vlm = load_backbone(f"hf-clip:{tmp_path / 'ckpt'}")
    weights = vlm.clip.state_dict()
    patch = weights["vision_model.embeddings.patch_embedding.weight"]  # (W, 3, P, P)
    n_pos = weights["vision_model.embeddings.position_embedding.weight"].shape[0]  # grid² + 1
    s = vlm.sizes
    assert s.vision_width == patch.shape[0] == 96 and s.patch_size == patch.shape[-1] == 4
    assert s.grid**2 + 1 == n_pos and s.image_size == 32
    assert s.text_width == weights["text_model.embeddings.token_embedding.weight"].shape[1] == 40
    assert s.context_length == weights["text_model.embeddings.position_embedding.weight"].shape[0] == 33
    assert s.embed_dim == weights["visual_projection.weight"].shape[0] == weights["text_projection.weight"].shape[0]
    assert s.embed_dim == 24
    assert s.vision_layers == 1 + max(int(k.split(".")[3]) for k in weights if k.startswith("vision_model.encoder.layers."))
    assert s.text_layers == 1 + max(int(k.split(".")[3]) for k in weights if k.startswith("text_model.encoder.layers."))
    assert (s.vision_layers, s.text_layers) == (3, 1)
    assert vlm.logit_scale == pytest.approx(42.5, rel=1e-6)
    assert tiny_vlm.logit_scale == pytest.approx(float(tiny_vlm.clip.state_dict()["logit_scale"].exp()))
    assert vlm.encode_image(_pixels(vlm)).shape == (3, 24)


def test_training_a_prompt_leaves_backbone_bit_identical(tiny_vlm):
    before = {k: v.clone() for k, v in tiny_vlm.state_dict().items()}
    prompts = nn.Parameter(torch.randn(2, tiny_vlm.sizes.vision_width) * 0.02)
    opt = torch.optim.SGD([prompts], lr=1.0)
    x = _pixels(tiny_vlm)
    for _ in range(2):
        loss = tiny_vlm.encode_image(x, prompts=prompts, readout=1).pow(2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert prompts.grad is not None and prompts.grad.abs().sum() > 0
    for name, p in tiny_vlm.named_parameters():
        assert p.grad is None, name
        assert not p.requires_grad, name
    for k, v in tiny_vlm.state_dict().items():
        assert torch.equal(v, before[k]), k
    tiny_vlm.train()
    assert not any(m.training for m in tiny_vlm.modules())


def test_prompts_change_output_and_deep_prompts_act_per_layer(tiny_vlm):
    x = _pixels(tiny_vlm)
    w = tiny_vlm.sizes.vision_width
    plain = tiny_vlm.encode_image(x)
    p = torch.randn(2, w)
    shallow = tiny_vlm.encode_image(x, prompts=p)
    assert not torch.allclose(plain, shallow, atol=1e-4)
    deep = torch.randn(tiny_vlm.sizes.vision_layers - 1, 2, w)
    assert not torch.allclose(shallow, tiny_vlm.encode_image(x, prompts=p, deep_prompts=deep), atol=1e-4)
    # prompts carry no positional embedding, so the CLS readout cannot depend on where they sit
    appended = tiny_vlm.encode_image(x, prompts=p, prompt_position="append")
    torch.testing.assert_close(shallow, appended, atol=1e-5, rtol=0)


def test_prompt_readout_and_pre_proj(tiny_vlm):
    x = _pixels(tiny_vlm)
    p = torch.randn(2, tiny_vlm.sizes.vision_width)
    out = tiny_vlm.encode_image(x, prompts=p, readout=1, pre_proj=True, return_tokens=True)
    assert out.embedding.shape == (3, tiny_vlm.sizes.vision_width)
    torch.testing.assert_close(out.embedding, tiny_vlm.vision.post_layernorm(out.tokens[:, 1]))
    proj = tiny_vlm.backbone_tensor("proj_v")
    torch.testing.assert_close(tiny_vlm.encode_image(x, prompts=p, readout=1), out.embedding @ proj, atol=1e-5, rtol=0)


class _ZeroAdapter(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.down = nn.Linear(width, 4, bias=False)
        self.up = nn.Linear(4, width, bias=False)
        nn.init.zeros_(self.up.weight)

    def forward(self, h):
        return self.up(torch.nn.functional.gelu(self.down(h)))


def test_zero_initialised_adapters_reproduce_plain_encoder(tiny_vlm):
    x = _pixels(tiny_vlm)
    n, w = tiny_vlm.sizes.vision_layers, tiny_vlm.sizes.vision_width
    qa = [_ZeroAdapter(w) for _ in range(n)]
    ka = [_ZeroAdapter(w) for _ in range(n)]
    assert torch.equal(tiny_vlm.encode_image(x, q_adapters=qa, k_adapters=ka), tiny_vlm.encode_image(x))
    nn.init.normal_(qa[0].up.weight)
    assert not torch.allclose(tiny_vlm.encode_image(x, q_adapters=qa, k_adapters=ka), tiny_vlm.encode_image(x))


def test_context_substitution_matches_real_tokens(tiny_vlm):
    """Substituting the embeddings of real words at X X reproduces encoding those words."""
    tok = tiny_vlm.tokenize(["red star"])
    words = tiny_vlm.text.embeddings.token_embedding(tok.ids[0, 1:3])
    with_ctx = tiny_vlm.encode_text(["a photo of a X X."], context=words)
    ref = tiny_vlm.encode_text(["a photo of a red star."])
    torch.testing.assert_close(with_ctx, ref, atol=1e-5, rtol=0)
    per_seq = tiny_vlm.encode_text(["a photo of a X X.", "X X"], context=torch.stack([words, words]))
    torch.testing.assert_close(per_seq[0], ref[0], atol=1e-5, rtol=0)
    with pytest.raises(ConfigError, match="placeholders"):
        tiny_vlm.encode_text(["no placeholder here"], context=words)


def test_token_weights_and_per_token_features(tiny_vlm):
    texts = ["a photo of a cat.", "a red star"]
    tb = tiny_vlm.tokenize(texts)
    ones = torch.ones(tb.ids.shape)
    torch.testing.assert_close(tiny_vlm.encode_text(tb, token_weights=ones), tiny_vlm.encode_text(tb))
    w = ones.clone()
    w[0, 2] = 0.0
    changed = tiny_vlm.encode_text(tb, token_weights=w)
    assert not torch.allclose(changed[0], tiny_vlm.encode_text(tb)[0], atol=1e-5)
    torch.testing.assert_close(changed[1], tiny_vlm.encode_text(tb)[1])
    out = tiny_vlm.encode_text(tb, return_tokens=True)
    assert out.token_features.shape == (*tb.ids.shape, tiny_vlm.sizes.embed_dim)
    rows = torch.arange(len(texts))
    torch.testing.assert_close(out.token_features[rows, tb.eot], out.embedding)
    assert out.mask.sum(1).tolist() == (tb.eot + 1).tolist()


def test_eot_found_by_id(tiny_vlm):
    tb = tiny_vlm.tokenize(["a", "a photo of a cat."])
    assert (tb.ids[torch.arange(2), tb.eot] == tiny_vlm.tokenizer.eos_token_id).all()
    assert tb.eot[0] == 2


def test_attention_map_is_a_distribution_over_patches(tiny_vlm):
    att = tiny_vlm.class_attention_map(_pixels(tiny_vlm))
    g = tiny_vlm.sizes.grid
    assert att.shape == (3, g, g)
    assert (att >= 0).all() and (att.sum((1, 2)) <= 1 + 1e-5).all()


def test_overrides_of_unfrozen_tensors(tiny_vlm):
    x = _pixels(tiny_vlm)
    proj = tiny_vlm.backbone_tensor("proj_v")
    cls = tiny_vlm.backbone_tensor("cls_emb")
    torch.testing.assert_close(tiny_vlm.encode_image(x, proj_v=proj, cls_emb=cls), tiny_vlm.encode_image(x))
    assert not torch.allclose(tiny_vlm.encode_image(x, cls_emb=cls + 1.0), tiny_vlm.encode_image(x))
    with pytest.raises(ConfigError):
        tiny_vlm.backbone_tensor("ln_post")


def test_hf_clip_local_directory_round_trip(tiny_vlm, tmp_path):
    tiny_vlm.clip.save_pretrained(tmp_path)
    tiny_vlm.tokenizer.save_pretrained(tmp_path)
    loaded = load_backbone(f"hf-clip:{tmp_path}")
    x = _pixels(tiny_vlm)
    assert torch.equal(loaded.encode_image(x), tiny_vlm.encode_image(x))
    texts = ["a photo of a cat.", "X X dog"]
    assert torch.equal(loaded.encode_text(texts), tiny_vlm.encode_text(texts))
    assert loaded.spec["weights_sha256"] and len(loaded.spec["weights_sha256"]) == 64


def test_hf_clip_missing_files_are_named(tiny_vlm, tmp_path):
    tiny_vlm.clip.save_pretrained(tmp_path)
    with pytest.raises(BackboneError, match="tokenizer"):
        load_backbone(f"hf-clip:{tmp_path}")
    with pytest.raises(BackboneError, match="not found"):
        load_backbone(f"hf-clip:{tmp_path / 'nope'}")


def test_hub_id_not_in_cache_says_how_to_provide_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(BackboneError) as err:
        load_backbone("hf-clip:openai/clip-vit-base-patch16")
    msg = str(err.value)
    assert "not in the local Hugging Face cache" in msg and "hf-clip:/path/to/dir" in msg and "--allow-download" in msg


@pytest.mark.parametrize("spec,match", [("nonsense", "unknown backbone spec"), ("tiny-clip:width=3", "unknown option"),
                                        ("tiny-clip:seed=x", "integer"), ("hf-clip", "needs a hub id")])
def test_bad_backbone_specs(spec, match):
    with pytest.raises(BackboneError, match=match):
        load_backbone(spec)


def test_seeded_backbone_is_deterministic(tiny_vlm):
    again = load_backbone("tiny-clip")
    assert again.spec["weights_sha256"] == tiny_vlm.spec["weights_sha256"]
    other = load_backbone("tiny-clip:seed=1")
    assert other.spec["weights_sha256"] != tiny_vlm.spec["weights_sha256"]
