"""Retrieval example grids: a few seeded queries, the same under every method, each with its top gallery items
as small thumbnails read from the dataset's own image files (paths from the manifest relpaths saved with the
per-query results); a green border marks a relevant item (same class as the query), a red one an irrelevant."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

THUMB = 72
N_QUERIES = 4
N_SHOWN = 8


def pick_queries(n_query: int, seed: int = 0, n: int = N_QUERIES) -> list[int]:
    """`n` query indices drawn with a fixed seed (sorted): the same rows for every method of a setting."""
    rng = np.random.default_rng(seed)
    return sorted(int(i) for i in rng.choice(n_query, size=min(n, n_query), replace=False))


class Thumbnails:
    """Base64 JPEG thumbnails by file path, each made once; a missing or unreadable file becomes a grey tile."""

    def __init__(self, size: int = THUMB) -> None:
        self.size = size
        self.cache: dict[str, str] = {}
        self.missing: list[str] = []

    def __call__(self, path: Path) -> str:
        key = str(path)
        if key not in self.cache:
            try:
                with Image.open(path) as im:
                    img = im.convert("RGB")
            except (OSError, UnidentifiedImageError):
                self.missing.append(key)
                img = Image.new("RGB", (self.size, self.size), (200, 200, 200))
            img.thumbnail((self.size, self.size))
            buf = io.BytesIO()
            img.save(buf, format="JPEG", quality=80)
            self.cache[key] = "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
        return self.cache[key]


def image_paths(pq: dict[str, Any], role: str, indices: list[int], data_root: str | None) -> list[Path]:
    """Files of the given rows of `role` (query or gallery), through the dataset adapter's layout mapping."""
    from ..data.base import get_dataset

    meta = pq["meta"]
    root = data_root or meta["data_root"]
    rels = [str(pq[f"{role}_relpath"][i]) for i in indices]
    return get_dataset(meta["dataset"]).file_paths(root, rels)


def grid_html(method: str, seed: int, pq: dict[str, Any], queries: list[int], thumbs: Thumbnails,
              data_root: str | None, n_shown: int = N_SHOWN) -> str:
    """One method's grid: a row per query, its thumbnail then its top `n_shown` gallery thumbnails."""
    esc = html.escape
    rows = []
    q_paths = image_paths(pq, "query", queries, data_root)
    for qi, q_path in zip(queries, q_paths):
        top = [int(g) for g in pq["top_index"][qi][:n_shown]]
        g_paths = image_paths(pq, "gallery", top, data_root)
        q_class = int(pq["query_class"][qi])
        name = str(pq["query_class_name"][qi])
        cells = [f'<figure class="query"><img src="{thumbs(q_path)}" alt="query {qi}" title="{esc(name)}">'
                 f'<figcaption>{esc(name)}<br>AP {float(pq["ap"][qi]):.3f}</figcaption></figure>']
        for rank, (g, path) in enumerate(zip(top, g_paths), start=1):
            hit = int(pq["gallery_class"][g]) == q_class
            cells.append(f'<img class="{"hit" if hit else "miss"}" data-gallery="{g}" data-rank="{rank}" '
                         f'src="{thumbs(path)}" alt="rank {rank}" title="rank {rank}: {esc(str(pq["gallery_relpath"][g]))}">')
        rows.append(f'<div class="grid-row" data-query="{qi}">{"".join(cells)}</div>')
    return (f'<div class="grid" data-method="{esc(method)}" data-seed="{seed}"><h4>{esc(method)} '
            f'<small>seed {seed}</small></h4>{"".join(rows)}</div>')
