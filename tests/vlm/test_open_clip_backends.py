"""`open-clip:` and `openai-clip:` backbones against open_clip's own models (tiny random weights, CPU).

The reference for every embedding is open_clip's forward (`encode_image` / `encode_text`), for OpenAI files
open_clip's own OpenAI loader (`build_model_from_openai_state_dict`); tokens come from open_clip's tokenizer."""

from __future__ import annotations

import copy
import hashlib
import json

import pytest
import torch

from xdomain_bench.cli import main
from xdomain_bench.vlm import load_backbone

open_clip = pytest.importorskip("open_clip", reason="open_clip_torch is the optional extra '.[open_clip]'")

TEXTS = ["a photo of a dog.", "A PAINTING of an Airplane, 3 x 4!", "X X X bird", "café — 'quoted' text"]


def tiny_config(quick_gelu: bool, **vision: object) -> dict:
    return {"embed_dim": 16, "quick_gelu": quick_gelu,
            "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 16, **vision},
            "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 4, "layers": 2}}


def register(tmp_path, name: str, cfg: dict) -> None:
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(cfg))
    open_clip.add_model_config(path)


def random_open_clip(name: str, seed: int = 0):
    torch.manual_seed(seed)
    model = open_clip.create_model(name).eval()
    with torch.no_grad():  # move every tensor off its init (biases and norms would otherwise be 0 / 1)
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    """name -> (open_clip model, checkpoint path), for QuickGELU and GELU."""
    root = tmp_path_factory.mktemp("open_clip_tiny")
    out = {}
    for quick in (True, False):
        name = f"xb-test-tiny-{'quickgelu' if quick else 'gelu'}"
        register(root, name, tiny_config(quick))
        model = random_open_clip(name, seed=int(quick))
        path = root / f"{name}.pt"
        torch.save(model.state_dict(), path)
        out[name] = (model, path)
    return out


@pytest.mark.parametrize("name", ["xb-test-tiny-quickgelu", "xb-test-tiny-gelu"])
def test_open_clip_embeddings_equal_open_clips_own(tiny_models, name):
    model, path = tiny_models[name]
    vlm = load_backbone(f"open-clip:{name}:{path}")
    pixels = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        ref_img = model.encode_image(pixels)
        ref_txt = model.encode_text(open_clip.get_tokenizer(name)(TEXTS))
        img, txt = vlm.encode_image(pixels), vlm.encode_text(TEXTS)
    assert torch.allclose(img, ref_img, atol=1e-5, rtol=0) and torch.allclose(txt, ref_txt, atol=1e-5, rtol=0)
    assert vlm.logit_scale == pytest.approx(float(model.logit_scale.detach().exp()), rel=1e-6)
    assert vlm.spec["activation"] == ("quick_gelu" if "quickgelu" in name else "gelu")


def test_activation_matters(tiny_models):
    """The other activation's conversion is measurably wrong: the comparison above can tell them apart."""
    model, path = tiny_models["xb-test-tiny-gelu"]
    vlm = load_backbone(f"open-clip:xb-test-tiny-quickgelu:{path}")  # same shapes, QuickGELU
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert (vlm.encode_image(pixels) - model.encode_image(pixels)).abs().max() > 1e-3


def test_open_clip_record_names_architecture_file_hash_and_preprocessing(tiny_models):
    name = "xb-test-tiny-gelu"
    _, path = tiny_models[name]
    desc = load_backbone(f"open-clip:{name}:{path}").describe()
    assert desc["architecture"] == name and desc["source"] == str(path) and desc["weights_file"] == path.name
    assert desc["weights_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert desc["preprocess"] == {"image_size": 32, "mean": open_clip.OPENAI_DATASET_MEAN,
                                  "std": open_clip.OPENAI_DATASET_STD, "interpolation": "bicubic",
                                  "resize_short_side": None, "resize_mode": "shortest"}


def test_openai_tokenizer_equals_open_clips(tiny_models):
    name = "xb-test-tiny-gelu"
    vlm = load_backbone(f"open-clip:{name}:{tiny_models[name][1]}")
    ref = open_clip.get_tokenizer(name)(TEXTS)
    for text, row in zip(TEXTS, ref):
        assert vlm.tokenizer(text)["input_ids"] == row[row != 0].tolist()


@pytest.fixture(scope="module")
def openai_files(tmp_path_factory):
    """A tiny OpenAI-format checkpoint, as a plain state dict and as a TorchScript archive."""
    root = tmp_path_factory.mktemp("openai_tiny")
    cfg = tiny_config(True, width=128, head_width=64)  # OpenAI's files: heads = width // 64
    cfg["text_cfg"].update(width=64, heads=1)
    register(root, "xb-test-tiny-openai", cfg)
    model = random_open_clip("xb-test-tiny-openai", seed=2)
    with torch.no_grad():  # OpenAI's files hold float16 weights, and open_clip's loader rounds to float16
        for p in model.parameters():
            p.copy_(p.half().float())
    sd = {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    torch.save(sd, root / "ViT-tiny.pt")
    torch.jit.script(copy.deepcopy(model)).save(str(root / "ViT-tiny-jit.pt"))
    from open_clip.model import build_model_from_openai_state_dict

    reference = build_model_from_openai_state_dict(sd, cast_dtype=torch.float32).float().eval()
    return root, reference


@pytest.mark.parametrize("file", ["ViT-tiny.pt", "ViT-tiny-jit.pt"])
def test_openai_file_equals_open_clips_openai_loader(openai_files, file):
    root, reference = openai_files
    vlm = load_backbone(f"openai-clip:{root / file}")
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        img, txt = vlm.encode_image(pixels), vlm.encode_text(TEXTS)
        ref_img, ref_txt = reference.encode_image(pixels), reference.encode_text(open_clip.tokenize(TEXTS))
    assert torch.allclose(img, ref_img, atol=1e-5, rtol=0) and torch.allclose(txt, ref_txt, atol=1e-5, rtol=0)
    assert vlm.spec["weights_sha256"] == hashlib.sha256((root / file).read_bytes()).hexdigest()
    assert vlm.preprocess.image_size == 32 and vlm.preprocess.interpolation == "bicubic"


@pytest.mark.parametrize("backbone", ["open-clip", "openai-clip"])
def test_coop_trains_one_step_and_records_the_backbone(tiny_models, openai_files, synth_domainnet, tmp_path,
                                                       backbone):
    name = "xb-test-tiny-gelu"
    path = tiny_models[name][1] if backbone == "open-clip" else openai_files[0] / "ViT-tiny.pt"
    spec = f"open-clip:{name}:{path}" if backbone == "open-clip" else f"openai-clip:{path}"
    rc = main(["run", "--method", "coop", "--dataset", "domainnet", "--data-root", str(synth_domainnet),
               "--backbone", spec, "--out", str(tmp_path), "--max-steps", "1", "--no-progress"])
    (record,) = [json.loads(p.read_text()) for p in (tmp_path / "records").glob("*.json")]
    assert rc == 0 and record["status"] == "ok", record.get("error")
    assert [p["steps"] for p in record["training"]["phases"]] == [1]
    desc = record["backbone"]
    assert desc["name"] == spec and desc["weights_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert desc["preprocess"]["image_size"] == 32 and desc["preprocess"]["resize_mode"] == "shortest"


@pytest.mark.parametrize("extra, feature", [({"ls_init_value": 0.1}, "layer scale"),
                                            ({"attentional_pool": True}, "attention pooling")])
def test_unsupported_architecture_is_one_error_line(tmp_path, synth_domainnet, capsys, extra, feature):
    name = f"xb-test-unsupported-{next(iter(extra))}"
    register(tmp_path, name, tiny_config(False, **extra))
    model = open_clip.create_model(name)
    torch.save(model.state_dict(), tmp_path / "w.pt")
    rc = main(["run", "--method", "zero_shot", "--dataset", "domainnet", "--data-root", str(synth_domainnet),
               "--backbone", f"open-clip:{name}:{tmp_path / 'w.pt'}", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("xbench: error:") and feature in err[0]


def test_unknown_tag_and_uncached_weights_are_one_line(synth_domainnet, tmp_path, capsys):
    run = ["run", "--method", "zero_shot", "--dataset", "domainnet", "--data-root", str(synth_domainnet), "--out",
           str(tmp_path), "--backbone"]
    assert main([*run, "open-clip:ViT-B-32/no_such_tag"]) == 2
    assert main([*run, "open-clip:ViT-B-32/laion2b_s34b_b79k"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("xbench: error:") for line in err)
    assert "no pretrained tag 'no_such_tag'" in err[0] and "downloads are off" in err[1]


def test_backbones_lists_kinds_and_open_clip_tags(capsys):
    assert main(["backbones", "--arch", "ViT-B-32"]) == 0
    out = capsys.readouterr().out
    for kind in ("tiny-clip", "hf-clip:", "hf-siglip:", "openai-clip:", "open-clip:"):
        assert kind in out
    tags = open_clip.list_pretrained_tags_by_model("ViT-B-32")
    lines = [line.split() for line in out.splitlines() if line.strip().startswith("ViT-B-32/")]
    assert sorted(parts[0] for parts in lines) == sorted(f"ViT-B-32/{t}" for t in tags)
    assert all(parts[1:4] == ["not", "cached", "supported"] for parts in lines)  # an empty test cache
