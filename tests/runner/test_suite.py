"""Suite expansion: matrix size and cell fields, overrides, `--only`, and bad input as one clear line."""

from __future__ import annotations

import itertools
import textwrap

import pytest

from xdomain_bench.cli import main
from xdomain_bench.errors import ConfigError
from xdomain_bench.methods.base import method_names
from xdomain_bench.paths import project_root
from xdomain_bench.runner.suite import (
    Override,
    ProtocolSpec,
    SuiteFile,
    Where,
    expand_suite,
    load_suite,
    parse_only,
)

SUITE = """
name: t
seeds: [0, 1]
budget: {policy: steps, steps: 3}
methods: [zero_shot, dcar]
variants: [clean, paper]
datasets:
  domainnet:
    protocols:
      ucdr: {holdouts: [sketch, quickdraw], galleries: [unseen, mixed]}
  cub:
    protocols:
      fgir_open: {variants: [clean]}
overrides:
  - where: {method: dcar, dataset: cub}
    budget: steps:7
    method: {batch_size: 8}
  - where: {method: zero_shot, holdout: quickdraw, gallery: mixed}
    skip: true
  - where: {dataset: domainnet, seed: 1}
    data: {paper_profile: pros}
  - where: {method: dcar, dataset: domainnet, seed: 1}
    method_variant: shallow
"""


def write(tmp_path, text: str, name: str = "suite.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def fields(cell) -> tuple:
    return (cell.method, cell.dataset, cell.protocol, cell.variant, cell.holdout, cell.data_options.get("gallery"),
            cell.seed, cell.budget, cell.method_variant, tuple(sorted(cell.method_overrides.items())),
            cell.data_options.get("paper_profile"), cell.backbone)


def expected_cells() -> list[tuple]:
    """The matrix of SUITE written out by hand, overrides applied."""
    out = []
    for method, variant, holdout, gallery, seed in itertools.product(
            ["zero_shot", "dcar"], ["clean", "paper"], ["sketch", "quickdraw"], ["unseen", "mixed"], [0, 1]):
        if method == "zero_shot" and holdout == "quickdraw" and gallery == "mixed":
            continue
        out.append((method, "domainnet", "ucdr", variant, holdout, gallery, seed, "steps:3",
                    "shallow" if seed == 1 and method == "dcar" else None, (), "pros" if seed == 1 else None,
                    "tiny-clip"))
    for method, seed in itertools.product(["zero_shot", "dcar"], [0, 1]):
        dcar = method == "dcar"
        out.append((method, "cub", "fgir_open", "clean", None, None, seed, "steps:7" if dcar else "steps:3",
                    None, (("batch_size", 8),) if dcar else (), None, "tiny-clip"))
    return out


def test_matrix_size_fields_and_overrides(tmp_path):
    cells = expand_suite(load_suite(write(tmp_path, SUITE)))
    assert len(cells) == 28 + 4
    assert sorted(map(fields, cells)) == sorted(expected_cells())
    assert len({c.key() for c in cells}) == len(cells) and len({c.slug() for c in cells}) == len(cells)
    assert cells == expand_suite(load_suite(write(tmp_path, SUITE)))  # stable order


def test_command_line_beats_the_suite(tmp_path):
    cells = expand_suite(load_suite(write(tmp_path, SUITE)), budget="steps:5", seeds=[4], backbone="tiny-clip:seed=1")
    assert {c.seed for c in cells} == {4} and {c.budget for c in cells} == {"steps:5"}
    assert {c.backbone for c in cells} == {"tiny-clip:seed=1"}
    assert len(cells) == 14 + 2  # one seed instead of two


def test_smoke_suite_is_every_method_on_every_dataset():
    cells = expand_suite(load_suite(project_root() / "benchmarks" / "suites" / "smoke.yaml"))
    datasets = ["domainnet", "sketchy", "tuberlin", "cub", "fdrd"]
    assert sorted((c.method, c.dataset) for c in cells) == sorted(itertools.product(method_names(), datasets))
    assert {(c.backbone, c.variant, c.seed, c.budget) for c in cells} == {("tiny-clip", "clean", 0, "steps:2")}
    dn = [c for c in cells if c.dataset == "domainnet"]
    assert {(c.holdout, c.data_options["gallery"]) for c in dn} == {("sketch", "unseen")}
    for c in cells:  # trained methods run at batch size 8 (in every phase); zero-shot needs no override
        phases = c.method_overrides.get("phases")
        sizes = {p["batch_size"] for p in phases.values()} if phases else {c.method_overrides.get("batch_size")}
        assert (sizes == {8}) == (c.method != "zero_shot"), c


def test_a_method_variant_the_card_lacks_fails_at_load(tmp_path):
    """The whole suite is validated when it is expanded, not cell by cell as it runs."""
    text = SUITE.replace("where: {method: dcar, dataset: domainnet, seed: 1}", "where: {dataset: domainnet, seed: 1}")
    with pytest.raises(ConfigError, match="method 'zero_shot' has no variant 'shallow'"):
        expand_suite(load_suite(write(tmp_path, text)))


def test_only_filters_cells(tmp_path):
    suite = load_suite(write(tmp_path, SUITE))
    only = parse_only("method=dcar,dataset=domainnet,gallery=mixed,unseen,holdout=sketch")
    assert only == {"method": ["dcar"], "dataset": ["domainnet"], "gallery": ["mixed", "unseen"], "holdout": ["sketch"]}
    cells = expand_suite(suite, only=only)
    want = [f for f in expected_cells() if f[0] == "dcar" and f[1] == "domainnet" and f[4] == "sketch"]
    assert sorted(map(fields, cells)) == sorted(want) and len(cells) == 8
    assert {(c.method, c.seed) for c in expand_suite(suite, only=parse_only("seed=1,dataset=cub"))} == {
        ("zero_shot", 1), ("dcar", 1)}


@pytest.mark.parametrize("text,key,valid", [
    ("epochs: 3\n", "'epochs'", SuiteFile),
    ("datasets:\n  cub:\n    protocol: {fgir_open: {}}\n", "'datasets.cub.protocol'", None),
    ("datasets:\n  cub:\n    protocols:\n      fgir_open: {holdout: [x]}\n", "'datasets.cub.protocols.fgir_open.holdout'",
     ProtocolSpec),
    ("overrides:\n  - wher: {method: dcar}\n", "'overrides.0.wher'", Override),
    ("overrides:\n  - where: {methods: dcar}\n", "'overrides.0.where.methods'", Where),
])
def test_unknown_keys_fail_with_the_valid_ones(tmp_path, text, key, valid):
    base = "name: t\nbudget: paper\nmethods: [zero_shot]\n" + (
        "" if "datasets" in text else "datasets:\n  cub:\n    protocols:\n      fgir_open: {}\n")
    with pytest.raises(ConfigError) as err:
        load_suite(write(tmp_path, base + text))
    msg = str(err.value)
    assert f"unknown option {key} for suite" in msg and "suite.yaml" in msg and "\n" not in msg
    if valid is not None:
        assert msg.endswith(", ".join(sorted(valid.model_fields)))


@pytest.mark.parametrize("kind,text,known", [
    ("method", "name: t\nbudget: paper\nmethods: [zero_shot, nope]\ndatasets: {cub: {protocols: {fgir_open: {}}}}\n", None),
    ("dataset", "name: t\nbudget: paper\nmethods: [zero_shot]\ndatasets: {nope: {protocols: {x: {}}}}\n",
     ["cub", "domainnet", "fdrd", "sketchy", "tuberlin"]),
])
def test_unknown_names_list_the_known_ones(tmp_path, kind, text, known):
    with pytest.raises(ConfigError) as err:
        expand_suite(load_suite(write(tmp_path, text)))
    msg = str(err.value)
    assert f"unknown {kind} 'nope'" in msg
    for name in known or method_names():
        assert name in msg


def test_only_with_unknown_values_or_keys(tmp_path):
    suite = load_suite(write(tmp_path, SUITE))
    with pytest.raises(ConfigError, match=r"--only method=vtp matches no cell of this suite; its method values: "
                       r"dcar, zero_shot$"):
        expand_suite(suite, only=parse_only("method=dcar+vtp"))
    with pytest.raises(ConfigError, match=r"--only holdout=clipart matches no cell .* values: None, quickdraw, sketch$"):
        expand_suite(suite, only=parse_only("dataset=cub,holdout=clipart"))
    with pytest.raises(ConfigError, match="bad --only item 'methods=dcar'; write key=value with key in method, "):
        parse_only("methods=dcar")


@pytest.mark.parametrize("extra,needle", [
    (["--only", "foo=1"], "bad --only item 'foo=1'"),
    (["--seeds", "0,x"], "bad --seeds '0,x'"),
    (["--devices", "0"], "--devices must be >= 1"),
    (["--strategy", "ddpp"], "unknown --strategy 'ddpp'; known strategies: "),
])
def test_cli_bad_suite_options_are_one_line(tmp_path, capsys, extra, needle):
    suite = write(tmp_path, SUITE)
    rc = main(["run", "--suite", str(suite), "--data-root", str(tmp_path), "--out", str(tmp_path / "o"),
               "--no-progress", *extra])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and needle in err and "\n" not in err
    assert not (tmp_path / "o" / "records").exists()


def test_cli_unknown_suite_key_is_one_line(tmp_path, capsys):
    suite = write(tmp_path, SUITE + "epochs: 3\n")
    rc = main(["run", "--suite", str(suite), "--data-root", str(tmp_path), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "unknown option 'epochs' for suite" in err and "valid keys: backbone, budget, datasets" in err
    assert "\n" not in err
