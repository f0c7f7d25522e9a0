"""Model selection never sees test data, unless a paper protocol explicitly allows it (then it is tagged)."""

from __future__ import annotations

import json

import pytest

from xdomain_bench.cli import main
from xdomain_bench.data.datamodule import RetrievalDataModule
from xdomain_bench.methods.base import method_names
from xdomain_bench.runner import execute
from xdomain_bench.runner.execute import run_cell
from xdomain_bench.runner.records import Cell

SMALL = {"pros": {"val_checks": 1, "phases": {"stage1": {"batch_size": 8}, "stage2": {"batch_size": 8}}},
         "ucdr_adapter": {"val_checks": 1, "phases": {"phase1": {"batch_size": 8}, "phase2": {"batch_size": 8}}},
         "zero_shot": {}}


@pytest.fixture
def role_log(monkeypatch):
    """(role, inside fit?) for every dataset the DataModule hands out: the loaders and the feature cache both
    build their datasets through `dataset_for`."""
    log: list[tuple[str, bool]] = []
    state = {"fitting": False}
    original_dataset_for, original_fit = RetrievalDataModule.dataset_for, execute.fit_phases

    def dataset_for(self, role, train_transform=False):
        log.append((role, state["fitting"]))
        return original_dataset_for(self, role, train_transform)

    def fit_phases(*args, **kwargs):
        state["fitting"] = True
        try:
            return original_fit(*args, **kwargs)
        finally:
            state["fitting"] = False

    monkeypatch.setattr(RetrievalDataModule, "dataset_for", dataset_for)
    monkeypatch.setattr(execute, "fit_phases", fit_phases)
    return log


@pytest.mark.parametrize("method", method_names())
def test_fit_reads_no_test_sample_and_the_record_names_the_selection_split(method, synth_all, tmp_path, role_log):
    overrides = SMALL.get(method, {"batch_size": 8, "val_checks": 1})
    cell = Cell(method=method, dataset="sketchy", protocol="uccdr_eccv21", budget="steps:2",
                method_overrides=overrides, data_options={"augment": False})
    rec = run_cell(cell, synth_all, tmp_path, progress=False, raise_errors=True)
    assert rec["status"] == "ok"
    during_fit = {role for role, fitting in role_log if fitting}
    assert not during_fit & {"query", "gallery"}, during_fit
    if method == "zero_shot":
        assert rec["selection"] == {"split": None, "tag": None} and rec["budget"]["phases"] == []
        return
    assert "train" in {role for role, _ in role_log}
    assert {"val_query", "val_gallery"} <= {role for role, _ in role_log}
    assert rec["selection"] == {"split": "val", "tag": None}
    selected = [p["selected"]["split"] for p in rec["training"]["phases"] if p.get("selected", {}).get("split")]
    assert selected and set(selected) == {"val"}
    assert rec["budget"]["label"] == "steps:2" and rec["cell"]["budget"] == "steps:2"
    assert sum(p["steps_trained"] for p in rec["budget"]["phases"]) == 2


def _cell_args(root, out, *extra):
    return ["run", "--method", "linear_probe", "--dataset", "sketchy", "--data-root", str(root), "--out", str(out),
            "--max-steps", "2", "--set", "method.batch_size=8", "--set", "method.val_checks=1", "--no-progress", *extra]


def _record(out) -> dict:
    (path,) = (out / "records").glob("*.json")
    return json.loads(path.read_text())


def test_paper_protocol_without_validation_selects_on_test_only_when_allowed(synth_all, tmp_path, role_log):
    plain, allowed = tmp_path / "plain", tmp_path / "allowed"
    assert main(_cell_args(synth_all, plain, "--variant", "paper")) == 0
    rec = _record(plain)
    assert rec["selection"] == {"split": None, "tag": None}  # no val split: final weights, never test
    assert not {r for r, fitting in role_log if fitting} & {"query", "gallery"}
    role_log.clear()
    assert main(_cell_args(synth_all, allowed, "--variant", "paper", "--set",
                           "data.allow_test_selection=true")) == 0
    rec = _record(allowed)
    assert rec["selection"] == {"split": "test", "tag": "test-selected"}
    assert rec["training"]["phases"][0]["selected"]["split"] == "test"
    assert {"query", "gallery"} <= {r for r, fitting in role_log if fitting}


def test_test_selection_under_the_clean_variant_is_refused(synth_all, tmp_path, capsys):
    rc = main(_cell_args(synth_all, tmp_path / "o", "--set", "data.allow_test_selection=true"))
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("xbench: error: allow_test_selection is legal only under --variant paper")
    assert "\n" not in err and not (tmp_path / "o" / "records").exists()


def test_dry_run_names_the_selection_split(synth_all, tmp_path, capsys):
    base = ["run", "--method", "coop", "--dataset", "sketchy", "--data-root", str(synth_all), "--out",
            str(tmp_path / "o"), "--dry-run", "--json", "--max-steps", "2"]
    seen = []
    for extra in ([], ["--variant", "paper"], ["--variant", "paper", "--set", "data.allow_test_selection=true"]):
        assert main(base + extra) == 0
        seen.append(json.loads(capsys.readouterr().out)[0]["selection"])
    assert seen == ["val", "none (last weights)", "test (allowed)"]
