"""The runner's H14 feature cache: a cacheable method's cell (DALSCLIP) trains, validates and is tested on cached
frozen features; the store is built once and reused by the next seed and cell without running the encoder; a
crashed cached cell resumes to the uninterrupted weights; the cache changes nothing but where features come from."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from xdomain_bench.runner.execute import run_cell
from xdomain_bench.runner.records import Cell
from xdomain_bench.vlm.frozen import FrozenVLM

pytestmark = pytest.mark.slow  # a handful of tiny-clip cells, ~1 min on 2 cores

DALS = {"batch_size": 8}


@pytest.fixture
def cache_home(tmp_path, monkeypatch) -> Path:
    """XBENCH_CACHE pointed at a fresh folder: stores land in `<it>/features`."""
    home = tmp_path / "xbench_cache"
    monkeypatch.setenv("XBENCH_CACHE", str(home))
    return home


@pytest.fixture
def encoder_calls(monkeypatch) -> list[int]:
    """Counts images through the frozen image encoder (every path reaches `FrozenVLM.encode_image`)."""
    calls: list[int] = []
    original = FrozenVLM.encode_image

    def counting(self, pixels, **kwargs):
        calls.append(int(pixels.shape[0]))
        return original(self, pixels, **kwargs)

    monkeypatch.setattr(FrozenVLM, "encode_image", counting)
    return calls


def _cell(dataset: str, protocol: str, seed: int = 0, steps: int = 2, **data) -> Cell:
    return Cell(method="dalsclip", dataset=dataset, protocol=protocol, seed=seed, budget=f"steps:{steps}",
                method_overrides=DALS, data_options=data)


def _run(cell: Cell, root, out, **kw) -> dict:
    return run_cell(cell, root, out, progress=False, raise_errors=True, **kw)


def test_dalsclip_cell_uses_the_cache_and_the_next_cells_reuse_it(synth_all, tmp_path, cache_home, encoder_calls):
    # a full epoch (48 train rows, batch 8, 6 steps): every train row is cached
    full = {"max_train_samples": 48}
    rec = _run(_cell("domainnet", "ucdr", steps=6, **full), synth_all, tmp_path / "out")
    assert rec["status"] == "ok" and rec["training"]["phases"][0]["steps"] == 6
    fc = rec["feature_cache"]
    assert fc["used"] is True and fc["augmentation"] == "none" and fc["kind"] == "post_proj"
    assert fc["train_rows"] == "all"
    store = Path(fc["store"])
    assert store.is_file() and store.parent == cache_home / "features"
    assert fc["stats"]["computed"] > 0 and fc["build_s"] > 0
    assert sum(encoder_calls) == fc["stats"]["computed"]  # each image once; train, val and test read the cache
    assert rec["counts"]["n_query"] == rec["manifest"]["counts"]["query"]
    mtime = store.stat().st_mtime_ns

    encoder_calls.clear()  # another seed, then another method's cell on the same tree: the store serves both
    again = _run(_cell("domainnet", "ucdr", seed=1, steps=6, **full), synth_all, tmp_path / "out")
    zero_shot = _run(Cell(method="zero_shot", dataset="domainnet", protocol="ucdr"), synth_all, tmp_path / "out")
    for r in (again, zero_shot):
        assert r["status"] == "ok" and r["feature_cache"]["store"] == str(store)
        assert r["feature_cache"]["stats"]["computed"] == 0
    assert again["feature_cache"]["stats"]["reused"] == fc["stats"]["computed"]
    assert 0 < zero_shot["feature_cache"]["stats"]["reused"] < fc["stats"]["computed"]  # test roles only
    assert encoder_calls == [] and store.stat().st_mtime_ns == mtime


def test_a_short_run_caches_only_the_train_rows_it_reads(synth_all, tmp_path, cache_home, encoder_calls):
    """2 steps of 8 on thousands of train rows: the cold store gets those 16 rows (plus the eval roles)."""
    rec = _run(_cell("domainnet", "ucdr"), synth_all, tmp_path / "out")
    fc = rec["feature_cache"]
    assert rec["status"] == "ok" and fc["train_rows"] == 16
    assert sum(encoder_calls) == fc["stats"]["computed"]
    mixed = _run(_cell("domainnet", "ucdr", gallery="mixed"), synth_all, tmp_path / "out")
    new = mixed["feature_cache"]["stats"]["computed"]  # only what the mixed gallery adds
    assert 0 < new < mixed["feature_cache"]["stats"]["reused"] and sum(encoder_calls) == fc["stats"]["computed"] + new


@pytest.mark.parametrize(("dataset", "protocol"), [("cub", "fgir_open"), ("fdrd", "itr")])
def test_single_domain_datasets_evaluate_from_the_cache(dataset, protocol, synth_all, tmp_path, cache_home,
                                                        encoder_calls):
    rec = _run(_cell(dataset, protocol), synth_all, tmp_path / "out")
    assert rec["status"] == "ok" and rec["feature_cache"]["used"] is True
    assert sum(encoder_calls) == rec["feature_cache"]["stats"]["computed"] > 0
    assert rec["notes"]["single_domain"] is True
    if dataset == "fdrd":  # image-text: DALSCLIP's prompted text tower against cached image features
        assert {"i2t_R@1", "t2i_R@1", "RSUM"} <= set(rec["metrics"])
        assert rec["counts"]["n_gallery"] >= rec["counts"]["n_query"] > 0  # captions of the query images


def test_cached_and_encoder_runs_agree_without_augmentation(synth_all, tmp_path, cache_home):
    """With train augmentation off both paths see the same images, so the cache changes nothing but speed."""
    cell = _cell("sketchy", "uccdr_eccv21", steps=3, augment=False)
    cached = _run(cell, synth_all, tmp_path / "cached")
    direct = _run(cell, synth_all, tmp_path / "direct", feature_cache=False)
    assert cached["feature_cache"]["used"] is True and direct["feature_cache"] == {"used": False,
                                                                                 "reason": "turned off"}
    assert cached["metrics"].keys() == direct["metrics"].keys()
    for key, value in direct["metrics"].items():
        assert cached["metrics"][key] == pytest.approx(value, abs=1e-6), key
    w_c = torch.load(tmp_path / "cached" / "checkpoints" / cell.slug() / "main" / "selected.pt")
    w_d = torch.load(tmp_path / "direct" / "checkpoints" / cell.slug() / "main" / "selected.pt")
    assert w_c.keys() == w_d.keys()
    for k in w_d:
        torch.testing.assert_close(w_c[k], w_d[k], rtol=0, atol=1e-5)


def test_a_crashed_cached_cell_resumes_to_the_same_weights(synth_all, tmp_path, cache_home, xbench_subprocess):
    """The cached train loader shares the DataModule's batch sampler, so FastForwardSampler skips the batches
    trained before the crash exactly as on the pixel path (dropout RNG restored from the checkpoint)."""
    cell = _cell("domainnet", "ucdr", steps=6)
    ref = _run(cell, synth_all, tmp_path / "ref")
    out = tmp_path / "crash"
    crashed = xbench_subprocess(["run", "--method", "dalsclip", "--dataset", "domainnet", "--max-steps", "6",
                                 "--set", "method.batch_size=8", "--no-progress", "--data-root", synth_all, "--out", out],
                                env={"XBENCH_CRASH_AFTER_STEPS": "4"})
    assert crashed.returncode == -9  # SIGKILL (the crash hook), so no record and nothing saved on the way out
    phase_dir = out / "checkpoints" / cell.slug() / "main"
    step = torch.load(phase_dir / "resume.ckpt", weights_only=False)["global_step"]
    assert 0 < step < 6 and not (phase_dir / "done.json").exists()
    rec = _run(cell, synth_all, out)
    (phase,) = rec["training"]["phases"]
    assert rec["status"] == "ok" and phase["resumed"] is True and phase["steps"] == 6
    assert phase["selected"] == ref["training"]["phases"][0]["selected"]
    assert rec["metrics"] == ref["metrics"]
    sel = torch.load(phase_dir / "selected.pt")
    ref_sel = torch.load(tmp_path / "ref" / "checkpoints" / cell.slug() / "main" / "selected.pt")
    assert sel.keys() == ref_sel.keys() and all(torch.equal(sel[k], ref_sel[k]) for k in ref_sel)
    assert json.loads((phase_dir / "done.json").read_text())["resumed"] is True
