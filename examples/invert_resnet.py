"""Invert a residual network u -> Q(... (u_j + W_j^T sigma(W_j u_j + b_j)) ...)P from noisy outputs,
with TV regularisation and the weight chosen by the discrepancy principle, in both lifted forms of
the ResNet: the residual relations kept as quadratic penalties (a relaxation of the network) or
eliminated (``residual="exact"``: the same network, whose lifted problem couples the output to
every block). Both forms share the parameters (``with_residual``). With the same few sweeps per
solve of the weight search, the exact form fits the data to the noise level, while the penalised
one has not converged yet and the search, reading its misfit as too much regularisation, lowers
its weight.

    python examples/invert_resnet.py          # 32 x 32 patches
    python examples/invert_resnet.py --tiny   # 16 x 16 (used by the tests)
"""
import argparse
import math
import os

import torch
from torch import nn

from liftinv.architectures import ResNet
from liftinv.data import load_dataset
from liftinv.inversion import InversionConfig, invert
from liftinv.metrics import psnr
from liftinv.potentials import TV

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--tiny", action="store_true", default=os.environ.get("LIFTINV_TINY") == "1",
                    help="tiny images and budgets, a run of seconds (the default with LIFTINV_TINY=1, as in the tests)")
args = parser.parse_args()
size, sweeps = (16, 40) if args.tiny else (32, 60)
torch.set_num_threads(1)
generator = torch.Generator().manual_seed(0)

# A tied convolutional ResNet (1 -> 4 channels, 3 blocks with leaky ReLU, -> 1 channel), seeded.
penalised = ResNet(4, 3, nn.LeakyReLU(0.1), in_features=1, out_features=1, kernel_size=3, tied=True,
                   generator=generator)
exact = penalised.with_residual("exact")  # the same network and parameters, lifted exactly

x = load_dataset("patches", "test", size=size).tensors[0][:2]
with torch.no_grad():
    clean = penalised(x)
sigma = 0.01
f = clean + sigma * torch.randn(clean.shape, generator=generator)
delta = sigma * math.sqrt(clean[0].numel())  # expected noise norm of one sample

# The same number of sweeps per solve of the weight search for both forms, a progress bar per search
# (not in the seconds-long tiny run).
config = InversionConfig(max_iter=sweeps, tol=0.0, max_search=6, progress=not args.tiny)
print(f"noise level delta = {delta:.3f}; variables: penalised {penalised.depth + 1}, exact {exact.depth + 1}")
for name, network in (("penalised", penalised), ("exact", exact)):
    result = invert(network, f, regularizer=TV(box=(0.0, 1.0)), noise_level=delta, x0=torch.full_like(x, 0.5),
                    config=config)
    print(f"{name:9} PSNR {psnr(result.input.clamp(0, 1), x).mean():6.2f} dB, alpha {result.alpha.mean():.2e}, "
          f"discrepancy {result.discrepancy.mean():.3f}, {result.iterations} sweeps in {result.seconds:.2f} s")
