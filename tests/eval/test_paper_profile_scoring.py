"""A paper profile that names its upstream scoring (DomainNet `snmpnet`, PROTOCOLS.md §7.4) is what the runner
evaluates with: exp(-Euclidean) on the embeddings as the method returns them, sklearn tie mode."""

from __future__ import annotations

import json

import pytest
import torch

from xdomain_bench.cli import main
from xdomain_bench.data.datamodule import RetrievalDataModule
from xdomain_bench.eval.engine import evaluate_class_retrieval

from .test_snmpnet_reproduction import snmpnet_reference


def test_snmpnet_profile_record_matches_snmpnets_formula(synth_domainnet, tiny_vlm, tmp_path):
    out = tmp_path / "run"
    rc = main(["run", "--method", "zero_shot", "--dataset", "domainnet", "--data-root", str(synth_domainnet),
               "--holdout", "sketch", "--variant", "paper", "--paper-profile", "snmpnet", "--out", str(out),
               "--no-progress", "--accelerator", "cpu"])  # fmt: skip
    assert rc == 0
    (path,) = sorted((out / "records").glob("*.json"))
    rec = json.loads(path.read_text())
    assert rec["status"] == "ok"
    assert "exp_neg_euclidean" in rec["notes"]["evaluation"] and "sklearn" in rec["notes"]["evaluation"]

    dm = RetrievalDataModule("domainnet", synth_domainnet, "ucdr", "paper", "sketch", preprocess=tiny_vlm.preprocess,
                             paper_profile="snmpnet", cache_dir=tmp_path / "cache")  # fmt: skip
    dm.setup()
    assert dm.info.evaluation == {"similarity": "exp_neg_euclidean", "tie_mode": "sklearn"}

    def embed(role: str):
        with torch.no_grad():
            parts = [(tiny_vlm.encode_image(b["pixels"]).float(), b["class_id"]) for b in dm.eval_dataloader(role)]
        return torch.cat([e for e, _ in parts]).numpy(), torch.cat([y for _, y in parts]).numpy()

    (q, ql), (g, gl) = embed("query"), embed("gallery")
    want = snmpnet_reference(q, ql, g, gl, k=200, sort_kind="stable")
    for name in ("mAP@200", "Prec@200", "mAP@all"):
        assert rec["metrics"][name] == pytest.approx(want[name], abs=1e-6), name
    # the method's own scoring (cosine, stable ties) gives another number on these raw features
    cosine = evaluate_class_retrieval(q, ql, g, gl, ["mAP@all"])["mAP@all"]
    assert abs(cosine - rec["metrics"]["mAP@all"]) > 1e-4
