"""Training budgets: how long each phase of a method trains in one cell.

Three policies, named by every suite and stored in every record:
- `paper`: each phase trains the epochs (or steps) its card states, with the card's early stopping;
  epochs become steps through the real training-set size: ceil(epochs x n_train / batch_size).
- `matched`: every method sees the same number of training samples; they are split over the phases by
  `step_fraction`, and steps = ceil(samples_phase / batch_size_phase).
- `steps`: an explicit total step count split by `step_fraction` (`--max-steps N`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from ..errors import ConfigError

POLICIES = ("paper", "matched", "steps")
AMOUNT_KEY = {"matched": "samples", "steps": "steps"}


@dataclass(frozen=True)
class Budget:
    """What a suite or the command line asks for; `label` is how records and leaderboards name it."""

    policy: str
    amount: int | None = None  # samples (matched) or total steps (steps)

    @property
    def label(self) -> str:
        return self.policy if self.amount is None else f"{self.policy}:{self.amount}"


def parse_budget(value: Any, where: str) -> Budget:
    """A budget from `paper`, `matched:N`, `steps:N` or a mapping `{policy: P, samples|steps: N}`."""
    if isinstance(value, Budget):
        return value
    if isinstance(value, str):
        policy, _, amount = value.partition(":")
        mapping: dict[str, Any] = {"policy": policy}
        if amount:
            mapping[AMOUNT_KEY.get(policy, "amount")] = amount
    elif isinstance(value, dict):
        mapping = dict(value)
    else:
        raise ConfigError(f"bad budget {value!r} in {where}; write paper, matched:SAMPLES or steps:STEPS, "
                          "or {policy: matched, samples: N}")
    policy = mapping.pop("policy", None)
    if policy not in POLICIES:
        raise ConfigError(f"unknown budget policy {policy!r} in {where}; choose one of {', '.join(POLICIES)}")
    key = AMOUNT_KEY.get(policy)
    extra = sorted(set(mapping) - {key})
    if extra:
        valid = f"policy and {key}" if key else "policy only"
        raise ConfigError(f"unknown budget key(s) {extra} for policy {policy} in {where}; valid: {valid}")
    if key is None:
        return Budget(policy)
    amount = mapping.get(key)
    if amount is None:
        raise ConfigError(f"budget policy {policy} in {where} needs '{key}', e.g. {{policy: {policy}, {key}: 1000}}")
    return Budget(policy, _positive_int(amount, f"budget {key}", where))


def _positive_int(value: Any, what: str, where: str) -> int:
    try:
        number = int(str(value)) if not isinstance(value, bool) else None
    except ValueError:
        number = None
    if number is None or number < 1:
        raise ConfigError(f"{what} in {where} must be a whole number >= 1, got {value!r}")
    return number


@dataclass
class PhaseBudget:
    name: str
    epochs: float
    steps: int
    batch_size: int
    samples: int
    source: str  # published (the card cites paper or code) | ours (our choice, or the suite's matched / steps)
    early_stop_patience: int | None
    val_every: int


def resolve_budget(budget: Budget, phase_cfgs: dict[str, dict[str, Any]], n_train: int,
                   provenance: dict[str, Any] | None = None) -> dict[str, Any]:
    """Steps, epochs and samples of every phase for a training set of `n_train` rows."""
    if n_train < 1:
        raise ConfigError("the training split is empty, so no budget can be resolved; check the dataset tree")
    fractions = _fractions(phase_cfgs)
    split = _split_steps(budget.amount, fractions) if budget.policy == "steps" else {}
    phases = []
    for name, cfg in phase_cfgs.items():
        batch = int(cfg["batch_size"])
        if budget.policy == "paper":
            steps, epochs, source = _paper_phase(name, cfg, n_train, provenance or {})
        elif budget.policy == "matched":
            steps = max(1, math.ceil(budget.amount * fractions[name] / batch - 1e-9))
            epochs, source = steps * batch / n_train, "ours"
        else:
            steps = split[name]
            epochs, source = steps * batch / n_train, "ours"
        per_epoch = math.ceil(n_train / batch)
        if budget.policy == "paper" and "epochs" in cfg and cfg.get("epochs") is not None:
            val_every = min(steps, per_epoch)  # as the papers: validate (and early-stop) once per epoch
        else:
            val_every = max(1, steps // int(cfg.get("val_checks", 4)))
        phases.append(PhaseBudget(name, epochs, steps, batch, steps * batch, source,
                                  cfg.get("early_stop_patience"), val_every))
    return {"policy": budget.policy, "label": budget.label, "n_train": n_train,
            "phases": [asdict(p) for p in phases]}


def _fractions(phase_cfgs: dict[str, dict[str, Any]]) -> dict[str, float]:
    raw = {name: float(cfg.get("step_fraction", 1.0 / len(phase_cfgs))) for name, cfg in phase_cfgs.items()}
    total = sum(raw.values()) or 1.0
    return {name: value / total for name, value in raw.items()}


def _split_steps(total: int, fractions: dict[str, float]) -> dict[str, int]:
    """`total` steps over the phases by fraction, at least one each, summing to `total` (largest remainder)."""
    want = {name: total * f for name, f in fractions.items()}
    steps = {name: max(1, math.floor(w)) for name, w in want.items()}
    for name in sorted(want, key=lambda n: want[n] - math.floor(want[n]), reverse=True):
        if sum(steps.values()) >= total:
            break
        steps[name] += 1
    return steps


def _paper_phase(name: str, cfg: dict[str, Any], n_train: int, provenance: dict[str, Any]) -> tuple[int, float, str]:
    batch = int(cfg["batch_size"])
    prefix = "" if name == "main" else f"phases.{name}."
    if cfg.get("epochs") is not None:
        epochs = float(cfg["epochs"])
        steps = max(1, math.ceil(epochs * n_train / batch - 1e-9))
        return steps, epochs, _source(provenance, f"{prefix}epochs")
    if cfg.get("steps") is not None:
        steps = int(cfg["steps"])
        return steps, _epochs_for(steps, batch, n_train), _source(provenance, f"{prefix}steps")
    raise ConfigError(f"phase {name} states neither epochs nor steps, so the paper budget is undefined; "
                      "add one to its card")


def _epochs_for(steps: int, batch: int, n_train: int) -> float:
    """The fractional epochs of `steps` batches, the largest float whose ceil(epochs x n / b) gives `steps`."""
    epochs = steps * batch / n_train
    while math.ceil(epochs * n_train / batch) > steps:
        epochs = math.nextafter(epochs, 0.0)
    return epochs


def _source(provenance: dict[str, Any], key: str) -> str:
    text = str(provenance.get(key, provenance.get(key.rsplit(".", 1)[-1], ""))).strip().lower()
    return "published" if text.startswith(("paper", "code")) else "ours"


def record_trained(budget: dict[str, Any], training: dict[str, Any]) -> dict[str, Any]:
    """The budget with what each phase actually trained (early stopping may end a phase sooner)."""
    done = {p["name"]: p for p in training.get("phases", [])}
    for phase in budget["phases"]:
        ran = done.get(phase["name"], {})
        phase["steps_trained"] = int(ran.get("steps", 0))
        phase["samples_seen"] = phase["steps_trained"] * int(ran.get("batch_size", phase["batch_size"]))
    return budget
