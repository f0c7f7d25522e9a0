"""Hand-built records in the shape `runner.execute.run_cell` writes (issue 15 fields included), so the
leaderboard can be checked value by value without training anything."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

SHA = {  # weights hashes of the backbones the records name (as `vlm.describe()` gives them)
    "tiny-clip": hashlib.sha256(b"tiny-clip seed 0").hexdigest(),
    "tiny-clip:seed=1": hashlib.sha256(b"tiny-clip seed 1").hexdigest(),
    "hf-clip:openai/clip-vit-base-patch32": hashlib.sha256(b"openai ViT-B/32").hexdigest(),
}


def write_record(out: Path, *, method: str, dataset: str, protocol: str, metrics: dict[str, float] | None,
                 seed: int = 0, variant: str = "clean", holdout: str | None = None, gallery: str | None = None,
                 query_domain: str = "photo", backbone: str = "tiny-clip", sha256: str | None = "default",
                 budget: str | None = "matched:2560", selection: str | None = None, status: str = "ok",
                 reason: str | None = None, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write one record under out/records and return it. `budget=None` writes an older record (no budget
    fields); `sha256=None` one whose backbone description has no weights hash."""
    cell = {"method": method, "dataset": dataset, "protocol": protocol, "variant": variant, "holdout": holdout,
            "seed": seed, "backbone": backbone, "method_variant": None,
            "data_options": {"gallery": gallery} if gallery else {}, "method_overrides": overrides or {}}
    if budget is None:
        cell["max_steps"] = None
    else:
        cell["budget"] = budget
    key = "|".join(f"{k}={json.dumps(v, sort_keys=True)}" for k, v in sorted(cell.items()))
    sha = SHA.get(backbone) if sha256 == "default" else sha256
    rec: dict[str, Any] = {
        "schema_version": 1, "cell_key": key, "cell": cell, "method": method, "dataset": dataset,
        "protocol": protocol, "variant": variant, "holdout": holdout, "seed": seed, "status": status,
        "error": reason if status == "failed" else None,
        "backbone": {"backend": backbone.split(":")[0], "name": backbone, "weights_sha256": sha},
    }
    if budget is not None:
        policy = budget.split(":")[0]
        rec["budget"] = {"policy": policy, "label": budget, "phases": [
            {"name": "main", "epochs": 1.5, "steps": 40, "batch_size": 64, "samples": 2560}]}
        rec["selection"] = {"split": "test" if selection else "val", "tag": selection}
    if status == "ok":
        rec.update(metrics=metrics, query_domain=query_domain, gallery=gallery or "photo")
    elif status == "n/a":
        rec["reason"] = reason
    name = hashlib.sha256(key.encode()).hexdigest()[:12]
    path = out / "records" / f"{method}_{dataset}_{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rec, indent=2))
    return rec


@pytest.fixture
def make_record():
    return write_record


REPORTED = """method,dataset,protocol,query_domain,gallery,metric,value,backbone,source
zero_shot,domainnet,ucdr,sketch,unseen,mAP@200,0.4435,ViT-B/32,Paper A Table 1
zero_shot,domainnet,ucdr,sketch,unseen,Prec@200,38.40,ViT-B/32,Paper A Table 1
pros,domainnet,ucdr,sketch,unseen,mAP@200,0.6457,ViT-B/32,Paper B
dcar,fdrd,itr,oxford_pets,captions,i2t_R@1,52.88,ViT-B/32,Paper C
maple,fdrd,itr,average9,captions,i2t_R@1,35.42,ViT-B/32,Paper C
"""


def cub_metrics(r1: float, map_all: float) -> dict[str, float]:
    return {"R@1": r1, "R@8": r1 + 0.3, "R@2": r1 + 0.1, "mAP@all": map_all, "MAP@R": map_all - 0.05}


def fdrd_metrics(pets: float, flowers: float) -> dict[str, float]:
    """Two source datasets and their unweighted mean, on the recorded (percent) scale."""
    out: dict[str, float] = {}
    for name, base in (("oxford_pets", pets), ("oxford_flowers", flowers)):
        part = {"i2t_R@1": base, "i2t_R@5": base + 20, "i2t_R@10": base + 30, "t2i_R@1": base - 10,
                "t2i_R@5": base + 10, "t2i_R@10": base + 20, "mean_R@1": base - 5}
        part["RSUM"] = sum(v for k, v in part.items() if k != "mean_R@1")
        out.update({f"{name}/{k}": v for k, v in part.items()})
    for key in ("i2t_R@1", "i2t_R@5", "i2t_R@10", "t2i_R@1", "t2i_R@5", "t2i_R@10", "mean_R@1", "RSUM"):
        out[key] = (out[f"oxford_pets/{key}"] + out[f"oxford_flowers/{key}"]) / 2
    return out


def build_scenario(out: Path) -> Path:
    """The issue's records: two backbones, two budgets, a test-selected row, single-seed cells, an n/a cell,
    a published number that matches exactly (delta), one under another backbone, one of a method that is
    not implemented. Returns the reported-numbers CSV."""
    cub = {"dataset": "cub", "protocol": "fgir_open"}
    write_record(out, method="coop", **cub, seed=0, metrics=cub_metrics(0.50, 0.30))
    write_record(out, method="coop", **cub, seed=1, metrics=cub_metrics(0.54, 0.32))
    write_record(out, method="coop", **cub, budget="steps:40", metrics=cub_metrics(0.45, 0.25))
    write_record(out, method="zero_shot", **cub, metrics=cub_metrics(0.40, 0.20))
    write_record(out, method="zero_shot", **cub, backbone="tiny-clip:seed=1", metrics=cub_metrics(0.30, 0.10))
    write_record(out, method="linear_probe", **cub, selection="test-selected", metrics=cub_metrics(0.70, 0.60))
    write_record(out, method="vpt", **cub, status="n/a", reason="needs captions", metrics=None)
    dn = {"dataset": "domainnet", "protocol": "ucdr", "variant": "paper", "holdout": "sketch", "gallery": "unseen",
          "query_domain": "sketch", "budget": "paper"}
    write_record(out, method="zero_shot", **dn, seed=0, backbone="hf-clip:openai/clip-vit-base-patch32",
                 metrics={"mAP@200": 0.45, "Prec@200": 0.39})
    write_record(out, method="zero_shot", **dn, seed=1, backbone="hf-clip:/models/clip-b32",  # the same weights
                 sha256=SHA["hf-clip:openai/clip-vit-base-patch32"], metrics={"mAP@200": 0.47, "Prec@200": 0.40})
    write_record(out, method="dcar", dataset="fdrd", protocol="itr", metrics=fdrd_metrics(40.0, 20.0))
    reported = out.parent / f"{out.name}_reported.csv"
    reported.write_text(REPORTED)
    return reported


@pytest.fixture
def scenario(tmp_path):
    out = tmp_path / "run"
    return out, build_scenario(out)


@pytest.fixture
def weights_sha():
    return dict(SHA)
