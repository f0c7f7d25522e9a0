"""One configuration per leaderboard row: records of the same row made with different settings are refused."""

from __future__ import annotations

import pandas as pd

from xdomain_bench.cli import main
from xdomain_bench.runner.records import Cell, write_record


def _record(out, cell: Cell, value: float) -> None:
    write_record(out, cell, {"cell_key": cell.key(), "cell": cell.to_dict(), "status": "ok", "method": cell.method,
                             "dataset": cell.dataset, "protocol": cell.protocol, "variant": cell.variant,
                             "query_domain": "photo", "gallery": "photo", "seed": cell.seed,
                             "backbone": {"name": cell.backbone}, "metrics": {"MAP@R": value}})


def test_two_settings_for_one_row_is_a_clear_error_and_writes_nothing(tmp_path, capsys):
    base = dict(method="coop", dataset="cub", protocol="fgir_open", seed=0)
    _record(tmp_path, Cell(**base, method_overrides={"batch_size": 64}), 0.1)
    _record(tmp_path, Cell(**base, method_overrides={"batch_size": 32}), 0.3)
    assert main(["leaderboard", str(tmp_path), "--quiet"]) != 0
    err = capsys.readouterr().err
    assert "coop · cub · fgir_open" in err and "different settings" in err and "Traceback" not in err
    assert not (tmp_path / "leaderboard.csv").exists()


def test_seeds_of_one_setting_make_one_row(tmp_path):
    for seed, value in ((0, 0.1), (1, 0.3)):
        _record(tmp_path, Cell(method="coop", dataset="cub", protocol="fgir_open", seed=seed), value)
    assert main(["leaderboard", str(tmp_path), "--quiet"]) == 0
    wide = pd.read_csv(tmp_path / "leaderboard_wide.csv")
    assert len(wide) == 1
    row = wide.iloc[0]
    assert (row["MAP@R"], row["MAP@R std"], row["MAP@R n"]) == (0.2, 0.141421, 2)
