"""`xbench list|show|--version|--cards`, the backbone rule on real data, and the command line's conventions
(help on every flag, one --set syntax, --only with commas, old spellings with a deprecation note)."""

from __future__ import annotations

import argparse
import json
import shutil
from importlib.metadata import version

import pytest
import yaml

from xdomain_bench.cli import build_parser, main
from xdomain_bench.data.base import get_dataset
from xdomain_bench.errors import ConfigError
from xdomain_bench.methods.base import method_names
from xdomain_bench.options import split_set
from xdomain_bench.paths import method_cards_dir, project_root
from xdomain_bench.runner.suite import parse_only

SUITES = project_root() / "benchmarks" / "suites"


def run(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


def card(name: str) -> dict:
    return yaml.safe_load((project_root() / "methods" / f"{name}.yaml").read_text(encoding="utf-8"))


def rows_of(out: str) -> dict[str, list[str]]:
    """First column -> the other columns of a rich table printed without wrapping."""
    rows = {}
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip("│ ").split("│")]
        if line.startswith("│") and cells[0]:
            rows[cells[0]] = cells[1:]
    return rows


def test_list_methods_shows_every_card_file_with_its_title(capsys):
    rc, out, _ = run(capsys, "list", "methods")
    files = sorted(p.stem for p in (project_root() / "methods").glob("*.yaml"))
    assert rc == 0 and sorted(rows_of(out)) == files == method_names()
    assert all(rows_of(out)[name] == [card(name)["title"]] for name in files)


@pytest.mark.parametrize("kind", ["datasets", "protocols", "backbones", "metrics", "suites"])
def test_list_kinds(capsys, kind):
    rc, out, _ = run(capsys, "list", kind)
    rows = rows_of(out)
    assert rc == 0
    if kind == "suites":
        assert sorted(rows) == sorted(p.stem for p in SUITES.glob("*.yaml"))
    elif kind == "datasets":
        assert sorted(rows) == ["cub", "domainnet", "fdrd", "sketchy", "tuberlin"]
        assert all(r[0] and r[1] for r in rows.values())  # every dataset has a description and protocols
    elif kind == "protocols":
        pairs = {(d, p.removesuffix(" (default)")) for line in out.splitlines() if line.startswith("│")
                 for d, p, *_ in [[c.strip() for c in line.strip("│ ").split("│")]]}
        want = {(d, p) for d in ("cub", "domainnet", "fdrd", "sketchy", "tuberlin") for p in get_dataset(d).card["protocols"]}
        assert pairs == want
    elif kind == "backbones":
        assert {"tiny-clip", "demo-clip", "hf-clip"} <= set(rows)
    else:
        from xdomain_bench.eval.metrics import parse_metric

        ranking = [m for m in rows if "@k" in m or m in ("mAP@all", "MAP@R", "R-Precision", "R@K")]
        assert {parse_metric(m.replace("@k", "@5").replace("@K", "@5")).kind for m in ranking} == {
            "prec", "map_k", "map_all", "hit", "recall", "map_r", "r_prec"}


def test_show_method_marks_published_and_ours_from_the_card(capsys):
    rc, out, _ = run(capsys, "show", "method", "pros")
    rows = rows_of(out)
    prov = card("pros")["provenance"]
    assert rc == 0 and rows["n_ctx"][:3] == [str(card("pros")["defaults"]["n_ctx"]), "defaults", "published (code)"]
    assert prov["n_ctx"] == "code" and rows["train_normalization"][2] == "ours"
    assert prov["similarity"].startswith("paper/ours") and rows["similarity"][2] == "mixed"
    assert rows["eval_batch_size"][2] == "ours" and prov["eval_batch_size"].startswith("not published")


def test_show_method_names_the_layer_that_set_a_value(capsys):
    variant = yaml.safe_load((project_root() / "methods" / "dva.yaml").read_text())["variants"]["attention_boxes"]
    rc, out, _ = run(capsys, "show", "method", "dva", "--method-variant", "attention_boxes")
    rows = rows_of(out)
    assert rc == 0 and rows["box_source"][:2] == [variant["box_source"], "variants.attention_boxes"]
    assert rows["adapter_rank"][1] == "defaults"
    assert rows["adapter_init"][:2] == ["-", "-"]  # a provenance entry naming no option (a design choice)
    rc, _, err = run(capsys, "show", "method", "dva", "--method-variant", "nope")
    assert rc == 2 and "has no variant 'nope'" in err and err.count("\n") == 1


def test_show_suite_expands_the_matrix(capsys):
    rc, out, _ = run(capsys, "show", "suite", "smoke")
    n = len(method_names()) * 5  # smoke: every method on five datasets, one protocol, setting and seed each
    assert rc == 0 and f"{n} cells" in out and len([ln for ln in out.splitlines() if ln.startswith("│")]) == n
    rc, out, _ = run(capsys, "show", "suite", "smoke", "--only", "method=coop,vpt", "--only", "dataset=cub")
    assert rc == 0 and "2 cells" in out and {r[0] for r in rows_of(out).values()} == {"coop", "vpt"}


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0 and capsys.readouterr().out.strip() == f"xbench {version('xdomain_bench')}"


def test_external_cards_folder_wins_over_the_builtin_card(tmp_path, capsys, monkeypatch):
    ext = tmp_path / "cards" / "methods"
    ext.mkdir(parents=True)
    mine = card("zero_shot") | {"defaults": {"template": "a sketch of a {}.", "eval_batch_size": 7}}
    (ext / "zero_shot.yaml").write_text(yaml.safe_dump(mine), encoding="utf-8")
    rc, out, _ = run(capsys, "--cards", str(tmp_path / "cards"), "show", "method", "zero_shot")
    assert rc == 0 and rows_of(out)["template"][0] == "a sketch of a {}."
    monkeypatch.delenv("XBENCH_CARDS")  # main put --cards there, for worker processes
    rc, out, _ = run(capsys, "show", "method", "zero_shot")
    assert rows_of(out)["template"][0] == card("zero_shot")["defaults"]["template"]
    monkeypatch.setenv("XBENCH_CARDS", str(tmp_path / "cards"))
    rc, out, _ = run(capsys, "show", "method", "zero_shot")
    assert rows_of(out)["eval_batch_size"][0] == "7" and method_cards_dir() == project_root() / "methods"
    monkeypatch.setenv("XBENCH_CARDS", str(tmp_path / "nowhere"))
    rc, _, err = run(capsys, "list", "methods")
    assert rc == 2 and "nowhere" in err and err.count("\n") == 1


def _subparsers(parser: argparse.ArgumentParser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield name, sub
                yield from ((f"{name} {n}", s) for n, s in _subparsers(sub))


def test_every_flag_and_positional_has_help():
    missing = []
    for name, sub in _subparsers(build_parser()):
        if name == "eval":  # eval/cli.py is another piece of work's (its --distance has no help yet)
            continue
        missing += [f"{name} {a.option_strings or a.dest}" for a in sub._actions
                    if not isinstance(a, argparse._SubParsersAction) and not a.help]
    assert missing == []


def test_only_takes_commas_inside_a_key(capsys):
    assert parse_only(["method=coop,vpt,dataset=cub", "seed=0,1"]) == {
        "method": ["coop", "vpt"], "dataset": ["cub"], "seed": ["0", "1"]}
    assert capsys.readouterr().err == ""
    assert parse_only("method=coop+vpt") == {"method": ["coop", "vpt"]}
    assert "deprecated" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="bad --only item 'coop' in 'coop,vpt'"):
        parse_only("coop,vpt")


def test_set_splits_method_and_data_options(capsys):
    assert split_set(["method.optimizer.lr=1e-3", "data.skip_bad_images=true"]) == {
        "method": ["optimizer.lr=1e-3"], "data": ["skip_bad_images=true"]}
    assert capsys.readouterr().err == ""
    assert split_set(["optimizer.lr=1e-3"]) == {"method": ["optimizer.lr=1e-3"], "data": []}
    assert "--set method.optimizer.lr=1e-3" in capsys.readouterr().err


@pytest.fixture(scope="module")
def cub_tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("cub_tree")
    get_dataset("cub").synth(root, scale="tiny", seed=0)
    return root


def test_real_data_without_backbone_is_one_error_line(cub_tree, tmp_path, capsys):
    real = tmp_path / "real"
    shutil.copytree(cub_tree, real)
    (real / "CUB_200_2011" / ".xbench_synth.json").unlink()  # what makes it synthetic
    argv = ["run", "--method", "zero_shot", "--dataset", "cub", "--data-root", str(real), "--out", str(tmp_path / "o")]
    rc, _, err = run(capsys, *argv)
    assert rc == 2 and err.count("\n") == 1 and "needs --backbone" in err
    assert all(b in err for b in ("tiny-clip", "demo-clip", "hf-clip"))
    rc, _, err = run(capsys, "run", "--suite", str(SUITES / "smoke.yaml"), "--data-root", str(real), "--out",
                     str(tmp_path / "o"), "--only", "dataset=cub", "--dry-run")
    assert rc == 0  # the smoke suite names its backbone
    rc, out, _ = run(capsys, *argv, "--dry-run", "--json", "--backbone", "tiny-clip")
    assert rc == 0 and json.loads(out)[0]["backbone"] == "tiny-clip"


def test_synthetic_tree_defaults_to_tiny_clip_and_the_result_line_names_it(cub_tree, tmp_path, capsys):
    rc, out, err = run(capsys, "run", "--method", "zero_shot", "--dataset", "cub", "--data-root", str(cub_tree),
                       "--out", str(tmp_path / "o"), "--no-progress", "--set", "data.augment=false")
    assert rc == 0 and "(backbone tiny-clip," in " ".join(out.split()) and "deprecated" not in err
    (rec,) = [json.loads(p.read_text()) for p in (tmp_path / "o" / "records").glob("*.json")]
    assert rec["cell"]["backbone"] == "tiny-clip" and rec["cell"]["data_options"] == {"augment": False}


def test_suite_by_name_is_the_builtin_file(tmp_path, capsys):
    by_name = run(capsys, "show", "suite", "fgir_cub")[1]
    by_path = run(capsys, "show", "suite", str(SUITES / "fgir_cub.yaml"))[1]
    assert by_name.splitlines()[1:] == by_path.splitlines()[1:] and "fgir_cub.yaml" in by_name.splitlines()[0]
    rc, _, err = run(capsys, "show", "suite", "no_such_suite")
    assert rc == 2 and "smoke" in err and err.count("\n") == 1
