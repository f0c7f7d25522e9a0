"""DALSCLIP (METHODS.md §4): a documented reconstruction on a frozen CLIP.

Only the paper's abstract is public; everything here follows the spec's reconstruction on the DPL lineage
(`shogi880/DPLCLIP`). All trainable parts act on the frozen, normalised image embedding f̂, so the image
features are cacheable (H14, `feature_cache.py`): batches may carry `features` instead of `pixels`.

- domain-specific branch s = M_s(f̂), per-domain classifiers h_d on s, domain classifier D_s on s;
- removal f_inv = f̂ − W_r s (W_r zero-initialised), retrieval embedding e = f_inv / ‖f_inv‖;
- gradient-reversed domain classifier D_inv on f_inv;
- attention-MLP prompt generator over K learnable domain keys; per-domain prompts P_d are batch means,
  placed before the class name (or caption) in the frozen text encoder (H6).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError
from ..vlm.frozen import PLACEHOLDER, TokenBatch
from .base import RetrievalMethod, register_method
from .dalsclip_parts import (
    DomainHeads,
    PromptEMA,
    PromptGenerator,
    PseudoDomains,
    domain_means,
    grad_reverse,
    masked_cross_entropy,
)
from .losses import clip_infonce
from .prompting import sanitize_placeholder
from .text import clean_class_name

if TYPE_CHECKING:
    from ..data.info import DataInfo
    from ..vlm import FrozenVLM

VARIANTS = ("full", "dpl")
TEST_PROMPTS = ("source_mean", "query_batch")


@register_method("dalsclip")
class DALSCLIP(RetrievalMethod):
    uses_domains = True
    uses_captions = True
    cacheable = True
    cache_feature = "post_proj"  # H14: the frozen E-dim image embedding (before normalisation)

    def __init__(self, vlm: FrozenVLM, info: DataInfo, cfg: dict[str, Any]) -> None:
        super().__init__(vlm, info, cfg)
        sizes = vlm.sizes
        e_dim, t_dim = sizes.embed_dim, sizes.text_width
        self.variant = str(cfg.get("variant") or "full")
        if self.variant not in VARIANTS:
            raise ConfigError(f"dalsclip has no variant '{self.variant}'; known: {', '.join(VARIANTS)}")
        self.test_prompt = str(cfg.get("test_prompt", "source_mean"))
        if self.test_prompt not in TEST_PROMPTS:
            raise ConfigError(f"dalsclip test_prompt must be one of {TEST_PROMPTS}, not '{self.test_prompt}'")
        self.n_tok = int(cfg.get("n_tok", 16))
        if self.n_tok + 4 > sizes.context_length:
            raise ConfigError(f"dalsclip n_tok={self.n_tok} leaves no room in the text context "
                              f"({sizes.context_length} tokens); lower n_tok")
        self.num_domains = max(1, len(info.train_domains))
        self.pseudo = self._pseudo_domains(cfg.get("pseudo_domains"), e_dim)
        if self.pseudo is not None:
            self.num_domains = self.pseudo.k
        self.num_classes = info.num_train_classes
        self.lambdas = (float(cfg.get("lambda_spec", 1.0)), float(cfg.get("lambda_adv", 0.1)),
                        float(cfg.get("lambda_dom", 1.0)))
        self.grl_coeff = float(cfg.get("grl_coeff", 1.0))
        self.max_text_sequences = int(cfg.get("max_text_sequences", 2048))
        hidden = int(cfg.get("hidden") or e_dim)
        full = self.variant == "full"
        multi = self.num_domains > 1

        self.prompt_gen = PromptGenerator(e_dim, t_dim, self.num_domains, self.n_tok, hidden,
                                          dropout=float(cfg.get("dropout", 0.1)), attention=full,
                                          key_std=float(cfg.get("key_init_std", 0.02)))
        self.mapping = nn.Sequential(nn.Linear(e_dim, e_dim), nn.ReLU(), nn.Linear(e_dim, e_dim)) if full else None
        self.removal = nn.Linear(e_dim, e_dim) if full else None
        if self.removal is not None:
            nn.init.zeros_(self.removal.weight)
            nn.init.zeros_(self.removal.bias)
        self.spec_heads = DomainHeads(self.num_domains, e_dim, self.num_classes) if full and self.num_classes else None
        self.dom_s = nn.Linear(e_dim, self.num_domains) if full and multi else None
        self.dom_inv = nn.Linear(e_dim, self.num_domains) if full and multi else None
        self.prompt_ema = PromptEMA(self.num_domains, self.n_tok, t_dim, float(cfg.get("prompt_ema", 0.99)))
        self._class_tokens: TokenBatch | None = None
        self._query_sum: Tensor | None = None
        self._query_count = 0

        self.notes["variant"] = self.variant
        self.notes["num_domains"] = self.num_domains
        if self.pseudo is not None:
            self.notes["pseudo_domains"] = {"k": self.pseudo.k, "sizes": None}
        elif not multi:
            self.notes["single_domain"] = True
            self.notes["degraded"] = "K=1: L_adv and L_dom off, attention a = 1, one auxiliary classifier"

    def _pseudo_domains(self, k: Any, e_dim: int) -> PseudoDomains | None:
        """§4.7: k pseudo-domains on one-domain data; with real domains the option is noted and unused."""
        if k is None:
            return None
        if len(self.info.train_domains) > 1:
            self.notes["pseudo_domains"] = f"off: the data has {len(self.info.train_domains)} training domains"
            return None
        return PseudoDomains(int(k), e_dim)

    def changed_embeddings(self) -> str:
        """`full` moves the image embedding (f_inv) and the text prompts; `dpl` leaves e = f̂, zero-shot."""
        return "both" if self.removal is not None else "text"

    def needs_train_features(self) -> bool:
        return self.pseudo is not None and not bool(self.pseudo.fitted)

    def prepare_fit(self, train_features: Tensor) -> None:
        """Cluster the frozen training embeddings into the pseudo-domains (called once before training)."""
        if self.pseudo is not None:
            sizes = self.pseudo.fit(F.normalize(train_features.float(), dim=-1), seed=0)
            self.notes["pseudo_domains"] = {"k": self.pseudo.k, "sizes": sizes}

    def training_domains(self, batch: dict[str, Any], f_hat: Tensor) -> Tensor:
        """Domain ids of the batch: its data's, or each image's pseudo-domain."""
        if self.pseudo is None:
            return batch["domain_id"]
        if not bool(self.pseudo.fitted):
            raise ConfigError("dalsclip pseudo_domains: the pseudo-domains are not fitted; call "
                              "prepare_fit(frozen train features) before training (the runner does)")
        return self.pseudo.assign(f_hat).to(batch["label"].device)

    # --- image side -------------------------------------------------------------------------------
    def frozen_feature(self, batch: dict[str, Any]) -> Tensor:
        """f̂: the normalised frozen image embedding, from the feature cache when the batch carries one."""
        feats = batch.get("features")
        if feats is None:
            feats = self.vlm.frozen_image_features(batch["pixels"])
        return F.normalize(feats.float(), dim=-1)

    def split_feature(self, f_hat: Tensor) -> tuple[Tensor | None, Tensor]:
        """(s, f_inv): the domain-specific code and the invariant feature f̂ − W_r s (f̂ in `dpl`)."""
        if self.mapping is None or self.removal is None:
            return None, f_hat
        s = self.mapping(f_hat)
        return s, f_hat - self.removal(s)

    def embed_images(self, batch: dict[str, Any]) -> Tensor:
        f_hat = self.frozen_feature(batch)
        if not self.training and self.test_prompt == "query_batch":
            self._accumulate_query_prompts(f_hat)
        return F.normalize(self.split_feature(f_hat)[1].float(), dim=-1)

    # --- text side --------------------------------------------------------------------------------
    def _prefix(self) -> str:
        return " ".join([PLACEHOLDER] * self.n_tok)

    def class_tokens(self) -> TokenBatch:
        """Tokens of `"X×n_tok {class}."` for every training class, cached."""
        if self._class_tokens is None:
            texts = [f"{self._prefix()} {clean_class_name(n)}." for n in self.info.train_class_names]
            self._class_tokens = self.vlm.tokenize(texts)
        return self._class_tokens

    def class_text_features(self, prompts: Tensor, class_idx: Tensor) -> Tensor:
        """(D, n_tok, T) prompts × selected classes -> (D, C', E) normalised t_{d,c}."""
        tokens = self.class_tokens()
        idx = class_idx.cpu()
        # the shared "SOS X…X" prefix is encoded once per domain prompt, the class suffixes D × C' times
        feats = self.vlm.encode_text_product(TokenBatch(tokens.ids[idx], tokens.eot[idx]), prompts)
        return F.normalize(feats.float(), dim=-1)

    def prompted_texts(self, texts: Sequence[str]) -> list[str]:
        """Prefix the n_tok placeholders; a bare class name gets the training template `X… {class}.`."""
        names = set(self.info.class_names) | {clean_class_name(n) for n in self.info.class_names}
        out = []
        for text in texts:
            body = f"{clean_class_name(text)}." if text in names and text else text
            out.append(f"{self._prefix()} {sanitize_placeholder(body)}")  # a caption's own 'x' is no placeholder
        return out

    def eval_prompt(self) -> Tensor:
        """P*: EMA source-domain mean (`source_mean`), or (`query_batch`, DPL's transductive rule) the mean of u
        over the images embedded in eval mode since the last training step."""
        if self.test_prompt == "query_batch" and self._query_count:
            return self._query_sum / self._query_count
        mean = self.prompt_ema.mean()
        if mean is not None:
            return mean
        if self._query_count:
            return self._query_sum / self._query_count
        self.notes["eval_prompt"] = "no training step and no query images: zero context"
        return torch.zeros(self.n_tok, self.vlm.sizes.text_width, device=self.device)

    @torch.no_grad()
    def embed_texts(self, texts: Sequence[str]) -> Tensor:
        texts = list(texts)
        if not texts:
            return torch.zeros(0, self.vlm.sizes.embed_dim, device=self.device)
        prompt = self.eval_prompt().to(self.device)
        strings = self.prompted_texts(texts)
        parts = [self.vlm.encode_text(strings[i:i + 256], context=prompt).float() for i in range(0, len(strings), 256)]
        return F.normalize(torch.cat(parts), dim=-1)

    @torch.no_grad()
    def _accumulate_query_prompts(self, f_hat: Tensor) -> None:
        u = self.prompt_gen(f_hat).float().sum(dim=0)
        self._query_sum = u if self._query_sum is None else self._query_sum + u
        self._query_count += f_hat.shape[0]

    # --- training ---------------------------------------------------------------------------------
    def select_classes(self, labels: Tensor, num_domains: int) -> Tensor:
        """Classes scored this step: all, or (above `max_text_sequences`) the batch's plus random others."""
        budget = max(1, self.max_text_sequences // max(1, num_domains))
        if self.num_classes <= budget:
            return torch.arange(self.num_classes)
        batch = torch.unique(labels[labels >= 0].cpu())
        rest = torch.ones(self.num_classes, dtype=torch.bool)
        rest[batch] = False
        others = rest.nonzero(as_tuple=True)[0]
        n_extra = max(0, budget - batch.numel())
        extra = others[torch.randperm(others.numel())[:n_extra]]
        return torch.sort(torch.cat([batch, extra])).values

    def class_loss(self, e: Tensor, prompts: Tensor, present: list[int], batch: dict[str, Any]) -> Tensor:
        """L_cls: CE(cos(e_i, t_{d_i,·}) / τ_clip, y_i) over the selected classes."""
        labels, domains = batch["label"], batch["domain_id"]
        classes = self.select_classes(labels, len(present)).to(labels.device)
        text = self.class_text_features(prompts, classes)  # (D, C', E)
        d, c = text.shape[:2]
        logits = (e @ text.reshape(d * c, -1).t()).view(-1, d, c) * self.logit_scale
        slot = torch.as_tensor([present.index(int(x)) for x in domains.tolist()], device=e.device)
        logits = logits[torch.arange(e.shape[0], device=e.device), slot]
        remap = torch.full((self.num_classes,), -1, dtype=torch.long, device=labels.device)
        remap[classes] = torch.arange(classes.numel(), device=labels.device)
        targets = torch.where(labels >= 0, remap[labels.clamp(min=0)], torch.full_like(labels, -1))
        return masked_cross_entropy(logits, targets)

    def caption_loss(self, e: Tensor, prompts: Tensor, present: list[int], batch: dict[str, Any]) -> Tensor:
        """§1.5 InfoNCE with every caption prefixed by its image's domain prompt P_{d_i}."""
        captions = list(batch["caption"])
        slot = torch.as_tensor([present.index(int(x)) for x in batch["domain_id"].tolist()], device=e.device)
        text = self.vlm.encode_text(self.prompted_texts(captions), context=prompts[slot])
        return clip_infonce(e, text, captions, self.logit_scale)

    def training_loss(self, batch: dict[str, Any]) -> tuple[Tensor, dict[str, Tensor]]:
        f_hat = self.frozen_feature(batch)
        domains = self.training_domains(batch, f_hat)
        if bool((domains < 0).any()) or bool((domains >= self.num_domains).any()):
            raise ConfigError(f"dalsclip got training domain ids {sorted(set(domains.tolist()))}; "
                              f"expected 0..{self.num_domains - 1} (index into info.train_domains)")
        batch = {**batch, "domain_id": domains}
        s, f_inv = self.split_feature(f_hat)
        e = F.normalize(f_inv.float(), dim=-1)
        present, prompts = domain_means(self.prompt_gen(f_hat), domains)  # P_d, (D, n_tok, T)
        if self.training:
            self.prompt_ema.update(present, prompts)
            self._query_sum, self._query_count = None, 0  # `query_batch` restarts after every training step
        if self.info.task == "itr" and "caption" in batch:
            l_cls = self.caption_loss(e, prompts, present, batch)
        else:
            l_cls = self.class_loss(e, prompts, present, batch)
        logs = {"cls": l_cls.detach()}
        loss = l_cls
        lam_spec, lam_adv, lam_dom = self.lambdas
        if s is not None and self.spec_heads is not None:
            l_spec = masked_cross_entropy(self.spec_heads(s, domains), batch["label"])
            loss = loss + lam_spec * l_spec
            logs["spec"] = l_spec.detach()
        if s is not None and self.dom_s is not None and self.dom_inv is not None:
            l_dom = F.cross_entropy(self.dom_s(s).float(), domains)
            l_adv = F.cross_entropy(self.dom_inv(grad_reverse(f_inv, self.grl_coeff)).float(), domains)
            loss = loss + lam_adv * l_adv + lam_dom * l_dom
            logs.update(adv=l_adv.detach(), dom=l_dom.detach())
        return loss, logs
