"""`xbench eval-embeddings` through xdomain_bench.cli.main."""

from __future__ import annotations

import json

import numpy as np
import pytest

from xdomain_bench.cli import main
from xdomain_bench.eval.engine import evaluate_class_retrieval


@pytest.fixture
def files(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {
        "q": rng.standard_normal((20, 8)).astype(np.float32),
        "ql": rng.integers(0, 3, 20),
        "g": rng.standard_normal((50, 8)).astype(np.float32),
        "gl": rng.integers(0, 3, 50),
    }
    paths = {}
    for name, arr in arrays.items():
        paths[name] = tmp_path / f"{name}.npy"
        np.save(paths[name], arr)
    return arrays, {k: str(v) for k, v in paths.items()}


def base_args(p):
    return ["eval-embeddings", "--query", p["q"], "--query-labels", p["ql"], "--gallery", p["g"], "--gallery-labels", p["gl"]]


def test_json_output_is_one_object_equal_to_the_engine(files, capsys):
    arrays, p = files
    rc = main([*base_args(p), "--metrics", "mAP@10,Prec@10,mAP@all,R@1", "--distance", "l2", "--json"])
    out = capsys.readouterr().out
    assert rc == 0
    got = json.loads(out)
    assert out.strip().count("\n") == 0
    want = evaluate_class_retrieval(arrays["q"], arrays["ql"], arrays["g"], arrays["gl"],
                                    ["mAP@10", "Prec@10", "mAP@all", "R@1"], distance="l2")  # fmt: skip
    assert got == want


def test_default_metrics_table(files, capsys):
    _, p = files
    assert main([*base_args(p), "--chunk-size", "7"]) == 0
    out = capsys.readouterr().out
    for name in ("mAP@200", "Prec@200", "mAP@all", "n_queries_no_relevant", "n_queries_no_hit@200"):
        assert name in out


def test_similarity_flag_and_its_distance_alias(files, capsys):
    arrays, p = files
    assert main([*base_args(p), "--metrics", "mAP@10,Prec@5", "--similarity", "neg_sq_euclidean", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    want = evaluate_class_retrieval(arrays["q"], arrays["ql"], arrays["g"], arrays["gl"], ["mAP@10", "Prec@5"],
                                    distance="l2")  # fmt: skip
    assert got == want and "n_queries_no_hit@5" in got
    assert main([*base_args(p), "--similarity", "exp_neg_euclidean", "--distance", "l2"]) == 2
    err = capsys.readouterr().err
    assert err == "xbench: error: --distance l2 contradicts --similarity exp_neg_euclidean; pass one\n"


def test_same_set(files, capsys):
    arrays, p = files
    assert main(["eval-embeddings", "--query", p["g"], "--query-labels", p["gl"], "--same-set", "--json",
                 "--metrics", "R@1,MAP@R"]) == 0  # fmt: skip
    got = json.loads(capsys.readouterr().out)
    want = evaluate_class_retrieval(arrays["g"], arrays["gl"], arrays["g"], arrays["gl"], ["R@1", "MAP@R"], same_set=True)
    assert got == want


@pytest.mark.parametrize(
    ("mutate", "pattern"),
    [
        (lambda a, p: {"ql": a["ql"][:5]}, "query labels has 5 entries but there are 20 embedding rows"),
        (lambda a, p: {"g": a["g"][:, :4]}, "query dim 8 != gallery dim 4"),
        (lambda a, p: {"q": np.where(np.arange(8) == 3, np.nan, a["q"]).astype(np.float32)}, "contains NaN in row 0"),
        (lambda a, p: {"g": a["g"][0]}, "must be 2-D"),
    ],
)
def test_bad_arrays_exit_2_with_one_line(files, tmp_path, capsys, mutate, pattern):
    arrays, p = files
    for name, arr in mutate(arrays, p).items():
        np.save(p[name], arr)
    assert main([*base_args(p), "--json"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("xbench: error: ") and err.count("\n") == 1
    assert pattern in err


def test_missing_and_unreadable_files(files, tmp_path, capsys):
    _, p = files
    assert main([*base_args(p)[:-1], str(tmp_path / "nope.npy")]) == 2
    assert "gallery labels file not found" in capsys.readouterr().err
    junk = tmp_path / "junk.npy"
    junk.write_text("not numpy")
    assert main([*base_args(p)[:2], str(junk), *base_args(p)[3:]]) == 2
    err = capsys.readouterr().err
    assert "cannot read query file" in err and err.count("\n") == 1


def test_unknown_metric_and_missing_gallery(files, capsys):
    _, p = files
    assert main([*base_args(p), "--metrics", "mAP@200,top1"]) == 2
    assert "unknown metric 'top1'" in capsys.readouterr().err
    assert main(["eval-embeddings", "--query", p["q"], "--query-labels", p["ql"]]) == 2
    assert "--gallery and --gallery-labels are required" in capsys.readouterr().err
