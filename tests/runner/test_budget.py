"""Budgets: the three policies against hand computation, the dry run, and what every record stores."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from xdomain_bench.cli import main
from xdomain_bench.errors import ConfigError
from xdomain_bench.paths import project_root
from xdomain_bench.runner.budget import Budget, parse_budget, resolve_budget

SUITES = project_root() / "benchmarks" / "suites"
TWO_PHASES = {
    "phase1": {"batch_size": 400, "epochs": 1, "step_fraction": 0.1, "early_stop_patience": None},
    "phase2": {"batch_size": 50, "epochs": 10, "step_fraction": 0.9, "early_stop_patience": 2},
}


@pytest.mark.parametrize(("text", "want"), [
    ("paper", Budget("paper")), ("matched:2560", Budget("matched", 2560)), ("steps:40", Budget("steps", 40)),
    ({"policy": "matched", "samples": 9}, Budget("matched", 9)), ({"policy": "steps", "steps": "3"}, Budget("steps", 3)),
])
def test_parse_budget(text, want):
    assert parse_budget(text, "t") == want
    assert parse_budget(want.label, "t") == want  # the label round-trips


@pytest.mark.parametrize(("text", "fragment"), [
    ("epochs", "unknown budget policy 'epochs'"), ("steps:0", "whole number >= 1"), ("steps:eight", "'eight'"),
    ({"policy": "matched"}, "needs 'samples'"), ({"policy": "paper", "steps": 3}, "unknown budget key(s) ['steps']"),
    (5, "bad budget 5"),
])
def test_bad_budgets_are_config_errors(text, fragment):
    with pytest.raises(ConfigError, match=None) as info:
        parse_budget(text, "suite s.yaml")
    assert fragment in str(info.value) and "suite s.yaml" in str(info.value)


def test_paper_budget_converts_epochs_with_the_real_training_size():
    plan = resolve_budget(Budget("paper"), TWO_PHASES, n_train=1234,
                          provenance={"phases.phase1.epochs": "code", "phases.phase2.epochs": "not published"})
    p1, p2 = plan["phases"]
    assert (p1["epochs"], p1["steps"], p1["batch_size"], p1["source"]) == (1.0, 4, 400, "published")  # ceil(3.085)
    assert (p2["epochs"], p2["steps"], p2["source"]) == (10.0, 247, "ours")  # ceil(246.8)
    assert p2["early_stop_patience"] == 2 and p2["val_every"] == 25  # once per epoch: ceil(1234 / 50)
    assert p1["samples"] == 1600 and p2["samples"] == 247 * 50


def test_paper_budget_in_steps_reports_consistent_fractional_epochs():
    for n_train in (999, 4885, 120_000, 7):
        plan = resolve_budget(Budget("paper"), {"main": {"batch_size": 160, "steps": 5001}}, n_train, {"steps": "code"})
        (phase,) = plan["phases"]
        assert phase["steps"] == 5001 and phase["source"] == "published"
        assert math.ceil(phase["epochs"] * n_train / 160) == 5001
        assert phase["epochs"] == pytest.approx(5001 * 160 / n_train, rel=1e-12)


def test_matched_budget_gives_equal_samples_within_one_batch_per_phase():
    methods = {"a": {"main": {"batch_size": 64}}, "b": {"main": {"batch_size": 32}},
               "c": {"main": {"batch_size": 100}}, "two": TWO_PHASES}
    for samples in (1280, 200_000, 7):
        for phases in methods.values():
            plan = resolve_budget(Budget("matched", samples), phases, n_train=5000)
            fractions = [p.get("step_fraction", 1.0) for p in phases.values()]
            for ph, frac in zip(plan["phases"], fractions):
                share = samples * frac / sum(fractions)
                assert share <= ph["samples"] < share + ph["batch_size"]
                assert ph["epochs"] == pytest.approx(ph["samples"] / 5000)


def test_steps_budget_splits_by_step_fraction():
    plan = resolve_budget(Budget("steps", 40), TWO_PHASES, n_train=100)
    assert [p["steps"] for p in plan["phases"]] == [4, 36]
    assert [p["val_every"] for p in plan["phases"]] == [1, 9]  # steps // val_checks (4)


def _train_rows(tmp_path, root, *args) -> int:
    out = tmp_path / "manifest.csv"
    assert main(["data", "manifest", *args, "--data-root", str(root), "--out", str(out)]) == 0
    return int((pd.read_csv(out)["role"] == "train").sum())


def test_dry_run_of_the_domainnet_paper_suite(synth_domainnet, tmp_path, capsys):
    out = tmp_path / "never"
    rc = main(["run", "--suite", str(SUITES / "ucdr_domainnet.yaml"), "--data-root", str(synth_domainnet),
               "--out", str(out), "--dry-run", "--json", "--only", "protocol=ucdr,holdout=sketch,gallery=unseen,seed=0"])
    plans = json.loads(capsys.readouterr().out)
    assert rc == 0 and not out.exists()
    n_train = _train_rows(tmp_path, synth_domainnet, "domainnet", "--protocol", "ucdr", "--holdout", "sketch")
    by_method = {p["method"]: p for p in plans}
    assert set(by_method) >= {"ucdr_adapter", "dalsclip", "zero_shot"}
    ucdr = by_method["ucdr_adapter"]["budget"]
    assert ucdr["policy"] == "paper" and ucdr["n_train"] == n_train
    p1, p2 = ucdr["phases"]
    assert (p1["name"], p1["epochs"], p2["name"], p2["epochs"], p2["early_stop_patience"]) == (
        "phase1", 1.0, "phase2", 10.0, 2)
    dals = by_method["dalsclip"]["budget"]["phases"][0]
    assert dals["steps"] == 5001 and dals["batch_size"] == 160  # the card states DomainBed's steps
    merged = _train_rows(tmp_path, synth_domainnet, "domainnet", "--protocol", "ucdr", "--holdout", "sketch",
                         "--option", "merge_val_classes=true")
    assert by_method["pros"]["budget"]["n_train"] == merged > n_train  # ProS trains on train + val classes
    for plan in plans:
        rows = plan["budget"]["n_train"]
        for ph in plan["budget"]["phases"]:
            assert ph["steps"] == math.ceil(ph["epochs"] * rows / ph["batch_size"]), (plan["method"], ph)
            assert ph["samples"] == ph["steps"] * ph["batch_size"]
    assert by_method["zero_shot"]["budget"]["phases"] == []


def test_dry_run_of_a_matched_suite_gives_every_method_the_same_samples(synth_all, tmp_path, capsys):
    rc = main(["run", "--suite", str(SUITES / "demo.yaml"), "--data-root", str(synth_all), "--out",
               str(tmp_path / "o"), "--dry-run", "--json", "--only", "dataset=cub,seed=0"])
    plans = json.loads(capsys.readouterr().out)
    assert rc == 0 and not (tmp_path / "o").exists()
    for plan in plans:
        if plan["method"] == "zero_shot":
            continue
        assert plan["budget"]["label"] == "matched:1280"
        total = sum(ph["samples"] for ph in plan["budget"]["phases"])
        assert 1280 <= total < 1280 + sum(ph["batch_size"] for ph in plan["budget"]["phases"]), plan["method"]


def test_dry_run_table_names_budget_and_phases(synth_all, tmp_path, capsys):
    rc = main(["run", "--method", "ucdr_adapter", "--dataset", "sketchy", "--data-root", str(synth_all),
               "--out", str(tmp_path / "o"), "--dry-run"])
    text = capsys.readouterr().out
    assert rc == 0 and not (tmp_path / "o").exists()
    assert "paper" in text and "phase1: 1 ep" in text and "phase2: 10 ep" in text and "(published)" in text


@pytest.mark.parametrize(("total", "want"), [(2, [1, 1]), (3, [1, 2]), (10, [1, 9]), (40, [4, 36]), (41, [4, 37])])
def test_steps_budget_totals_exactly_what_was_asked(total, want):
    plan = resolve_budget(Budget("steps", total), TWO_PHASES, n_train=100)
    assert [p["steps"] for p in plan["phases"]] == want and sum(want) == total
