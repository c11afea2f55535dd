"""The Python snippets of README.md run as written. Each snippet continues the namespace of the one
before it, except those starting with ``import torch``, which begin afresh. Their results are
checked against what the README says of them."""
import re
from pathlib import Path

import pytest
import torch

from liftinv import lift
from liftinv.affine import EvalBatchNorm
from liftinv.metrics import psnr

README = Path(__file__).resolve().parent.parent / "README.md"


@pytest.fixture(scope="module")
def snippets() -> list[dict]:
    """The namespace after each snippet (a shallow copy: later snippets may rebind names)."""
    codes = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(codes) == 4, "README.md's Python snippets changed: update this test"
    torch.manual_seed(0)
    namespace, after = {}, []
    for code in codes:
        if code.startswith("import torch"):
            namespace = {"__name__": "readme"}
        exec(compile(code, str(README), "exec"), namespace)
        after.append(dict(namespace))
    return after


def test_reconstruction_snippet(snippets):
    ns = snippets[0]
    x, x_fbp, x_tv = ns["x"], ns["x_fbp"], ns["x_tv"]
    assert x.shape == x_fbp.shape == x_tv.shape == (2, 1, 64, 64)  # as its comment says
    assert psnr(x_tv, x).mean() > psnr(x_fbp, x).mean() + 3  # TV well above FBP on noisy sinograms


def test_training_snippet(snippets):
    ns = snippets[1]
    val_psnr = ns["result"].history.val_psnr
    assert len(val_psnr) == 4 and val_psnr[-1] > val_psnr[0]  # untrained, then 3 epochs that learn
    assert ns["x_hat"].shape == (4, 1, 32, 32) and torch.isfinite(ns["x_hat"]).all()


def test_inversion_snippet(snippets):
    ns = snippets[2]
    result = ns["result"]
    assert ns["u"].shape == (2, 1, 64, 64) and torch.isfinite(ns["u"]).all()  # as its comment says
    assert any(isinstance(m, EvalBatchNorm) for m in lift(ns["encoder"]).modules())  # the batch norm is lifted
    assert torch.allclose(result.discrepancy, result.target, rtol=0.1)  # the discrepancy principle


def test_deepinv_snippet(snippets):
    ns = snippets[3]
    assert ns["params"]["mask"].shape == (1, 2, 64, 64) and ns["y"].shape == (4, 2, 64, 64)
    assert torch.equal(ns["mri"].mask, ns["params"]["mask"][0, 0].to(ns["mri"].mask))  # the drawn mask, held once
    assert torch.equal(ns["ct"].angles, torch.linspace(0, 90, 30).to(ns["ct"].angles))
