"""Validation and conversion of user-supplied embeddings, scores and labels (one-line InputErrors)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError, InputError

ArrayLike = torch.Tensor | np.ndarray


def _first_bad_row(bad: torch.Tensor) -> int:
    return int(bad.reshape(bad.shape[0], -1).any(dim=1).nonzero()[0, 0])


def as_matrix(x: Any, what: str, *, dtype: torch.dtype | None = torch.float32) -> torch.Tensor:
    """A finite, non-empty 2-D float tensor (device kept); NaN/inf raise naming the first bad row."""
    if isinstance(x, np.ndarray):
        if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
            raise InputError(f"{what} must be a numeric array, got dtype {x.dtype}; save embeddings as float32")
        x = torch.from_numpy(np.ascontiguousarray(x))
    if not isinstance(x, torch.Tensor):
        raise InputError(f"{what} must be a torch.Tensor or numpy array, got {type(x).__name__}")
    if x.ndim != 2:
        raise InputError(f"{what} must be 2-D (rows, dim), got shape {tuple(x.shape)}; reshape to (N, D)")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise InputError(f"{what} is empty (shape {tuple(x.shape)}); pass at least one row and one column")
    if x.is_complex():
        raise InputError(f"{what} must be real-valued, got dtype {x.dtype}")
    if not x.is_floating_point():
        x = x.to(torch.float64)
    finite = torch.isfinite(x)
    if not bool(finite.all()):
        row = _first_bad_row(~finite)
        kind = "NaN" if bool(torch.isnan(x[row]).any()) else "inf"
        raise InputError(f"{what} contains {kind} in row {row}; remove or recompute the non-finite rows")
    return x.detach().to(dtype).contiguous() if dtype is not None else x.detach().contiguous()


def as_labels(y: Any, n: int, what: str) -> np.ndarray:
    """A 1-D label array (integer or string) of length n."""
    if isinstance(y, torch.Tensor):
        y = y.detach().cpu().numpy()
    arr = np.asarray(y)
    if arr.ndim != 1:
        raise InputError(f"{what} must be 1-D, got shape {arr.shape}")
    if arr.shape[0] != n:
        raise InputError(f"{what} has {arr.shape[0]} entries but there are {n} embedding rows; they must match")
    if arr.dtype == object:
        if not all(isinstance(v, str) for v in arr):
            raise InputError(f"{what} must hold integers or strings only")
        arr = arr.astype(str)
    if arr.dtype.kind not in "iubUS":
        raise InputError(f"{what} must be integer or string labels, got dtype {arr.dtype}; cast class ids to int")
    return arr


def encode_labels(query_labels: np.ndarray, gallery_labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Map both label arrays onto shared int64 codes 0..n_codes-1."""
    q_str = query_labels.dtype.kind in "US"
    g_str = gallery_labels.dtype.kind in "US"
    if q_str != g_str:
        raise InputError(
            "query labels and gallery labels must be the same kind (both integers or both strings), "
            f"got {query_labels.dtype} and {gallery_labels.dtype}"
        )
    both = np.concatenate([query_labels, gallery_labels])
    uniq, inverse = np.unique(both, return_inverse=True)
    inverse = inverse.astype(np.int64).reshape(-1)
    return inverse[: len(query_labels)], inverse[len(query_labels) :], len(uniq)


def check_choice(value: str, allowed: Sequence[str], what: str) -> None:
    """Raise ConfigError when an option is not one of the allowed values."""
    if value not in allowed:
        raise ConfigError(f"unknown {what} '{value}'; choose one of: {', '.join(allowed)}")


def check_chunk_size(chunk_size: int) -> int:
    if not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size < 1:
        raise ConfigError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    return chunk_size
