"""Phase options of the two-phase cards are live: `trains` decides what trains, `losses` weighs the terms."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from xdomain_bench.errors import ConfigError
from xdomain_bench.methods.base import build_optimizer, get_method_class
from xdomain_bench.methods.config import resolve_config

from .test_ucdr_adapter import make_batch, make_info


@pytest.fixture(scope="module")
def vlm(tiny_vlm):
    return tiny_vlm


def build(vlm, name, **overrides):
    torch.manual_seed(0)
    cfg = resolve_config(name, None, "domainnet", layers=[("test", overrides)])
    return get_method_class(name)(vlm, make_info(), cfg)


def one_step(method, batch):
    method.train()
    params = [p for p in method.parameters() if p.requires_grad]
    opt = build_optimizer(params, {"name": "adam", "lr": 1e-2})
    loss, logs = method.training_loss(batch)
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss, logs


def changed(method, before):
    return {n for n, p in method.named_parameters() if not torch.equal(before[n], p.detach())}


@pytest.mark.parametrize(("name", "phase", "trains", "expected"), [
    ("ucdr_adapter", "phase1", ["class_bank"], {"class_bank"}),
    ("ucdr_adapter", "phase2", ["proj_v"], {"proj_v"}),
    ("pros", "stage1", ["domain_units", "proj_t"], {"domain_bank", "proj_t"}),
])
def test_trains_selects_exactly_the_named_parts(vlm, name, phase, trains, expected):
    m = build(vlm, name, phases={phase: {"trains": trains}})
    m.set_phase(phase)
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    one_step(m, make_batch(vlm))
    assert changed(m, before) == expected


def test_card_trains_lists_match_the_published_split(vlm):
    """The cards' lists give the parts METHODS.md names per phase (names as the module holds them)."""
    m = build(vlm, "ucdr_adapter")
    names = {id(p): n.split(".")[0] for n, p in m.named_parameters()}
    assert {names[id(p)] for p in m.phase_parameters("phase1")} == {"domain_bank", "class_bank", "text"}
    assert {names[id(p)] for p in m.phase_parameters("phase2")} == {"tpg", "cls_emb", "proj_v"}


def test_unknown_part_in_trains_is_a_config_error():
    with pytest.raises(ConfigError, match=r"phases\.phase1\.trains\.0.*'tpg'"):
        resolve_config("ucdr_adapter", layers=[("--set", {"phases": {"phase1": {"trains": ["tpgx"]}}})])


def test_phase1_triplet_weight_zero_leaves_the_itc_term_alone(vlm):
    """losses.triplet: 0 -> the loss equals the ITC term; with the card's 1 : 1 it is ITC + triplet."""
    batch = make_batch(vlm)
    for weight in (1.0, 0.0):
        m = build(vlm, "ucdr_adapter", phases={"phase1": {"losses": {"triplet": weight}}})
        m.set_phase("phase1")
        m.train()
        # fill the class queues so the triplet term is non-zero, then measure one loss
        for _ in range(3):
            m.training_loss(batch)
        loss, logs = m.training_loss(batch)
        assert float(logs["triplet"]) > 0
        assert float(loss.detach()) == pytest.approx(float(logs["itc"]) + weight * float(logs["triplet"]), rel=1e-6)


def test_phase2_itc_weight_scales_the_loss(vlm):
    batch = make_batch(vlm)
    values = {}
    for weight in (1.0, 0.5):
        m = build(vlm, "ucdr_adapter", phases={"phase2": {"losses": {"itc": weight}}})
        m.set_phase("phase2")
        m.eval()
        loss, logs = m.training_loss(batch)
        values[weight] = (float(loss.detach()), float(logs["itc"]))
    assert values[0.5][1] == pytest.approx(values[1.0][1], rel=1e-6)
    assert values[0.5][0] == pytest.approx(0.5 * values[1.0][0], rel=1e-6)


@pytest.mark.parametrize(("opt", "expected"), [
    ({"name": "adamw", "lr": 0.1, "betas": [0.5, 0.6]}, (0.5, 0.6)),
    ({"name": "adam", "lr": 0.1}, (0.9, 0.999)),
])
def test_optimizer_betas_reach_adam_and_adamw(opt, expected):
    p = torch.nn.Parameter(torch.zeros(2))
    built = build_optimizer([p], opt)
    assert built.param_groups[0]["betas"] == expected


def test_sgd_momentum_reaches_the_optimizer():
    p = torch.nn.Parameter(torch.ones(3))
    built = build_optimizer([p], {"name": "sgd", "lr": 0.1, "momentum": 0.5})
    for _ in range(2):
        built.zero_grad()
        F.mse_loss(p, torch.zeros(3), reduction="sum").backward()
        built.step()
    # by hand: g = 2p; v1 = g0; p1 = 1 - 0.1*2 = 0.8; g1 = 1.6; v2 = 0.5*2 + 1.6 = 2.6; p2 = 0.8 - 0.26 = 0.54
    assert torch.allclose(p.detach(), torch.full((3,), 0.54))
