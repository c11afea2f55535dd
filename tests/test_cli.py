import json
import math

import pytest
import torch

from liftinv.cli import main
from liftinv.demo import DemoConfig


def test_help(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "demo" in out and "bench" in out
    with pytest.raises(SystemExit) as exit_:
        main(["demo", "--help"])
    assert exit_.value.code == 0
    assert "--quick" in capsys.readouterr().out


def test_bench_help_is_forwarded(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["bench", "--help"])
    assert exit_.value.code == 0
    assert "liftinv bench" in capsys.readouterr().out


def test_bad_command_lines(capsys):
    for argv in ([], ["train"], ["demo", "--bogus"]):
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 2
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err


def test_demo_quick_writes_table_figure_and_json(tmp_path, capsys):
    threads = torch.get_num_threads()
    assert main(["demo", "--quick", "--out", str(tmp_path)]) == 0
    assert torch.get_num_threads() == threads
    table = (tmp_path / "demo_table.md").read_text()
    assert "| problem | method | PSNR (dB) | SSIM | time (s) |" in table
    assert (tmp_path / "demo_classical.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    payload = json.loads((tmp_path / "demo_results.json").read_text())
    assert payload["quick"] is True and set(payload["problems"]) == {"ct", "deblurring", "mri"}
    scores = {(r["problem"], r["method"]): r for r in payload["results"]}
    assert all(math.isfinite(r["psnr"]) and 0 < r["ssim"] <= 1 for r in scores.values())
    # TV improves on the direct inversions of each problem
    tv = {p: max(r["psnr"] for (q, m), r in scores.items() if q == p and m.startswith("TV")) for p in payload["problems"]}
    assert tv["ct"] > scores[("ct", "FBP (ramp)")]["psnr"] + 3
    assert tv["mri"] > scores[("mri", "zero-filled")]["psnr"] + 1
    out = capsys.readouterr().out
    assert "| ct | FBP (ramp) |" in out and str(tmp_path / "demo_classical.png") in out


def test_demo_missing_data_is_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LIFTINV_DATA", str(tmp_path / "nowhere"))
    assert main(["demo", "--quick", "--out", str(tmp_path / "out")]) == 1
    assert "generate_data" in capsys.readouterr().err


@pytest.mark.parametrize("field, value", [("tv_iter", 0), ("cg_iter", 1.5), ("seed", "0"), ("threads", 0)])
def test_demo_config_validation(field, value):
    with pytest.raises(ValueError, match=field):
        DemoConfig(**{field: value})
