"""Every script in ``examples/`` runs as is (``python examples/NAME.py``) in its tiny mode
(``LIFTINV_TINY=1``), in a fresh interpreter started from an empty folder, and prints what it
promises. The scripts start together (their imports dominate and overlap); each test reads its
own script's output."""
import ast
import os
import re
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _psnr(line: str) -> float:
    return float(re.search(r"PSNR +(-?\d+\.\d+) dB", line).group(1))


def _line(out: str, prefix: str) -> str:
    lines = [line for line in out.splitlines() if line.startswith(prefix)]
    assert len(lines) == 1, (prefix, out)
    return lines[0]


def check_reconstruct(out: str, cwd: Path) -> None:
    fbp, tv = _line(out, "CT   FBP(filter='ramp')"), _line(out, "CT   TV(")
    assert _psnr(tv) > _psnr(fbp) + 2
    assert _psnr(_line(out, "MRI  TV(")) > _psnr(_line(out, "MRI  ZeroFilled()")) + 2
    assert "as expected: FBP needs a Radon physics, got MRI" in out


def check_custom_operator(out: str, cwd: Path) -> None:
    assert float(_line(out, "adjoint test").split()[-1]) < 1e-5
    assert _line(out, "operator norm") == "operator norm: 0.5000 (exact: 0.5)"
    assert _psnr(_line(out, "TV(")) > _psnr(_line(out, "nearest neighbour"))
    assert "as expected: physics must be an operators Radon, Blur or MRI to have a spec, got AveragePooling" in out


def check_train_unrolled(out: str, cwd: Path) -> None:
    untrained, trained = map(float, re.findall(r"(\d+\.\d+) dB", _line(out, "validation PSNR")))
    assert trained > untrained
    assert _line(out, "test PSNR: Tikhonov").endswith(f"(model {Path('out') / 'unrolled_deblur.pt'})")
    assert (cwd / "out" / "unrolled_deblur.pt").is_file()


def check_lifted_vs_backprop(out: str, cwd: Path) -> None:
    for method in ("lifted Bregman, BCD + Adam", "lifted Bregman, ISGM", "backpropagation, Adam"):
        values = [float(v) for v in _line(out, method)[len(method):].split()]
        assert len(values) == 3 and values[1] > values[0]  # epoch 0, epoch 1, seconds


def check_invert_resnet(out: str, cwd: Path) -> None:
    delta = float(re.search(r"delta = (\d+\.\d+)", out).group(1))
    exact, penalised = _line(out, "exact "), _line(out, "penalised ")
    assert abs(float(re.search(r"discrepancy (\d+\.\d+)", exact).group(1)) / delta - 1) < 0.05, exact
    assert _psnr(exact) > max(25.0, _psnr(penalised)), (exact, penalised)


def check_invert_pretrained(out: str, cwd: Path) -> None:
    delta = float(_line(out, "noise level delta").split()[-1])
    for method in ("lifted", "gradient"):
        line = _line(out, f"{method} ")
        discrepancy = float(re.search(r"discrepancy (\d+\.\d+)", line).group(1))
        assert abs(discrepancy / delta - 1) < 0.1 and _psnr(line) > 25, line  # discrepancy principle met
    assert all((cwd / "out" / name).is_file() for name in ("features.pt", "features.npy", "patches.npy"))


CHECKS = {
    "reconstruct.py": check_reconstruct,
    "custom_operator.py": check_custom_operator,
    "train_unrolled.py": check_train_unrolled,
    "lifted_vs_backprop.py": check_lifted_vs_backprop,
    "invert_pretrained.py": check_invert_pretrained,
    "invert_resnet.py": check_invert_resnet,
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Start every example at once, then collect ``name -> (returncode, stdout, stderr, cwd)``."""
    env = {**os.environ, "LIFTINV_TINY": "1", "OMP_NUM_THREADS": "1"}
    started = {}
    for name in CHECKS:
        cwd = tmp_path_factory.mktemp(name.removesuffix(".py"))
        started[name] = (subprocess.Popen([sys.executable, str(EXAMPLES / name)], cwd=cwd, env=env, text=True,
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE), cwd)
    results = {}
    for name, (proc, cwd) in started.items():
        out, err = proc.communicate(timeout=300)
        results[name] = (proc.returncode, out, err, cwd)
    return results


def test_every_example_is_checked():
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == sorted(CHECKS)


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_example_runs(runs, name):
    code, out, err, cwd = runs[name]
    assert code == 0, err
    CHECKS[name](out, cwd)
    # A run of seconds writes nothing to stderr: no warning, and no progress bar (invert_resnet
    # drew its weight searches' bars in the tiny run too, where invert_pretrained's half-minute
    # full run had none); the bars are for the full runs.
    assert err == "", err


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_example_help_shows_its_docstring_and_the_tiny_option(name, capsys, monkeypatch):
    """``python examples/NAME.py --help`` prints the script's docstring, which says what it shows
    and how to run it, and what ``--tiny`` does. It printed the docstring's first line, a sentence
    cut off mid-way ('... noisy outputs f = N(u) + noise by lifted'), and ``--tiny`` had no help."""
    path = EXAMPLES / name
    monkeypatch.setattr(sys, "argv", [name, "--help"])
    with pytest.raises(SystemExit) as exit_info:  # argparse exits before the script does any work
        runpy.run_path(str(path), run_name="__main__")
    out = capsys.readouterr().out
    assert exit_info.value.code == 0
    doc = ast.get_docstring(ast.parse(path.read_text()))
    assert " ".join(doc.split()) in " ".join(out.split())  # the whole docstring, usage lines included
    assert re.search(r"^ +--tiny +\w", out, flags=re.M), out  # with a help text
