"""Classical reconstructions with ``liftinv.reconstruct``: sparse-view CT and accelerated MRI of
bundled test phantoms, scored by PSNR.

    python examples/reconstruct.py          # 64 x 64, a few seconds
    python examples/reconstruct.py --tiny   # 24 x 24, short iteration budgets (used by the tests)
"""
import argparse
import os

import torch
from deepinv.physics import GaussianNoise

from liftinv.data import load_dataset
from liftinv.metrics import psnr
from liftinv.reconstruction import FBP, TV, Tikhonov, ZeroFilled, reconstruct
from operators import MRI, Radon, random_mask

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--tiny", action="store_true", default=os.environ.get("LIFTINV_TINY") == "1",
                    help="tiny images and budgets, a run of seconds (the default with LIFTINV_TINY=1, as in the tests)")
tiny = parser.parse_args().tiny
size, tv_iters = (24, 60) if tiny else (64, 300)
torch.set_num_threads(1)  # small images: one thread is fastest

# Two test phantoms, (2, 1, size, size) with values in [0, 1]. All randomness (noise, masks) comes
# from one generator, so every run prints the same numbers.
x = load_dataset("ellipses", "test", size=size).tensors[0][:2]
generator = torch.Generator().manual_seed(0)

# Sparse-view CT: 30 views, Gaussian noise on the sinogram. physics(x) adds the noise, physics.A(x)
# would not. The weights are the demo's (tuned for 64 x 64 images at this noise level).
radon = Radon(size, 30, noise_model=GaussianNoise(sigma=0.5, rng=generator))
y = radon(x)
for method in (FBP("ramp"), FBP("hann"), Tikhonov(30.0, n_iter=50), TV(3.0, n_iter=tv_iters)):
    x_hat = reconstruct(y, radon, method)  # same call for every method
    print(f"CT   {method!r:60} PSNR {psnr(x_hat, x).mean():6.2f} dB")

# Single-coil MRI with a 4x random column mask. Images are (B, 2, H, W) (real, imaginary); the
# phantoms are real, and the reconstructions are scored in modulus.
mri = MRI(random_mask((size, size), 4.0, generator=generator), noise_model=GaussianNoise(sigma=0.02, rng=generator))
k_space = mri(torch.cat([x, torch.zeros_like(x)], dim=1))
for method in (ZeroFilled(), TV(0.01, n_iter=tv_iters)):
    modulus = reconstruct(k_space, mri, method).pow(2).sum(1, keepdim=True).sqrt()
    print(f"MRI  {method!r:60} PSNR {psnr(modulus, x).mean():6.2f} dB")

# Without a method, reconstruct picks FBP for CT, zero filling for MRI and Tikhonov for blur;
# asking for a method the operator does not support is a TypeError naming both.
try:
    reconstruct(k_space, mri, FBP())
except TypeError as err:
    print(f"as expected: {err}")
