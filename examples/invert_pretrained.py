"""Invert a pre-trained network: recover images u from noisy outputs f = N(u) + noise by lifted
inversion with TV regularisation, the weight chosen by the discrepancy principle, and compare
with gradient-based inversion through autograd (same objective terms, same weight rule).

    python examples/invert_pretrained.py          # 32 x 32 patches, about half a minute
    python examples/invert_pretrained.py --tiny   # 16 x 16 (used by the tests)

The network here is a small convolutional feature map with seeded random weights, standing in for
a network trained elsewhere; it is saved and loaded like any torch model, so the same inversion
runs from the command line:
    liftinv invert out/features.pt out/features.npy --input-shape 1 32 32 --noise-level 3.2 --box 0 1 \
        --truth out/patches.npy --out out/u.npy
"""
import argparse
import math
import os
from pathlib import Path

import torch
from torch import nn

from liftinv.data import load_dataset
from liftinv.inversion import InversionConfig, invert
from liftinv.inversion_baseline import invert_gradient
from liftinv.io import save_array
from liftinv.metrics import psnr
from liftinv.potentials import TV

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--tiny", action="store_true", default=os.environ.get("LIFTINV_TINY") == "1",
                    help="tiny images and budgets, a run of seconds (the default with LIFTINV_TINY=1, as in the tests)")
parser.add_argument("--out", type=Path, default=Path("out"), help="folder of the saved network (default: out)")
args = parser.parse_args()
size, max_iter = (16, 300) if args.tiny else (32, 1000)
torch.set_num_threads(1)
generator = torch.Generator().manual_seed(0)

# The "pre-trained" network: convolution, leaky ReLU, convolution (any nn.Sequential of Linear,
# Conv1d/Conv2d/ConvTranspose2d, average pooling, padding, upsampling, pixel (un)shuffle,
# Flatten/Unflatten, eval-mode BatchNorm and Dropout, and proximal activations can be inverted;
# GELU and other non-proximal activations are refused by name).
net = nn.Sequential(nn.Conv2d(1, 4, 5, padding=2), nn.LeakyReLU(0.2), nn.Conv2d(4, 4, 3, padding=1))
with torch.no_grad():
    for conv in (net[0], net[2]):
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=generator) / math.sqrt(conv.weight[0].numel()))
        conv.bias.copy_(0.01 * torch.randn(conv.bias.shape, generator=generator))
path = args.out / "features.pt"
path.parent.mkdir(parents=True, exist_ok=True)
torch.save(net, path)
net = torch.load(path, weights_only=False)  # a whole module: only load files you trust

# Noisy outputs of two test patches. The noise level delta is the expected norm of one sample's
# noise, sigma * sqrt(entries); the discrepancy principle picks the TV weight alpha per sample so
# that ||N(u_alpha) - f|| = delta.
x = load_dataset("patches", "test", size=size).tensors[0][:2]
with torch.no_grad():
    clean = net(x)
sigma = 0.05
f = clean + sigma * torch.randn(clean.shape, generator=generator)
delta = sigma * math.sqrt(clean[0].numel())
save_array(f, args.out / "features.npy")  # for the command line above
save_array(x, args.out / "patches.npy")

config = InversionConfig(max_iter=max_iter, tol=1e-4, progress=not args.tiny)  # a bar per weight search
regularizer = TV(box=(0.0, 1.0))  # weight left to the discrepancy principle; u in [0, 1]
print(f"noise level delta = {delta:.3f}")
for name, method in (("lifted", invert), ("gradient", invert_gradient)):
    result = method(net, f, input_shape=(1, size, size), regularizer=regularizer, noise_level=delta, config=config)
    print(f"{name:9} PSNR {psnr(result.input, x).mean():6.2f} dB, alpha {result.alpha.mean():.4f}, "
          f"discrepancy {result.discrepancy.mean():.3f}, {result.iterations} iterations in {result.seconds:.2f} s")
