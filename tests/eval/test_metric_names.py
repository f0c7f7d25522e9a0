"""Metric-name parsing (PROTOCOLS.md §7.2 names)."""

from __future__ import annotations

import pytest

from xdomain_bench.errors import ConfigError
from xdomain_bench.eval.metrics import MetricSpec, parse_metric, parse_metrics


@pytest.mark.parametrize(
    ("name", "spec"),
    [
        ("mAP@200", MetricSpec("mAP@200", "map_k", 200, "A")),
        ("mAP@200:B", MetricSpec("mAP@200:B", "map_k", 200, "B")),
        ("mAP@5:C", MetricSpec("mAP@5:C", "map_k", 5, "C")),
        ("mAP@all", MetricSpec("mAP@all", "map_all")),
        ("Prec@100", MetricSpec("Prec@100", "prec", 100)),
        ("R@4", MetricSpec("R@4", "hit", 4)),
        ("Recall@10", MetricSpec("Recall@10", "recall", 10)),
        ("MAP@R", MetricSpec("MAP@R", "map_r")),
        ("R-Precision", MetricSpec("R-Precision", "r_prec")),
        (" Prec@1 ", MetricSpec("Prec@1", "prec", 1)),
    ],
)
def test_valid_names(name, spec):
    assert parse_metric(name) == spec


@pytest.mark.parametrize("name", ["map@200", "mAP@0", "mAP@200:D", "Prec@", "P@10", "R@K", "mAP@-1", "MAP@all", ""])
def test_invalid_names_list_the_valid_forms(name):
    with pytest.raises(ConfigError, match="valid forms: Prec@k, mAP@k"):
        parse_metric(name)


def test_parse_metrics_accepts_comma_string_and_drops_duplicates():
    assert [s.name for s in parse_metrics("mAP@200,Prec@200,mAP@200")] == ["mAP@200", "Prec@200"]
    with pytest.raises(ConfigError, match="no metrics"):
        parse_metrics([])
