"""Golden tolerances: one query's worth per metric, checked against the engine, and how `regress` uses them."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from xdomain_bench.cli import main
from xdomain_bench.eval.engine import evaluate_class_retrieval
from xdomain_bench.eval.itr import evaluate_image_text
from xdomain_bench.leaderboard.granularity import one_query

CLASS_METRICS = ["R@1", "R@4", "mAP@all", "MAP@R", "R-Precision", "mAP@200", "Prec@100"]


def test_hand_values():
    assert one_query("R@1", {"n_query": 64}) == 1 / 64
    by = {"a": {"n_query": 40, "n_gallery": 200}, "b": {"n_query": 50, "n_gallery": 250}}
    counts = {"n_query": 90, "n_gallery": 450, "by_source": by}
    assert one_query("a/i2t_R@1", counts) == 100 / 40
    assert one_query("b/t2i_R@5", counts) == 100 / 250
    assert one_query("i2t_R@1", counts) == pytest.approx(100 / 40 / 2)  # mean of two sources: the smaller rules
    assert one_query("a/RSUM", counts) == pytest.approx(3 * (100 / 40 + 100 / 200))
    assert one_query("mean_R@1", counts) == pytest.approx((100 / 40 + 100 / 200) / 2 / 2)


def test_one_changed_query_moves_class_metrics_by_at_most_one_querys_worth():
    """Move one query anywhere: every mean metric changes by at most 1 / n_query, and some by more than
    half of it for a query that goes from a hit to a miss (so the bound is tight, not loose)."""
    g = torch.Generator().manual_seed(0)
    gallery, g_lab = torch.randn(300, 16, generator=g), torch.randint(0, 6, (300,), generator=g)
    query, q_lab = gallery[:40] + 0.05 * torch.randn(40, 16, generator=g), g_lab[:40].clone()
    base = evaluate_class_retrieval(query, q_lab, gallery, g_lab, CLASS_METRICS, same_set=False, distance="cosine")
    tol = {m: one_query(m, {"n_query": 40}) for m in CLASS_METRICS}
    moved = query.clone()
    moved[7] = gallery[(g_lab != q_lab[7]).nonzero()[0, 0]]  # now its nearest neighbour is of another class
    after = evaluate_class_retrieval(moved, q_lab, gallery, g_lab, CLASS_METRICS, same_set=False, distance="cosine")
    for m in CLASS_METRICS:
        assert abs(after[m] - base[m]) <= tol[m] + 1e-12, m
    assert abs(after["R@1"] - base["R@1"]) == pytest.approx(tol["R@1"])


def test_one_changed_image_moves_image_text_recalls_by_at_most_one_querys_worth():
    g = torch.Generator().manual_seed(1)
    images = torch.randn(30, 8, generator=g)
    texts = images + 0.01 * torch.randn(30, 8, generator=g)
    owner, flat = list(range(30)), [f"caption {i}" for i in range(30)]
    base = evaluate_image_text(images, texts, owner, flat)
    moved = images.clone()
    moved[3] = -texts[3]  # image 3 now ranks its own caption last
    after = evaluate_image_text(moved, texts, owner, flat)
    counts = {"n_query": 30, "n_gallery": 30}
    for metric in ("i2t_R@1", "i2t_R@5", "t2i_R@1", "t2i_R@10"):
        assert abs(after[metric] - base[metric]) <= one_query(metric, counts) + 1e-9, metric
    assert base["i2t_R@1"] - after["i2t_R@1"] == pytest.approx(one_query("i2t_R@1", counts))


GOLDEN = "method,dataset,protocol,variant,query_domain,gallery,seed,metric,value,tolerance\n"


def _golden(tmp_path, value: float, tolerance: str = "0.015625", versions: dict | None = None):
    path = tmp_path / "g.csv"
    path.write_text(GOLDEN + f"coop,cub,fgir_open,clean,photo,photo,0,R@1,{value},{tolerance}\n")
    if versions is not None:
        (tmp_path / "g.meta.json").write_text(json.dumps({"library_versions": versions}))
    return path


@pytest.fixture
def run_dir(tmp_path, make_record):
    make_record(tmp_path / "run", method="coop", dataset="cub", protocol="fgir_open", metrics={"R@1": 0.5},
                budget="steps:2")
    (path,) = (tmp_path / "run" / "records").glob("*.json")
    rec = json.loads(path.read_text())
    rec.update(counts={"n_query": 64, "n_gallery": 64}, library_versions={"torch": "2.14.1", "numpy": "2.4.6"})
    path.write_text(json.dumps(rec))
    return tmp_path / "run", rec


@pytest.mark.parametrize(("golden", "rc"), [(0.51, 0), (0.484375, 0), (0.48, 1), (0.52, 1)])
def test_regress_allows_each_metrics_own_tolerance(tmp_path, run_dir, capsys, golden, rc):
    run, _ = run_dir
    assert main(["regress", str(run), "--against", str(_golden(tmp_path, golden))]) == rc
    out = capsys.readouterr().out
    assert ("metrics within their tolerances (one query's worth)" in out) == (rc == 0)


def test_an_explicit_tol_replaces_the_per_metric_ones(tmp_path, run_dir):
    run, _ = run_dir
    assert main(["regress", str(run), "--against", str(_golden(tmp_path, 0.51)), "--tol", "0.001"]) == 1


def test_regress_says_when_library_versions_differ(tmp_path, run_dir, capsys):
    run, rec = run_dir
    versions = dict(rec["library_versions"])
    same = _golden(tmp_path, 0.5, versions=versions)
    assert main(["regress", str(run), "--against", str(same)]) == 0
    assert "library versions differ" not in capsys.readouterr().out
    versions["torch"] = "0.0.1"
    other = _golden(tmp_path, 0.5, versions=versions)
    assert main(["regress", str(run), "--against", str(other)]) == 0
    assert "library versions differ from the golden run's: torch" in capsys.readouterr().out


def test_update_writes_tolerances_and_versions(tmp_path, run_dir):
    run, _ = run_dir
    path = tmp_path / "new.csv"
    assert main(["regress", str(run), "--against", str(path), "--update"]) == 0
    golden = pd.read_csv(path)
    assert list(golden["tolerance"]) == [pytest.approx(1 / 64, abs=1e-6)]  # the record's 64 queries
    assert "library_versions" in json.loads((tmp_path / "new.meta.json").read_text())


def test_a_negative_tolerance_in_the_golden_file_is_one_line(tmp_path, run_dir, capsys):
    run, _ = run_dir
    assert main(["regress", str(run), "--against", str(_golden(tmp_path, 0.5, tolerance="-1"))]) == 2
    assert "tolerance '-1'" in capsys.readouterr().err
