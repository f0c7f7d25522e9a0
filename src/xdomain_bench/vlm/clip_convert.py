"""OpenAI / open_clip CLIP weights -> a transformers CLIPModel, where the two architectures match exactly.

OpenAI's release files and open_clip's own ViT + text-transformer CLIP share one state-dict layout
(`visual.conv1.weight`, `visual.transformer.resblocks.N.attn.in_proj_weight`, `token_embedding.weight`, ...).
That model is transformers' CLIP block for block: pre-norm residual blocks, a class token read out after
`ln_post`, bias-free projections, EOT pooling of a causal text tower. Only the activation differs between
checkpoints (QuickGELU for OpenAI's, GELU for most open_clip ones), and it is a config field. Anything
else (layer scale, attention pooling, extra norms, a timm or HF tower) is refused, naming the difference.
"""

from __future__ import annotations

import re
from typing import Any

import torch
from torch import Tensor

from ..errors import BackboneError

# keys that carry no weights the model uses at inference
IGNORED = ("attn_mask", "input_resolution", "context_length", "vocab_size", "logit_bias_unused")
# open_clip state-dict key fragments -> the feature they stand for (refused: not in transformers' CLIP)
UNSUPPORTED_KEYS = (
    ("visual.trunk.", "a timm image tower"), ("transformer.embeddings.", "a Hugging Face text tower"),
    ("visual.attn_pool", "attention pooling"), (".ls_1.", "layer scale"), (".ls_2.", "layer scale"),
    ("ln_attn", "a norm inside attention (NormFormer)"), ("ln_inner", "a norm inside attention"),
    ("head_scale", "per-head attention scale"), ("logit_bias", "a sigmoid-loss logit bias (SigLIP)"),
    ("visual.layer1.", "a ModifiedResNet image tower"), ("text_decoder.", "a caption decoder (CoCa)"),
    ("q_norm", "QK-norm attention"), ("logit_scale_attn", "scaled cosine attention"),
)


def normalize_state_dict(sd: dict[str, Any]) -> dict[str, Tensor]:
    """Unwrap `{'state_dict': ...}`, strip DDP's `module.` and CustomTextCLIP's `text.` prefixes."""
    if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
        sd = sd["state_dict"]
    out: dict[str, Tensor] = {}
    for key, value in sd.items():
        key = key[7:] if key.startswith("module.") else key
        out[key[5:] if key.startswith("text.") else key] = value
    return out


def refuse_unsupported(sd: dict[str, Tensor], name: str) -> None:
    for fragment, feature in UNSUPPORTED_KEYS:
        if any(fragment in key for key in sd):
            raise BackboneError(f"{name} uses {feature}, which transformers' CLIPModel does not have; the "
                                "frozen-VLM interface supports class-token ViT CLIPs (OpenAI ViT-B/32, ViT-B/16, "
                                "ViT-L/14 and open_clip models of that design)")
    if "visual.conv1.weight" not in sd or "token_embedding.weight" not in sd:
        raise BackboneError(f"{name} is not a CLIP ViT state dict in the OpenAI / open_clip layout (no "
                            "visual.conv1.weight or token_embedding.weight); pass a ViT CLIP checkpoint")


def _count(sd: dict[str, Tensor], prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    return len({m.group(1) for key in sd if (m := pattern.match(key))})


def shapes_from_state_dict(sd: dict[str, Tensor]) -> dict[str, Any]:
    """Architecture read off the tensors (heads are not visible: width // 64, as OpenAI builds them)."""
    conv = sd["visual.conv1.weight"]
    v_width, patch = conv.shape[0], conv.shape[-1]
    grid = round((sd["visual.positional_embedding"].shape[0] - 1) ** 0.5)
    t_width = sd["ln_final.weight"].shape[0]
    return dict(
        embed_dim=sd["visual.proj"].shape[1], image_size=grid * patch, patch_size=patch, vision_width=v_width,
        vision_layers=_count(sd, "visual.transformer.resblocks."), vision_heads=v_width // 64,
        vision_mlp=sd["visual.transformer.resblocks.0.mlp.c_fc.weight"].shape[0],
        text_width=t_width, text_layers=_count(sd, "transformer.resblocks."), text_heads=t_width // 64,
        text_mlp=sd["transformer.resblocks.0.mlp.c_fc.weight"].shape[0],
        vocab_size=sd["token_embedding.weight"].shape[0], context_length=sd["positional_embedding"].shape[0],
    )


def clip_config(shapes: dict[str, Any], quick_gelu: bool):
    from transformers import CLIPConfig

    act = "quick_gelu" if quick_gelu else "gelu"
    vocab = shapes["vocab_size"]
    return CLIPConfig(
        text_config=dict(vocab_size=vocab, hidden_size=shapes["text_width"], intermediate_size=shapes["text_mlp"],
                         num_hidden_layers=shapes["text_layers"], num_attention_heads=shapes["text_heads"],
                         max_position_embeddings=shapes["context_length"], hidden_act=act, layer_norm_eps=1e-5,
                         bos_token_id=vocab - 2, eos_token_id=vocab - 1, pad_token_id=vocab - 1),
        vision_config=dict(hidden_size=shapes["vision_width"], intermediate_size=shapes["vision_mlp"],
                           num_hidden_layers=shapes["vision_layers"], num_attention_heads=shapes["vision_heads"],
                           image_size=shapes["image_size"], patch_size=shapes["patch_size"], hidden_act=act,
                           layer_norm_eps=1e-5),
        projection_dim=shapes["embed_dim"],
    )


def _blocks(sd: dict[str, Tensor], src: str, dst: str, layers: int) -> dict[str, Tensor]:
    out: dict[str, Tensor] = {}
    for i in range(layers):
        s, d = f"{src}{i}.", f"{dst}{i}."
        q, k, v = sd[s + "attn.in_proj_weight"].chunk(3)
        qb, kb, vb = sd[s + "attn.in_proj_bias"].chunk(3)
        out.update({d + "self_attn.q_proj.weight": q, d + "self_attn.k_proj.weight": k,
                    d + "self_attn.v_proj.weight": v, d + "self_attn.q_proj.bias": qb,
                    d + "self_attn.k_proj.bias": kb, d + "self_attn.v_proj.bias": vb})
        for a, b in (("attn.out_proj", "self_attn.out_proj"), ("ln_1", "layer_norm1"), ("ln_2", "layer_norm2"),
                     ("mlp.c_fc", "mlp.fc1"), ("mlp.c_proj", "mlp.fc2")):
            out[d + b + ".weight"] = sd[s + a + ".weight"]
            out[d + b + ".bias"] = sd[s + a + ".bias"]
    return out


def convert_state_dict(sd: dict[str, Tensor], shapes: dict[str, Any]) -> dict[str, Tensor]:
    """OpenAI / open_clip keys -> transformers CLIPModel keys (q/k/v split, projections transposed)."""
    vm, tm = "vision_model.", "text_model."
    out = {
        vm + "embeddings.patch_embedding.weight": sd["visual.conv1.weight"],
        vm + "embeddings.class_embedding": sd["visual.class_embedding"],
        vm + "embeddings.position_embedding.weight": sd["visual.positional_embedding"],
        vm + "pre_layrnorm.weight": sd["visual.ln_pre.weight"], vm + "pre_layrnorm.bias": sd["visual.ln_pre.bias"],
        vm + "post_layernorm.weight": sd["visual.ln_post.weight"],
        vm + "post_layernorm.bias": sd["visual.ln_post.bias"],
        "visual_projection.weight": sd["visual.proj"].t(),
        tm + "embeddings.token_embedding.weight": sd["token_embedding.weight"],
        tm + "embeddings.position_embedding.weight": sd["positional_embedding"],
        tm + "final_layer_norm.weight": sd["ln_final.weight"], tm + "final_layer_norm.bias": sd["ln_final.bias"],
        "text_projection.weight": sd["text_projection"].t(),
        "logit_scale": sd["logit_scale"].reshape(()),
    }
    out.update(_blocks(sd, "visual.transformer.resblocks.", vm + "encoder.layers.", shapes["vision_layers"]))
    out.update(_blocks(sd, "transformer.resblocks.", tm + "encoder.layers.", shapes["text_layers"]))
    return {k: v.detach().float().contiguous() for k, v in out.items()}


def build_clip_model(sd: dict[str, Any], name: str, quick_gelu: bool, heads: tuple[int, int] | None = None):
    """A float32 CLIPModel holding `sd`'s weights. Keys that the conversion would leave behind are refused."""
    from transformers import CLIPModel

    sd = normalize_state_dict(sd)
    refuse_unsupported(sd, name)
    shapes = shapes_from_state_dict(sd)
    if heads is not None:
        shapes["vision_heads"], shapes["text_heads"] = heads
    for tower, width, n in (("image", shapes["vision_width"], shapes["vision_heads"]),
                            ("text", shapes["text_width"], shapes["text_heads"])):
        if n < 1 or width % n:
            raise BackboneError(f"{name}: {tower} width {width} does not split into {n} attention heads")
    try:
        converted = convert_state_dict(sd, shapes)
    except KeyError as exc:
        raise BackboneError(f"{name} lacks tensor {exc.args[0]} of a CLIP ViT (pre-norm blocks, class token, "
                            "linear projections); the checkpoint is truncated or of another architecture") from None
    used = {k for k in sd if k.split(".")[0] in ("visual", "transformer")}
    known = set(converted_sources(shapes))
    extra = sorted(k for k in used - known if not k.endswith(IGNORED))
    if extra:
        raise BackboneError(f"{name} has tensors transformers' CLIPModel has no place for ({', '.join(extra[:3])}"
                            f"{', ...' if len(extra) > 3 else ''}): its architecture differs from OpenAI's CLIP ViT")
    model = CLIPModel(clip_config(shapes, quick_gelu)).float().eval()
    missing, unexpected = model.load_state_dict(converted, strict=False)
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:  # cannot happen for a state dict that passed the checks above
        raise BackboneError(f"{name}: converted weights do not fit CLIPModel (missing {missing[:3]}, "
                            f"unexpected {unexpected[:3]})")
    return model, shapes


def converted_sources(shapes: dict[str, Any]) -> list[str]:
    """Every source key `convert_state_dict` reads under visual.* and transformer.*."""
    keys = [f"visual.{k}" for k in ("conv1.weight", "class_embedding", "positional_embedding", "ln_pre.weight",
                                    "ln_pre.bias", "ln_post.weight", "ln_post.bias", "proj")]
    block = ["attn.in_proj_weight", "attn.in_proj_bias", "attn.out_proj.weight", "attn.out_proj.bias",
             "ln_1.weight", "ln_1.bias", "ln_2.weight", "ln_2.bias", "mlp.c_fc.weight", "mlp.c_fc.bias",
             "mlp.c_proj.weight", "mlp.c_proj.bias"]
    for prefix, n in (("visual.transformer.resblocks.", shapes["vision_layers"]),
                      ("transformer.resblocks.", shapes["text_layers"])):
        keys += [f"{prefix}{i}.{b}" for i in range(n) for b in block]
    return keys


def load_openai_file(path) -> dict[str, Tensor]:
    """An OpenAI release file: a TorchScript archive (its state_dict) or a plain (possibly wrapped) state dict."""
    import warnings
    import zipfile

    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:  # TorchScript archives hold code and constants.pkl
                scripted = any(n.endswith("/constants.pkl") for n in archive.namelist())
            if scripted:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load's deprecation notice
                    return dict(torch.jit.load(str(path), map_location="cpu").state_dict())
        sd = torch.load(str(path), map_location="cpu", weights_only=True)
    except (RuntimeError, OSError, EOFError, ValueError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise BackboneError(f"cannot read {path} as a TorchScript archive or a torch state dict: {first}") from None
    if not isinstance(sd, dict):
        raise BackboneError(f"{path} holds a {type(sd).__name__}, not a state dict; save model.state_dict()")
    return sd
