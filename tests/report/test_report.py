"""`xbench report` over a small smoke-like run (tiny trees, tiny-clip, 2 steps): one chart per protocol, one grid
per method, borders that match relevance in the manifest, per-query files that match a brute-force ranking of
the frozen embeddings, training curves from Lightning's CSVLogger format, and a page that loads nothing."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections import defaultdict
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from xdomain_bench.cli import main
from xdomain_bench.paths import project_root
from xdomain_bench.report.cli import build_report
from xdomain_bench.runner.per_query import read_per_query
from xdomain_bench.runner.records import Cell

SUITE = project_root() / "benchmarks" / "suites" / "smoke.yaml"
DATASETS = ("domainnet", "sketchy")
METHODS = ("zero_shot", "coop")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from xdomain_bench.data.base import get_dataset

    root = tmp_path_factory.mktemp("data")
    for name in DATASETS:
        get_dataset(name).synth(root, scale="tiny", seed=0)
    out = tmp_path_factory.mktemp("run")
    rc = main(["run", "--suite", str(SUITE), "--data-root", str(root), "--out", str(out), "--no-progress",
               "--only", f"method={','.join(METHODS)}", "--only", f"dataset={','.join(DATASETS)}", "--seeds", "0,1"])
    assert rc == 0
    page = build_report(out)
    return root, out, page


class Page(HTMLParser):
    """Every tag with its attributes, and the grid images with the method and query they sit under."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.method = self.query = None
        self.cells: list[dict] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append((tag, a))
        if "data-method" in a:
            self.method = a["data-method"]
        if "data-query" in a:
            self.query = int(a["data-query"])
        if tag == "img" and "data-gallery" in a:
            self.cells.append({"method": self.method, "query": self.query, "gallery": int(a["data-gallery"]),
                               "rank": int(a["data-rank"]), "hit": a["class"] == "hit"})


def _parse(path: Path) -> Page:
    p = Page()
    p.feed(path.read_text(encoding="utf-8"))
    return p


def _records(out: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((out / "records").glob("*.json"))]


def test_one_chart_per_protocol_and_one_grid_per_method(run):
    _, out, path = run
    page = _parse(path)
    protocols = sorted({f"{r['dataset']}/{r['protocol']}" for r in _records(out)})
    charts = [a["data-protocol"] for t, a in page.tags if t == "figure" and "protocol-chart" in a.get("class", "")]
    assert sorted(charts) == protocols
    grids = [a["data-method"] for t, a in page.tags if t == "div" and "data-method" in a]
    assert sorted(grids) == sorted(METHODS * len(DATASETS))  # one per method in each setting


def test_grid_borders_match_manifest_relevance(run):
    from xdomain_bench.data.datamodule import RetrievalDataModule
    from xdomain_bench.vlm import load_backbone

    root, out, path = run
    page = _parse(path)
    recs = [r for r in _records(out) if r["seed"] == 0]
    by_setting = defaultdict(list)
    for rec in recs:
        by_setting[rec["dataset"]].append(rec)
    grid_order = [g["method"] for g in page.cells]
    assert grid_order
    cells = iter(page.cells)
    for dataset in sorted(by_setting):  # the page lists settings in sorted order, methods sorted within
        rec = by_setting[dataset][0]
        dm = RetrievalDataModule(dataset, root, rec["protocol"], holdout=rec["holdout"],
                                 preprocess=load_backbone("tiny-clip").preprocess, **rec["cell"]["data_options"])
        dm.setup()
        q_cls = list(dm.role_frame("query")["class_name"])
        g_cls = list(dm.role_frame("gallery")["class_name"])
        for rec in sorted(by_setting[dataset], key=lambda r: r["method"]):
            pq = read_per_query(out / "records", rec["per_query"])
            shown = [next(cells) for _ in range(4 * 8)]
            assert {c["method"] for c in shown} == {rec["method"]}
            for c in shown:
                assert c["hit"] == (g_cls[c["gallery"]] == q_cls[c["query"]])
                assert c["gallery"] == pq["top_index"][c["query"]][c["rank"] - 1]
    assert next(cells, None) is None
    assert {c["hit"] for c in page.cells} == {True, False}  # both borders are exercised


def test_zero_shot_per_query_file_matches_brute_force(run):
    from xdomain_bench.data.datamodule import RetrievalDataModule
    from xdomain_bench.methods.base import get_method_class
    from xdomain_bench.methods.config import resolve_config
    from xdomain_bench.runner.evaluate import embed_batches
    from xdomain_bench.vlm import load_backbone

    root, out, _ = run
    rec = next(r for r in _records(out) if r["method"] == "zero_shot" and r["dataset"] == "domainnet")
    pq = read_per_query(out / "records", rec["per_query"])
    vlm = load_backbone("tiny-clip")
    dm = RetrievalDataModule("domainnet", root, rec["protocol"], holdout=rec["holdout"], preprocess=vlm.preprocess,
                             **rec["cell"]["data_options"])
    dm.setup()
    method = get_method_class("zero_shot")(vlm, dm.info, resolve_config("zero_shot", None, "domainnet", {}))
    q, ql = embed_batches(method, dm.eval_dataloader("query"), len(dm.role_frame("query")), "query")
    g, gl = embed_batches(method, dm.eval_dataloader("gallery"), len(dm.role_frame("gallery")), "gallery")
    qn, gn = (x.double().numpy() / np.linalg.norm(x.double().numpy(), axis=1, keepdims=True) for x in (q, g))
    S = qn @ gn.T
    k = pq["top_index"].shape[1]
    assert k == min(100, max(int(m.split("@")[1]) for m in rec["metrics"] if m.split("@")[-1].isdigit()))
    assert np.array_equal(pq["query_class"], ql.numpy()) and np.array_equal(pq["gallery_class"], gl.numpy())
    for i in range(len(S)):
        order = np.lexsort((np.arange(S.shape[1]), -S[i]))[:k]
        assert np.array_equal(pq["top_index"][i], order)
        rel = gl.numpy() == ql[i].item()
        assert pq["n_relevant"][i] == rel.sum()
        assert pq["ap"][i] == pytest.approx(average_precision_score(rel, S[i]), abs=1e-6)
    assert pq["ap"].mean() == pytest.approx(rec["metrics"]["mAP@all"], abs=1e-12)


def test_page_loads_no_external_resource(run):
    page = _parse(run[2])
    for tag, attrs in page.tags:
        assert tag != "link" and not (tag == "script" and "src" in attrs), (tag, attrs)
        for key in ("src", "href", "srcset", "data", "poster", "action"):
            if key in attrs:
                assert attrs[key].startswith(("data:", "#")), (tag, key, attrs[key][:80])
    text = run[2].read_text(encoding="utf-8")
    assert "url(" not in text and "@import" not in text


def test_training_curves_from_csv_logger_files(run, tmp_path):
    from lightning.pytorch.loggers import CSVLogger

    _, out, _ = run
    copy = tmp_path / "run"
    shutil.copytree(out / "records", copy / "records")
    rec = next(r for r in _records(out) if r["method"] == "coop")
    slug = Cell(**rec["cell"]).slug()
    logger = CSVLogger(save_dir=copy / "logs" / slug, name="main")  # <save_dir>/<name>/version_0/metrics.csv
    for step, (loss, val) in enumerate([(2.0, 0.1), (1.5, 0.3), (1.2, 0.25)]):
        logger.log_metrics({"train_loss": loss, "lr-AdamW": 1e-3}, step=step)
        logger.log_metrics({"val_selection": val}, step=step)
    logger.save()
    from xdomain_bench.report.collect import Run, collect

    folder = collect(copy)
    logs = folder.training_logs(Run(rec))
    assert [phase for phase, _ in logs] == ["main"]
    frame = logs[0][1]
    assert frame["train_loss"].dropna().tolist() == [2.0, 1.5, 1.2]
    assert frame["val_selection"].dropna().tolist() == [0.1, 0.3, 0.25]
    page = _parse(build_report(copy, tmp_path / "r.html"))
    assert any(t == "figure" and "curve-chart" in a.get("class", "") for t, a in page.tags)


def _browser() -> str | None:
    return next((b for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)


def _console_lines(browser: str, page: Path) -> list[str]:
    proc = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr",
                           "--v=0", "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    assert "</html>" in proc.stdout, proc.stderr[-2000:]
    return [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]


def test_page_renders_in_a_headless_browser_without_console_messages(run, tmp_path):
    browser = _browser()
    if browser is None:
        pytest.skip("no headless browser (chromium) installed")
    control = tmp_path / "control.html"  # the check sees a console error where there is one
    control.write_text("<!DOCTYPE html><html><body><script>console.error('control-error')</script></body></html>")
    assert any("control-error" in line for line in _console_lines(browser, control))
    assert _console_lines(browser, run[2]) == []


def test_report_command_rejects_a_folder_without_records(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("xbench: error: no records under")
