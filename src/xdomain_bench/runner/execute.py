"""Run one cell: data + backbone + method -> fit (phase by phase, selected on val) -> evaluate -> record."""

from __future__ import annotations

import json
import os
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import torch

from ..errors import ConfigError, XBenchError
from ..eval.distributed import world
from ..io_utils import atomic_write, atomic_write_json
from .budget import record_trained
from .ddp import ValView, follow_rank0, sharded_val, val_counts
from .records import Cell, existing_ok_record, new_record, write_record
from .resume import PHASE_END, fit_interruptible, phase_end_state, restore_phase_end
from .trainer import build_trainer, resolve_accelerator, resolve_precision


def plan_budget(method_cls, cfg: dict[str, Any], cell: Cell, n_train: int) -> dict[str, Any]:
    """The cell's budget resolved for its method's phases and training-set size (runner/budget.py)."""
    from ..methods.config import load_card, phase_configs
    from .budget import parse_budget, resolve_budget

    budget = parse_budget(cell.budget, f"cell {cell.slug()}")
    if not method_cls.trainable:
        return {"policy": budget.policy, "label": budget.label, "n_train": n_train, "phases": []}
    phases = phase_configs(cfg, list(method_cls.phase_names))
    return resolve_budget(budget, phases, n_train, load_card(cell.method).get("provenance"))


def split_test_selection(data_options: dict[str, Any], variant: str) -> tuple[dict[str, Any], bool]:
    """Data options without `allow_test_selection`, and whether it was given (legal under `paper` only)."""
    options = dict(data_options)
    allow = options.pop("allow_test_selection", False)
    if not isinstance(allow, bool):
        raise ConfigError(f"allow_test_selection must be true or false, got {allow!r}")
    if allow and variant != "paper":
        raise ConfigError("allow_test_selection is legal only under --variant paper (the published codes' "
                          "protocol); clean protocols always select on their validation split")
    return options, allow


def cell_data_options(cell: Cell, method_cls, cfg: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """split_test_selection of the cell's data options, plus the options the method's config requests
    (`data_requests`, e.g. merged val classes); a data option that contradicts a request is an error."""
    options, allow = split_test_selection(cell.data_options, cell.variant)
    for key, value in method_cls.data_requests(cfg).items():
        if options.setdefault(key, value) != value:
            raise ConfigError(f"data option {key}={options[key]!r} contradicts {cell.method}'s config, which asks "
                              f"for {key}={value!r}; change one of them")
    return options, allow


def rank_device(accelerator: str) -> torch.device:
    """This rank's device: its own GPU (LOCAL_RANK) under CUDA, else the CPU."""
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if accelerator == "cuda" else torch.device("cpu")


def global_rank() -> int:
    """This process's rank under Lightning DDP (0 when not distributed)."""
    from lightning.pytorch.utilities.rank_zero import rank_zero_only

    return int(getattr(rank_zero_only, "rank", 0) or 0)


def fit_phases(method, dm, cell: Cell, out_dir: Path, accelerator: str, precision: str, progress: bool,
               devices: int = 1, strategy: str = "auto", data=None, *, budget: dict[str, Any],
               test_selection: bool = False, num_nodes: int = 1, logger: str = "none") -> dict[str, Any]:
    """Fit every phase in order, restoring each phase's best validation checkpoint.

    A finished phase leaves `selected.pt` (trainable state only) and `done.json`; an interrupted one
    leaves `resume.ckpt`, from which the next run continues with identical batches and RNG states.
    Under DDP every rank trains and restores the same weights; only rank 0 writes files.
    `data` (a `CachedFeatureData` over `dm`, for cacheable methods) replaces `dm` as what Lightning loads
    from: same batches and resume fast-forward, cached frozen features instead of pixels (H14).
    `budget` (plan_budget) gives each phase's steps and validation interval; `test_selection` selects on
    the test split where the protocol has no validation split (`paper` variant, explicitly allowed only).
    One progress bar counts the planned steps of every phase; `logger` (runner/loggers.py) logs each phase.
    """
    from .progress import cell_progress

    label = f"{cell.method} · {cell.dataset}/{cell.protocol} · seed {cell.seed}"
    with cell_progress(label, budget["phases"], progress and global_rank() == 0) as bar:
        return _fit_phases(method, dm, cell, out_dir, accelerator, precision, bar, devices, strategy, data,
                           budget, test_selection, num_nodes, logger)


def _fit_phases(method, dm, cell: Cell, out_dir: Path, accelerator: str, precision: str, bar, devices: int,
                strategy: str, data, budget: dict[str, Any], test_selection: bool, num_nodes: int,
                logger: str) -> dict[str, Any]:
    from .loggers import phase_logger

    info: dict[str, Any] = {"phases": []}
    protocol_val = bool(dm.val_dataloader())
    has_val = protocol_val or test_selection
    source = data if data is not None else dm
    val_split = "test" if test_selection and not protocol_val else "val"  # what model selection looks at
    if val_split == "test":
        source = TestSelectionData(source)
    if has_val and world()[1] > 1:  # each rank validates its share; the method gathers them (runner/ddp.py)
        method.val_expected = val_counts(source)
        source = sharded_val(source)
    for plan in budget["phases"]:
        phase = plan["name"]
        method.set_phase(phase)
        bar.start_phase(phase)
        if not any(p.requires_grad for p in method.parameters()):
            info["phases"].append({"name": phase, "steps": 0, "skipped": "no trainable parameters"})
            bar.end_phase(plan["steps"])
            continue
        phase_dir = out_dir / "checkpoints" / cell.slug() / phase
        done = phase_dir / "done.json"
        if done.is_file():  # finished in an earlier run: reuse its selected weights
            method.load_state_dict(torch.load(phase_dir / "selected.pt", map_location=method.device), strict=False)
            restore_phase_end(method, phase_dir)
            info["phases"].append({**json.loads(done.read_text()), "reused": True})
            bar.end_phase(plan["steps"])
            continue
        log = phase_logger(logger, out_dir, cell.slug(), phase) if global_rank() == 0 else False
        info["phases"].append(_fit_one_phase(method, dm, plan, phase_dir, has_val, accelerator, precision,
                                             bar, devices, strategy, source, num_nodes, log, val_split))
        bar.end_phase(plan["steps"])
    return info


class TestSelectionData(ValView):
    """Training data whose validation loaders are the test split (`allow_test_selection`, paper variant)."""

    def __init__(self, base) -> None:
        super().__init__(base, lambda b: b.test_dataloader())


def _fit_one_phase(method, dm, plan: dict[str, Any], phase_dir: Path, has_val: bool, accelerator: str,
                   precision: str, progress, devices: int, strategy: str, source,
                   num_nodes: int = 1, logger: Any = False, val_split: str = "val") -> dict[str, Any]:
    phase, steps = plan["name"], int(plan["steps"])
    pcfg = method.phase_config()
    dm.batch_size = int(plan["batch_size"])  # the cached loaders read it from `dm` too
    select_on_val = has_val and pcfg.get("selection", "val") == "val"
    trainer, ckpt = build_trainer(max_steps=steps, accelerator=accelerator, precision=precision,
                                  ckpt_dir=phase_dir, has_val=select_on_val, val_every=int(plan["val_every"]),
                                  progress=progress, early_stop_patience=plan["early_stop_patience"],
                                  devices=devices, strategy=strategy, num_nodes=num_nodes, logger=logger)
    resume = phase_dir / "resume.ckpt"
    resuming = resume.is_file()
    t0 = time.perf_counter()
    fit_interruptible(trainer, method, source, resume if resuming else None, phase)
    end_state = phase_end_state(method)  # before the selected weights replace the last ones
    entry: dict[str, Any] = {"name": phase, "steps": int(trainer.global_step), "seconds": time.perf_counter() - t0,
                             "trainable_params": method.trainable_counts()[phase], "batch_size": dm.batch_size,
                             "resumed": resuming}
    if ckpt is not None and ckpt.best_model_path:
        state = torch.load(ckpt.best_model_path, map_location=method.device, weights_only=False)
        method.load_state_dict(state["state_dict"], strict=False)
        entry["selected"] = {"metric": method.info.selection_metric, "split": val_split,
                             "value": float(ckpt.best_model_score), "step": int(state.get("global_step", -1))}
    else:
        why = "no validation split" if not has_val else f"phase {phase} keeps its last weights (card)"
        entry["selected"] = {"split": None, "note": f"{why}: final weights"}
    trainer.strategy.barrier()  # every rank has read the checkpoints before rank 0 deletes them
    if trainer.global_rank != 0:
        return entry
    atomic_write(phase_dir / "selected.pt", lambda p: torch.save(method.trainable_state_dict(), p))
    atomic_write(phase_dir / PHASE_END, lambda p: torch.save(end_state, p))
    atomic_write_json(phase_dir / "done.json", entry)
    for stale in phase_dir.glob("*.ckpt"):  # the selected trainable state is all a later run needs
        stale.unlink()
    return entry


def run_cell(cell: Cell, data_root: str | Path, out_dir: str | Path, *, skip_done: bool = False,
             on_claim: Callable[[], Any] | None = None, **kwargs: Any) -> dict[str, Any]:
    """Claim the cell (runner/claims.py), then execute it and write its record (`execute_cell`).

    A cell another runner holds is left alone: the result has status `claimed` and names the holder. With
    `skip_done`, a cell whose record turned `ok` before the claim was won (another runner finished it) is not
    run again: the result is that record with status `done`. `on_claim` runs once the claim is held, before
    anything else (e.g. copying shared checkpoints in). DDP ranks > 0 follow rank 0 and claim nothing."""
    from .claims import claim_cell

    if global_rank() != 0:  # rank 0 says whether the cell runs (claimed elsewhere, done already)
        return execute_cell(cell, data_root, out_dir, **kwargs) if follow_rank0() else {"status": "worker"}
    with claim_cell(out_dir, cell.slug()) as claim:
        done = existing_ok_record(out_dir, cell) if skip_done and claim.held else None
        if not follow_rank0(claim.held and done is None):
            if done is not None:
                return {**done, "status": "done"}
            return {"status": "claimed", "holder": claim.holder, "error": f"claimed by {claim.describe_holder()}"}
        if on_claim is not None:
            on_claim()
        record = execute_cell(cell, data_root, out_dir, **kwargs)
        if claim.stale:
            record["claim_recovered"] = claim.stale  # not written: the holder a killed runner left
        return record


def execute_cell(cell: Cell, data_root: str | Path, out_dir: str | Path, *, allow_download: bool = False,
                 accelerator: str = "auto", precision: str = "auto", num_workers: int = 0, progress: bool = True,
                 raise_errors: bool = False, devices: int = 1, strategy: str = "auto",
                 feature_cache: bool = True, per_query_top_k: int = 100, num_nodes: int = 1,
                 logger: str = "csv") -> dict[str, Any]:
    """Execute one cell and write its record (the caller holds its claim). XBenchErrors in set-up propagate
    when `raise_errors`. Class-retrieval cells save each query's top k gallery items (k: the largest metric
    cut-off, at most `per_query_top_k`; 0 saves nothing), AP and relevant count beside the record
    (runner/per_query.py).

    With `devices` x `num_nodes` > 1 the ranks are already running (runner/ddp.py): they train together,
    validate and evaluate each on its share of every role (gathered, counts checked), rank 0 computes the
    metrics and writes the record; the other ranks return status `worker`, having written nothing.

    A method with `cacheable = True` trains, validates and is tested on frozen image features from the H14
    store under `paths.cache_dir()/features` (computed once per dataset tree, backbone and transform, then
    reused by every later epoch, phase, seed and cell); `feature_cache=False` runs the encoder every step.
    """
    from ..data.datamodule import RetrievalDataModule
    from ..methods.base import get_method_class
    from ..methods.config import resolve_config
    from ..vlm import load_backbone
    from .evaluate import evaluate_test

    out_dir = Path(out_dir)
    record = new_record(cell)
    t_start = time.perf_counter()
    try:
        L.seed_everything(cell.seed, workers=True, verbose=False)
        accelerator = resolve_accelerator(accelerator)
        precision = resolve_precision(precision, accelerator)
        method_cls = get_method_class(cell.method)
        cfg = resolve_config(cell.method, cell.method_variant, cell.dataset, cell.method_overrides)
        data_options, test_selection = cell_data_options(cell, method_cls, cfg)
        vlm = load_backbone(cell.backbone, allow_download=allow_download)
        dm = RetrievalDataModule(cell.dataset, data_root, cell.protocol, cell.variant, cell.holdout,
                                 preprocess=vlm.preprocess, batch_size=int(cfg.get("batch_size", 32)),
                                 eval_batch_size=int(cfg.get("eval_batch_size", 128)), num_workers=num_workers,
                                 original_images=bool(getattr(method_cls, "original_images", False)),
                                 seed=cell.seed, **data_options)
        dm.setup()
        budget = plan_budget(method_cls, cfg, cell, len(dm.role_frame("train")))
        record["budget"] = budget
        reason = method_cls.unsupported_reason(dm.info) or vlm.unsupported_reason(cell.method)
        if reason:
            record.update(status="n/a", reason=reason, method_config=cfg, backbone=vlm.describe(),
                          manifest=_manifest_summary(dm))
            return _finish(out_dir, cell, record)
        method = method_cls(vlm, dm.info, cfg)
        record.update(method_config=cfg, backbone=vlm.describe(), precision=precision, device=_device_name(accelerator),
                      embedding_side=method.changed_embeddings(), task=dm.info.task,
                      trainable_params=method.trainable_counts(), manifest=_manifest_summary(dm))
        trains = method.has_training() and bool(budget["phases"])
        data = _cached_data(method, dm, budget, accelerator, precision, trains, devices) if feature_cache else None
        record["feature_cache"] = data.describe() if data is not None else {
            "used": False, "reason": "turned off" if method.cacheable else "method is not cacheable"}
        if trains and method.needs_train_features():
            method.prepare_fit(_train_features(method, dm, data, accelerator, precision))
        t_fit = time.perf_counter()
        if trains:
            record["training"] = fit_phases(method, dm, cell, out_dir, accelerator, precision, progress,
                                            devices, strategy, data, budget=budget, test_selection=test_selection,
                                            num_nodes=num_nodes, logger=logger)
            from .loggers import logs_entry

            logs = logs_entry(logger, out_dir, cell.slug())  # where `--logger` wrote (runner/loggers.py)
            if logs is not None and global_rank() == 0:
                record["logs"] = logs
        else:
            record["training"] = {"phases": [], "note": "no training"}
        record["budget"] = record_trained(budget, record["training"])
        record["selection"] = selection_of(record["training"])
        method.to(rank_device(accelerator))
        t_eval = time.perf_counter()
        from ..eval.per_query import PerQuery, top_k_size

        # class retrieval only: image-text relevance is not "same class", and its metric names are not @k cut-offs
        keep = per_query_top_k > 0 and dm.info.task != "itr"
        pq = PerQuery(top_k_size(dm.info.metrics, per_query_top_k)) if keep else None
        result = evaluate_test(method, dm, precision, loaders=data, on_chunk=pq)
        t_end = time.perf_counter()
        if global_rank() != 0:
            return {**record, "status": "worker"}
        if "distributed" in result:
            record["distributed"] = result["distributed"]
        if data is not None:
            record["feature_cache"] = data.describe()
        if pq is not None and pq.filled:
            from .per_query import per_query_arrays, write_per_query

            record["per_query"] = write_per_query(out_dir / "records", cell.slug(), per_query_arrays(pq, dm))
        record.update(metrics=result["metrics"], counts=result["counts"], status="ok",
                      query_domain=_query_domain(dm), gallery=_gallery_name(dm, cell),
                      notes={**dm.info.notes, **method.notes}, skipped_images=dm.skipped_images,
                      timings={"setup_s": t_fit - t_start, "train_s": t_eval - t_fit, "eval_s": t_end - t_eval,
                               "total_s": t_end - t_start,
                               "feature_cache_s": data.prepare_s if data is not None else 0.0},
                      throughput={"eval_images_per_s": result["counts"]["n_query"] / max(1e-9, t_end - t_eval)},
                      peak_memory=_peak_memory(accelerator))
    except XBenchError as exc:
        if raise_errors:
            raise
        record.update(status="failed", error=str(exc))
    except KeyboardInterrupt as exc:
        where = f"{cell_label(cell)}" + (f", {exc}" if str(exc) else "")
        record.update(status="interrupted", error=f"interrupted: {where}")
        _finish(out_dir, cell, record)
        raise KeyboardInterrupt(where) from None
    except Exception as exc:  # a failed cell records its error; the suite goes on
        if raise_errors:
            raise
        record.update(status="failed", error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc())
    return _finish(out_dir, cell, record)


def _train_features(method, dm, data, accelerator: str, precision: str) -> torch.Tensor:
    """Frozen post-projection embeddings of the training images (eval transform), for `method.prepare_fit`:
    the cell's feature cache when it holds them (only the rows a capped run reads), else the H14 store."""
    if data is not None and data.kind == "post_proj" and data.n_views == 0:
        feats = data.role_features("train")[0][0]
        return feats[~torch.isnan(feats).any(dim=1)]
    from ..methods.feature_cache import FeatureCache

    device = rank_device(accelerator)
    cache = FeatureCache(method.vlm, kind="post_proj", device=device, precision=precision,
                         batch_size=dm.eval_batch_size, num_workers=dm.num_workers)
    return cache.role_features(dm, "train")[0]


def _cached_data(method, dm, budget: dict[str, Any], accelerator: str, precision: str, trains: bool, devices: int):
    """The H14 feature-cache view of `dm` for a cacheable method, with the features of the training roles
    ready (train and val), else None; test features are computed after the fit, when evaluation asks.
    A one-phase run shorter than an epoch needs only the train rows of its batches (DDP ranks share the
    first steps x devices batches)."""
    if not getattr(method, "cacheable", False):
        return None
    from ..methods.feature_cache import CachedFeatureData

    device = rank_device(accelerator)
    roles = ("train", "val_query", "val_gallery") if trains else ()
    batches = None
    if trains and len(budget["phases"]) == 1:
        method.set_phase(budget["phases"][0]["name"])
        dm.batch_size = int(budget["phases"][0]["batch_size"])  # as _fit_one_phase sets it
        batches = int(budget["phases"][0]["steps"]) * max(1, int(devices))
    return CachedFeatureData(method, dm, device=device, precision=precision).prepare(roles, train_batches=batches)


def selection_of(training: dict[str, Any]) -> dict[str, Any]:
    """Which split chose the evaluated weights: test (tagged test-selected), val, or none (last weights)."""
    splits = [(p.get("selected") or {}).get("split") for p in training.get("phases", [])]
    split = "test" if "test" in splits else "val" if "val" in splits else None
    return {"split": split, "tag": "test-selected" if split == "test" else None}


def cell_label(cell: Cell) -> str:
    """`method on dataset/protocol/variant · holdout · gallery · seed S`: a cell as the console names it."""
    return (f"{cell.method} on {cell.dataset}/{cell.protocol}/{cell.variant} · {cell.holdout or '-'} · "
            f"{cell.data_options.get('gallery', '-')} · seed {cell.seed}")


def _finish(out_dir: Path, cell: Cell, record: dict[str, Any]) -> dict[str, Any]:
    """Write the record (rank 0 only) and return it. An `ok` record is never replaced by one that is not."""
    if global_rank() == 0 and (record.get("status") == "ok" or existing_ok_record(out_dir, cell) is None):
        write_record(out_dir, cell, record)
    return record


def _device_name(accelerator: str) -> str:
    if accelerator == "cuda":
        return torch.cuda.get_device_name(0)
    return "cpu"


def _peak_memory(accelerator: str) -> dict[str, float]:
    import resource

    out = {"cpu_max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if accelerator == "cuda":
        out["gpu_peak_allocated_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def _manifest_summary(dm) -> dict[str, Any]:
    meta = dm.manifest.meta
    return {"listing_sha256": meta.get("listing_sha256"), "counts": dm.manifest.counts(),
            "inverted_domains": list(dm.info.inverted_domains)}


def _query_domain(dm) -> str:
    domains = sorted(set(dm.role_frame("query")["domain"]))
    return "+".join(domains)


def _gallery_name(dm, cell: Cell) -> str:
    if dm.info.task == "itr":
        return "captions"
    if "gallery" in cell.data_options:
        return str(cell.data_options["gallery"])
    option = (dm.manifest.meta.get("options") or {}).get("gallery")
    if option:
        return str(option)
    return "+".join(sorted(set(dm.role_frame("gallery")["domain"])))
