"""Building blocks of DALSCLIP (METHODS.md §4): gradient reversal, the attention-MLP prompt generator,
per-domain classifiers and the EMA bank of per-domain prompts."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError


class _GradientReversal(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, coeff: float) -> Tensor:  # type: ignore[override]
        ctx.coeff = coeff
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        return -ctx.coeff * grad, None


def grad_reverse(x: Tensor, coeff: float = 1.0) -> Tensor:
    """Identity forward; multiplies the gradient by -coeff backward (DANN's GRL)."""
    return _GradientReversal.apply(x, coeff)


def dpl_init(module: nn.Module) -> None:
    """DPL's `init_weights`: Xavier-uniform weights, biases 0.01 (shogi880/DPLCLIP)."""
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.constant_(module.bias, 0.01)


class PromptGenerator(nn.Module):
    """u = MLP([f̂; z]) reshaped to (n_tok, T), with z = aᵀEk and a = softmax(W_q f̂ · Ekᵀ / √E).

    With `attention=False` (the `dpl` variant) the MLP reads f̂ alone. With one domain a ≡ 1 and z = Ek[0],
    so no query map is built.
    """

    def __init__(self, embed_dim: int, text_width: int, num_domains: int, n_tok: int, hidden: int,
                 dropout: float = 0.1, attention: bool = True, key_std: float = 0.02) -> None:
        super().__init__()
        self.embed_dim, self.text_width, self.n_tok = embed_dim, text_width, n_tok
        self.attention = attention
        self.num_domains = num_domains
        self.query = nn.Linear(embed_dim, embed_dim) if attention and num_domains > 1 else None
        self.keys = nn.Parameter(torch.randn(num_domains, embed_dim) * key_std) if attention else None
        in_dim = 2 * embed_dim if attention else embed_dim
        self.mlp = nn.Sequential(
            nn.Linear(in_dim, hidden), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(hidden, n_tok * text_width),
        )
        self.mlp.apply(dpl_init)

    def domain_attention(self, f_hat: Tensor) -> Tensor:
        """(B, K) attention of each sample over the learnable domain keys."""
        if self.keys is None:
            raise RuntimeError("the dpl prompt generator has no domain keys")
        if self.query is None:
            return torch.ones(f_hat.shape[0], 1, device=f_hat.device, dtype=f_hat.dtype)
        scores = self.query(f_hat) @ self.keys.t() / math.sqrt(self.embed_dim)
        return scores.float().softmax(dim=-1)

    def forward(self, f_hat: Tensor) -> Tensor:
        """(B, E) normalised frozen features -> (B, n_tok, T) per-sample prompts."""
        x = f_hat
        if self.keys is not None:
            a = self.domain_attention(f_hat)
            z = a.to(self.keys.dtype) @ self.keys
            x = torch.cat([f_hat, z.to(f_hat.dtype)], dim=-1)
        return self.mlp(x).view(f_hat.shape[0], self.n_tok, self.text_width)


class DomainHeads(nn.Module):
    """K × Linear(E, C); sample i is scored by the head of its own domain only."""

    def __init__(self, num_domains: int, embed_dim: int, num_classes: int) -> None:
        super().__init__()
        self.heads = nn.ModuleList(nn.Linear(embed_dim, num_classes) for _ in range(num_domains))

    def forward(self, s: Tensor, domain_ids: Tensor) -> Tensor:
        """(B, E), (B,) -> (B, C) logits; a head whose domain is absent from the batch is never called."""
        num_classes = self.heads[0].out_features
        logits = s.new_zeros(s.shape[0], num_classes, dtype=torch.float32)
        for d in torch.unique(domain_ids).tolist():
            rows = domain_ids == d
            logits = logits.index_put((rows.nonzero(as_tuple=True)[0],), self.heads[d](s[rows]).float())
        return logits


def masked_cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """CE averaged over rows with target >= 0; exactly 0 (still in the graph) when there is none."""
    valid = targets >= 0
    if not bool(valid.any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits[valid].float(), targets[valid])


def domain_means(values: Tensor, domain_ids: Tensor) -> tuple[list[int], Tensor]:
    """Sorted domains present in `domain_ids` and the mean of `values` over each one's rows."""
    present = torch.unique(domain_ids).tolist()
    means = torch.stack([values[domain_ids == d].mean(dim=0) for d in present])
    return present, means


class PromptEMA(nn.Module):
    """Per-domain EMA of the batch-aggregated prompts P_d; P* = mean over the domains seen (§4.3 step 7).

    Buffers are saved with the method's checkpoint, so the selected checkpoint keeps its P*.
    """

    def __init__(self, num_domains: int, n_tok: int, text_width: int, momentum: float = 0.99) -> None:
        super().__init__()
        self.momentum = momentum
        self.register_buffer("value", torch.zeros(num_domains, n_tok, text_width))
        self.register_buffer("seen", torch.zeros(num_domains, dtype=torch.bool))

    @torch.no_grad()
    def update(self, domains: list[int], prompts: Tensor) -> None:
        for d, p in zip(domains, prompts.detach().float()):
            if bool(self.seen[d]):
                self.value[d].mul_(self.momentum).add_(p, alpha=1.0 - self.momentum)
            else:
                self.value[d].copy_(p)
                self.seen[d] = True

    def mean(self) -> Tensor | None:
        """P* (n_tok, T), or None before any training step."""
        if not bool(self.seen.any()):
            return None
        return self.value[self.seen].mean(dim=0)


class PseudoDomains(nn.Module):
    """k pseudo-domains for one-domain data (§4.7 `pseudo_domains`): k-means centroids of the normalised frozen
    training embeddings (faiss, seeded), then each image's domain is its nearest centroid. The centroids are
    buffers, so a checkpoint keeps them."""

    def __init__(self, k: int, dim: int) -> None:
        super().__init__()
        self.k = int(k)
        self.register_buffer("centroids", torch.zeros(self.k, dim))
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))

    @torch.no_grad()
    def fit(self, f_hat: Tensor, seed: int = 0, iterations: int = 25) -> list[int]:
        """Fit the centroids on (N, E) normalised features; returns the cluster sizes."""
        import faiss

        x = f_hat.detach().float().cpu().contiguous().numpy()
        if x.shape[0] < self.k:
            raise ConfigError(f"dalsclip pseudo_domains={self.k} needs at least {self.k} training images; "
                              f"the training split has {x.shape[0]}: lower pseudo_domains or turn it off (null)")
        km = faiss.Kmeans(x.shape[1], self.k, niter=iterations, seed=int(seed), min_points_per_centroid=1,
                          max_points_per_centroid=1 << 30, verbose=False)
        km.train(x)
        self.centroids.copy_(torch.from_numpy(km.centroids).to(self.centroids))
        self.fitted.fill_(True)
        return torch.bincount(self.assign(f_hat.float()), minlength=self.k).tolist()

    @torch.no_grad()
    def assign(self, f_hat: Tensor) -> Tensor:
        """Nearest centroid (squared L2) of each row: its pseudo-domain id."""
        c = self.centroids.to(f_hat.device, torch.float32)
        dist = (f_hat.float().unsqueeze(1) - c.unsqueeze(0)).pow(2).sum(-1)
        return dist.argmin(dim=1)
