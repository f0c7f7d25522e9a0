"""`hf-siglip:` on a tiny random SiglipModel saved with save_pretrained: embeddings equal transformers' own
`get_image_features` / `get_text_features`; every method runs a step or is n/a with its reason."""

from __future__ import annotations

import json

import pytest
import torch

from xdomain_bench.cli import main
from xdomain_bench.methods.base import METHODS, get_method_class
from xdomain_bench.vlm import load_backbone

TEXTS = ["a photo of a bird", "a red plane in the sky", "X X X flower"]


@pytest.fixture(scope="module")
def siglip_dir(tmp_path_factory):
    from transformers import SiglipConfig, SiglipModel

    from xdomain_bench.vlm.backends import tiny_vocabulary_texts
    from xdomain_bench.vlm.tokenizer import build_clip_tokenizer

    tok = build_clip_tokenizer(tiny_vocabulary_texts(), model_max_length=64)
    ids = dict(pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id)
    cfg = SiglipConfig(
        text_config=dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=64, projection_size=48, **ids),
        vision_config=dict(hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                           image_size=32, patch_size=8))
    torch.manual_seed(0)
    model = SiglipModel(cfg).eval()
    root = tmp_path_factory.mktemp("tiny_siglip")
    model.save_pretrained(root)
    tok.save_pretrained(root)
    (root / "preprocessor_config.json").write_text(json.dumps(
        {"image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "resample": 2,
         "size": {"height": 32, "width": 32}}))
    return root, model


def test_embeddings_equal_transformers_features(siglip_dir):
    root, model = siglip_dir
    vlm = load_backbone(f"hf-siglip:{root}")
    pixels = torch.randn(3, 3, 32, 32)
    ids = vlm.tokenize(TEXTS).ids
    assert ids.shape == (3, 64)  # padded to the full context, as SigLIP was trained
    with torch.no_grad():
        ref_img = model.get_image_features(pixel_values=pixels).pooler_output
        ref_txt = model.get_text_features(input_ids=ids).pooler_output
        img, txt = vlm.encode_image(pixels), vlm.encode_text(TEXTS)
    assert torch.allclose(img, ref_img, atol=1e-5, rtol=0) and torch.allclose(txt, ref_txt, atol=1e-5, rtol=0)
    assert vlm.preprocess.resize_mode == "squash" and vlm.preprocess.interpolation == "bilinear"


def test_attention_map_is_the_pooling_heads_attention(siglip_dir):
    root, model = siglip_dir
    vlm = load_backbone(f"hf-siglip:{root}")
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        states = model.vision_model(pixel_values=pixels).last_hidden_state  # after post_layernorm
        head = model.vision_model.head
        _, ref = head.attention(head.probe.expand(2, -1, -1), states, states, need_weights=True)
        got = vlm.class_attention_map(pixels)
    assert torch.allclose(got.reshape(2, -1), ref[:, 0], atol=1e-6)


def test_hf_clip_on_a_siglip_checkpoint_is_one_error_line(siglip_dir, synth_domainnet, tmp_path, capsys):
    root, _ = siglip_dir
    rc = main(["run", "--method", "zero_shot", "--dataset", "domainnet", "--data-root", str(synth_domainnet),
               "--out", str(tmp_path), "--backbone", f"hf-clip:{root}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("xbench: error:") and "hf-siglip:" in err[0]


@pytest.mark.slow
def test_every_method_runs_a_step_or_is_na_and_the_leaderboard_says_why(siglip_dir, synth_domainnet, tmp_path):
    from xdomain_bench.vlm.siglip import UNSUPPORTED

    root, _ = siglip_dir
    out = tmp_path / "run"
    get_method_class("zero_shot")  # imports every method module
    for method in sorted(METHODS.names()):
        rc = main(["run", "--method", method, "--dataset", "domainnet", "--data-root", str(synth_domainnet),
                   "--out", str(out), "--backbone", f"hf-siglip:{root}", "--max-steps", "1", "--no-progress"])
        (path,) = sorted((out / "records").glob(f"{method}_domainnet_*.json"))
        rec = json.loads(path.read_text())
        expected = "n/a" if method in UNSUPPORTED else "ok"
        assert rc == 0 and rec["status"] == expected, (method, rec.get("error"))
        if expected == "n/a":
            assert rec["reason"] == UNSUPPORTED[method]
    assert main(["leaderboard", str(out), "--quiet", "--format", "csv,md"]) == 0
    md = (out / "leaderboard.md").read_text()
    assert f"n/a ({UNSUPPORTED['ucdr_adapter']})" in md
