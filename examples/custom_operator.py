"""Bring your own forward operator: any deepinv ``LinearPhysics`` with ``A`` and ``A_adjoint``
works with liftinv's reconstructions (and with the unrolled networks). Here: 2x super-resolution,
A = 2 x 2 average pooling.

    python examples/custom_operator.py          # 64 x 64 patches
    python examples/custom_operator.py --tiny   # 16 x 16 (used by the tests)
"""
import argparse
import os

import torch
import torch.nn.functional as F
from deepinv.physics import GaussianNoise, LinearPhysics

from liftinv.data import load_dataset
from liftinv.metrics import psnr
from liftinv.reconstruction import TV, Adjoint, Tikhonov, reconstruct
from operators import adjoint_error, opnorm
from operators.spec import physics_spec


class AveragePooling(LinearPhysics):
    r"""Downsampling by 2 x 2 averaging, :math:`(Ax)_{ij} = \tfrac14 \sum_{a,b \in \{0,1\}} x_{2i+a, 2j+b}`.

    Its adjoint copies each value to the four pixels of its block, times 1/4.
    """

    def A(self, x, **params):  # deepinv passes optional parameters by keyword; none are used here
        return F.avg_pool2d(x, 2)

    def A_adjoint(self, y, **params):
        return F.interpolate(y, scale_factor=2, mode="nearest") / 4


parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--tiny", action="store_true", default=os.environ.get("LIFTINV_TINY") == "1",
                    help="tiny images and budgets, a run of seconds (the default with LIFTINV_TINY=1, as in the tests)")
tiny = parser.parse_args().tiny
size, tv_iters = (16, 100) if tiny else (64, 400)
torch.set_num_threads(1)

generator = torch.Generator().manual_seed(0)
physics = AveragePooling(noise_model=GaussianNoise(sigma=0.01, rng=generator))

# Check the operator first: the adjoint must pass the dot-product test, and the operator norm
# (used for step sizes by the TV solver and the unrolled networks) must be what we expect: 1/2.
x = load_dataset("patches64", "test", size=size).tensors[0][:3]
print(f"adjoint test: relative error {adjoint_error(physics, x, generator):.1e}")
print(f"operator norm: {opnorm(physics, (1, 1, size, size)):.4f} (exact: 0.5)")

y = physics(x)  # (3, 1, size / 2, size / 2), noisy
# The adjoint is 1/4 of nearest-neighbour upsampling; 4 A^T y is the nearest-neighbour image and
# also the pseudo-inverse A^+ y (A A^T = I/4), which Tikhonov approaches as its weight goes to 0.
print(f"{'nearest neighbour (4 A^T y)':56} PSNR {psnr(4 * reconstruct(y, physics, Adjoint()), x).mean():6.2f} dB")
for method in (Tikhonov(1e-3, n_iter=100), TV(2e-3, n_iter=tv_iters)):
    print(f"{method!r:56} PSNR {psnr(reconstruct(y, physics, method), x).mean():6.2f} dB")

# Saving a trained model records the operator's settings (operators.spec), which exist only for
# liftinv's own operators: a custom operator is refused by name.
try:
    physics_spec(physics)
except TypeError as err:
    print(f"as expected: {err}")
