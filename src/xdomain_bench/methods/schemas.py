"""Declared, typed schemas of every method card (pydantic, unknown keys forbidden at any depth).

A card's `defaults` and every layer merged over them (variant, dataset override, suite override, `--set`)
must validate against its method's schema; `tests/methods/test_card_schemas.py` checks that each schema
covers exactly its card's keys, so no card key goes unread.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, model_validator

from .attention_boxes import CACHE_MODES
from .dalsclip import TEST_PROMPTS
from .dva import BOX_SOURCES
from .negatives import NEGATIVE_MODES

PosInt = Annotated[int, Field(ge=1)]
NonNegInt = Annotated[int, Field(ge=0)]
PosFloat = Annotated[float, Field(gt=0)]
NonNegFloat = Annotated[float, Field(ge=0)]
Probability = Annotated[float, Field(ge=0, le=1)]
Readout = Literal["cls"] | NonNegInt


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Optimizer(Strict):
    name: Literal["adam", "adamw", "sgd"]
    lr: PosFloat
    weight_decay: NonNegFloat = 0.0
    betas: tuple[Probability, Probability] | None = None
    momentum: NonNegFloat | None = None

    @model_validator(mode="after")
    def _options_fit_the_optimizer(self) -> Optimizer:
        if self.momentum is not None and self.name != "sgd":
            raise ValueError(f"momentum applies to sgd only, not {self.name}")
        if self.betas is not None and self.name == "sgd":
            raise ValueError("betas apply to adam and adamw, not sgd")
        return self


class CacheViews(Strict):
    views: PosInt


CacheAugmentation = Literal["none"] | CacheViews


class Training(Strict):
    """Keys every trained method has: batch, budget (`epochs` or `steps`), validation, optimiser."""

    batch_size: PosInt
    eval_batch_size: PosInt
    epochs: PosFloat | None = None
    steps: PosInt | None = None
    val_checks: PosInt
    early_stop_patience: PosInt | None
    optimizer: Optimizer
    schedule: Literal["constant", "cosine"]

    @model_validator(mode="after")
    def _one_budget_unit(self) -> Training:
        if (self.epochs is None) == (self.steps is None):
            raise ValueError("state the paper budget as exactly one of 'epochs' or 'steps'")
        return self


class ZeroShot(Strict):
    template: str
    eval_batch_size: PosInt


class LinearProbe(Training):
    template: str
    cache_augmentation: CacheAugmentation


class CoOp(Training):
    n_ctx: PosInt
    ctx_std: PosFloat
    class_template: str
    caption_template: str
    train_text_projection: StrictBool
    cache_augmentation: CacheAugmentation


class VPT(Training):
    n_tokens: PosInt
    readout: Readout
    template: str


class CLIPAdapter(Training):
    reduction: PosInt
    ratio: Probability
    template: str
    cache_augmentation: CacheAugmentation


class DALSCLIP(Training):
    n_tok: PosInt
    hidden: PosInt | None
    dropout: Annotated[float, Field(ge=0, lt=1)]
    key_init_std: PosFloat
    lambda_spec: NonNegFloat
    lambda_adv: NonNegFloat
    lambda_dom: NonNegFloat
    grl_coeff: NonNegFloat
    prompt_ema: Annotated[float, Field(ge=0, lt=1)]
    test_prompt: Literal[TEST_PROMPTS]  # type: ignore[valid-type]
    max_text_sequences: PosInt
    pseudo_domains: Annotated[int, Field(ge=2)] | None
    cache_augmentation: CacheAugmentation


class ViewAugment(Strict):
    crop: Annotated[float, Field(gt=0, le=1)]
    flip: Probability
    jitter: NonNegFloat
    grayscale: Probability
    blur: Probability
    blur_sigma: tuple[PosFloat, PosFloat] = (0.1, 2.0)


class DVALambdas(Strict):
    x: NonNegFloat
    obj: NonNegFloat
    bg: NonNegFloat
    kd: NonNegFloat
    con: NonNegFloat


class DVA(Training):
    adapter_rank: PosInt
    adapter_scale: float
    templates: Annotated[list[str], Field(min_length=1)]
    freeze_proxies: StrictBool
    box_source: Literal[BOX_SOURCES]  # type: ignore[valid-type]
    box_file: Annotated[str, Field(min_length=1)] | None
    attention_box_share: Annotated[float, Field(gt=0, le=1)]
    box_enlarge: PosFloat
    attention_box_cache: Literal[CACHE_MODES]  # type: ignore[valid-type]
    obj_aspect: Annotated[str, Field(pattern=r"^\d+(\.\d+)?:\d+(\.\d+)?$")]
    view_augment: ViewAugment
    tau_proxy: PosFloat
    tau_kd: PosFloat
    lambdas: DVALambdas
    con_margin: NonNegFloat
    proxy_lr: PosFloat
    proxy_weight_decay: NonNegFloat
    warmup_epochs: NonNegFloat


class DCAR(Training):
    n_ctx: PosInt
    depth: PosInt
    ctx_init_std: PosFloat
    caa_ratio: Probability
    caa_reduction: PosInt
    weight_clamp: tuple[PosFloat, PosFloat]
    test_token_weights: Literal["mean_image", "none"]
    negatives: Literal[NEGATIVE_MODES]  # type: ignore[valid-type]
    num_negatives: NonNegInt
    alpha: NonNegFloat
    lambda_cate: NonNegFloat
    template: str
    warmup_lr: PosFloat
    warmup_epochs: NonNegFloat


# --- two-phase prompt-bank methods: every schedule key lives in its phase ------------------------------------
class Phase(Strict):
    selection: Literal["val", "last"] = "val"
    step_fraction: PosFloat
    batch_size: PosInt
    epochs: PosFloat
    early_stop_patience: PosInt | None = None
    optimizer: Optimizer
    schedule: Literal["constant", "cosine", "exp_epoch"]
    lr_decay_base: PosFloat | None = None
    lr_decay_epochs: PosFloat | None = None
    min_lr: NonNegFloat | None = None

    @model_validator(mode="after")
    def _exp_epoch_keys(self) -> Phase:
        exp = (self.lr_decay_base, self.lr_decay_epochs, self.min_lr)
        if self.schedule == "exp_epoch" and None in exp:
            raise ValueError("schedule exp_epoch needs lr_decay_base, lr_decay_epochs and min_lr")
        if self.schedule != "exp_epoch" and any(v is not None for v in exp):
            raise ValueError("lr_decay_base, lr_decay_epochs and min_lr apply to schedule exp_epoch only")
        return self


class BankPrompt(Strict):
    """Keys shared by ProS and UCDR-Adapter outside the phases."""

    n_ctx: PosInt
    ctx_std: PosFloat
    text_template: str
    temperature: PosFloat
    readout: Readout
    token_dropout: Annotated[float, Field(ge=0, lt=1)]
    token_dropout_scope: Literal["sequence", "prompts"]
    train_normalization: Literal["backbone", "imagenet"]
    color_jitter: tuple[NonNegFloat, NonNegFloat, NonNegFloat, NonNegFloat] | None
    similarity: Literal["cosine", "l2"]
    eval_batch_size: PosInt
    val_checks: PosInt
    merge_val_classes: StrictBool


UCDRParts = Literal["domain_bank", "class_bank", "text_context", "tpg", "cls_emb", "proj_v"]
ProSParts = Literal["domain_units", "class_units", "text_context", "proj_t", "simulator", "templates", "proj_v",
                    "cls_emb"]


class UCDRPhase1Losses(Strict):
    itc: NonNegFloat
    triplet: NonNegFloat


class UCDRPhase2Losses(Strict):
    itc: NonNegFloat


class UCDRPhase1(Phase):
    trains: list[UCDRParts]
    losses: UCDRPhase1Losses


class UCDRPhase2(Phase):
    trains: list[UCDRParts]
    losses: UCDRPhase2Losses


class UCDRPhases(Strict):
    phase1: UCDRPhase1
    phase2: UCDRPhase2


class UCDRAdapter(BankPrompt):
    tau_g: PosFloat
    prompt_ratio: PosFloat
    query_feature: Literal["cls", "top_left_patch"]
    mask_gt_rows: StrictBool
    momentum: Probability
    momentum_init: Literal["copy", "random"]
    queue_length: PosInt
    triplet_margin: NonNegFloat
    triplet_samples: PosInt
    phases: UCDRPhases


class ProSPhase(Phase):
    trains: list[ProSParts]


class ProSPhases(Strict):
    stage1: ProSPhase
    stage2: ProSPhase


class ProS(BankPrompt):
    simulator_layers: PosInt
    phases: ProSPhases


SCHEMAS: dict[str, type[Strict]] = {
    "zero_shot": ZeroShot, "linear_probe": LinearProbe, "coop": CoOp, "vpt": VPT, "clip_adapter": CLIPAdapter,
    "dalsclip": DALSCLIP,
    "dva": DVA, "dcar": DCAR, "ucdr_adapter": UCDRAdapter, "pros": ProS,
}
