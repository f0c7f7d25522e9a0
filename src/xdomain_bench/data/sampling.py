"""The one seeded per-class sampling primitive (PROTOCOLS.md §1.3)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def sample_split(files: Sequence[str], frac: float, seed: int) -> tuple[list[str], list[str]]:
    """Return (chosen, rest) for one sorted file list.

    `chosen` follows the permutation order (so smaller fractions are prefixes of larger ones);
    `rest` is in sorted order. Bit-identical to `np.random.seed(seed); np.random.choice(arr, int(frac*n), replace=False)`.
    """
    n = len(files)
    m = int(frac * n)
    perm = np.random.RandomState(seed).permutation(n)
    return [files[j] for j in perm[:m]], [files[j] for j in sorted(perm[m:])]


def permutation_prefix(files: Sequence[str], count: int, seed: int) -> list[str]:
    """The first `count` elements of the seeded permutation of `files`."""
    perm = np.random.RandomState(seed).permutation(len(files))
    return [files[j] for j in perm[:count]]
