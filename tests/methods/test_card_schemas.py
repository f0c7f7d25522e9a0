"""Every card validates against its method's declared schema, and the schema covers exactly its keys."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from xdomain_bench.errors import ConfigError
from xdomain_bench.methods.base import get_method_class, method_names
from xdomain_bench.methods.config import load_card, resolve_config
from xdomain_bench.methods.schemas import SCHEMAS

# Keys a schema accepts but a card may leave out: the other unit of the paper budget, and options of one
# optimizer or schedule only (adam/adamw betas, sgd momentum, exp_epoch decay, per-phase early stopping).
CONDITIONAL = {"epochs", "steps", "betas", "momentum", "weight_decay", "lr_decay_base", "lr_decay_epochs",
               "min_lr", "early_stop_patience", "selection"}


def _missing_keys(schema: type[BaseModel], data: dict, path: str = "") -> set[str]:
    """Schema fields absent from `data`, at any depth of nested models."""
    out = set()
    for name, field in schema.model_fields.items():
        key = f"{path}{name}"
        if name not in data:
            out.add(key)
            continue
        sub = field.annotation
        if isinstance(sub, type) and issubclass(sub, BaseModel) and isinstance(data[name], dict):
            out |= _missing_keys(sub, data[name], f"{key}.")
    return out


def test_every_registered_method_has_a_schema_and_a_card():
    assert set(method_names()) == set(SCHEMAS)


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_schema_covers_exactly_the_cards_keys(name):
    defaults = load_card(name)["defaults"]
    SCHEMAS[name].model_validate(defaults)  # no card key is unknown to the schema (extra keys are forbidden)
    missing = _missing_keys(SCHEMAS[name], defaults)
    assert {m.rsplit(".", 1)[-1] for m in missing} <= CONDITIONAL, missing


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_every_variant_and_dataset_override_validates(name):
    card = load_card(name)
    for variant in card.get("variants") or [None]:
        for dataset in [None, *(card.get("datasets") or {})]:
            resolve_config(name, variant, dataset)


@pytest.mark.parametrize("name", sorted(n for n in SCHEMAS if get_method_class(n).trainable))
def test_trained_methods_state_a_paper_budget_with_provenance(name):
    card = load_card(name)
    phases = get_method_class(name).phase_names
    prov = card["provenance"]
    for phase in phases:
        where = card["defaults"] if phase == "main" else card["defaults"]["phases"][phase]
        units = [u for u in ("epochs", "steps") if where.get(u) is not None]
        assert len(units) == 1, (phase, units)
        key = units[0] if phase == "main" else f"phases.{phase}.{units[0]}"
        assert key in prov, f"{name}: no provenance for {key}"


@pytest.mark.parametrize(("layer", "fragment"), [
    ({"optimizer": {"lrr": 0.5}}, "unknown option 'optimizer.lrr'"),
    ({"batch_size": "abc"}, "bad value for 'batch_size'"),
    ({"batch_size": 0}, "greater than or equal to 1"),
    ({"optimizer": {"lr": 0}}, "greater than 0"),
    ({"optimizer": {"lr": "fast"}}, "valid number"),
    ({"optimizer": {"name": "sgd", "lr": 0.1, "betas": [0.9, 0.99]}}, "betas apply to adam and adamw"),
    ({"optimizer": {"name": "sgd"}}, "bad value for 'optimizer.lr'"),
    ({"epochs": 3, "steps": 30}, "exactly one of 'epochs' or 'steps'"),
    ({"cache_augmentation": {"views": 0}}, "greater than or equal to 1"),
])
def test_bad_layers_are_one_line_naming_key_and_source(layer, fragment):
    with pytest.raises(ConfigError) as info:
        resolve_config("coop", layers=[("--set", layer)])
    msg = str(info.value)
    assert fragment in msg and "(from --set)" in msg and "\n" not in msg


def test_unknown_key_lists_the_valid_ones_at_its_depth():
    with pytest.raises(ConfigError, match=r"valid keys under phases\.phase1\.losses: itc, triplet$"):
        resolve_config("ucdr_adapter", layers=[("suite s.yaml", {"phases": {"phase1": {"losses": {"tri": 1}}}})])


def test_error_names_the_first_layer_that_introduced_it():
    layers = [("suite s.yaml overrides[0].method", {"val_checks": 2}), ("--set", {"val_checks": -1})]
    with pytest.raises(ConfigError, match=r"\(from --set\)"):
        resolve_config("vpt", layers=layers)


def test_values_are_coerced_to_their_declared_types():
    cfg = resolve_config("coop", layers=[("--set", {"optimizer": {"lr": "1e-3"}})])
    assert cfg["optimizer"]["lr"] == 1e-3 and isinstance(cfg["optimizer"]["lr"], float)


def test_naming_another_optimizer_replaces_the_old_options():
    cfg = resolve_config("dalsclip", layers=[("--set", {"optimizer": {"name": "adam", "lr": 3e-3}})])
    assert cfg["optimizer"] == {"name": "adam", "lr": 3e-3}  # sgd's momentum and weight decay do not linger
    cfg = resolve_config("dalsclip", layers=[("--set", {"optimizer": {"lr": 3e-3}})])
    assert cfg["optimizer"] == {"name": "sgd", "lr": 3e-3, "momentum": 0.1, "weight_decay": 0.0}
