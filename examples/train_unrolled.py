"""Train an unrolled primal-dual network for deblurring with lifted Bregman training, save it with
the operator it was trained for, load it back and compare it with Tikhonov on test patches.

    python examples/train_unrolled.py          # 32 x 32 patches, under a minute
    python examples/train_unrolled.py --tiny   # 16 x 16, seconds (used by the tests)

The saved model then also works from the command line:
    liftinv reconstruct --simulate --model out/unrolled_deblur.pt --out out/unrolled_deblur.png
"""
import argparse
import os
from pathlib import Path

import torch

from liftinv.architectures import UnrolledPrimalDual
from liftinv.data import load_dataset
from liftinv.metrics import psnr
from liftinv.models import load_model, save_model
from liftinv.reconstruction import Tikhonov, reconstruct
from liftinv.solvers import BCD
from liftinv.solvers.rules import Adam
from liftinv.tasks import Reconstruction
from liftinv.training import Lifted, train
from operators import Blur, gaussian_kernel

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--tiny", action="store_true", default=os.environ.get("LIFTINV_TINY") == "1",
                    help="tiny images and budgets, a run of seconds (the default with LIFTINV_TINY=1, as in the tests)")
parser.add_argument("--out", type=Path, default=Path("out"), help="folder of the saved model (default: out)")
args = parser.parse_args()
size, n_train, epochs = (16, 32, 1) if args.tiny else (32, 256, 3)
noise = 0.02  # Gaussian noise on the blurred images
torch.set_num_threads(1)  # small images: one thread is fastest
generator = torch.Generator().manual_seed(0)  # every random draw (initialisation, shuffling, noise)

# Data: clean grey patches in [0, 1]; the task turns each batch into y = A x + noise.
train_set = load_dataset("patches", "train", size=size).tensors[0][:n_train]
val_set = load_dataset("patches", "val", size=size).tensors[0][:32]
physics = Blur(gaussian_kernel(1.5, dtype=torch.float32), img_size=(1, size, size), boundary="zero")
task = Reconstruction(physics, noise_sigma=noise)

# Five unrolled primal-dual iterations with 8 learned dual channels; the steps come from ||A||.
net = UnrolledPrimalDual(physics, 5, 8, (1, size, size), threshold=0.05, generator=generator)

# Lifted Bregman training: block-coordinate descent on the lifted energy, Adam on the weights.
# Every gradient is local to one layer: no backpropagation through the network.
history = train(net, train_set, task=task, method=Lifted(solver=BCD(param_rule=Adam(1e-2))), epochs=epochs,
                batch_size=16, val_set=val_set, generator=generator, progress=not args.tiny).history
print(f"validation PSNR: {history.val_psnr[0]:.2f} dB untrained, {history.val_psnr[-1]:.2f} dB after {epochs} epoch(s)")

# Save with the operator's settings and some metadata (written atomically).
path = args.out / "unrolled_deblur.pt"
save_model(net, path, task="deblurring", physics=physics, extra={"noise_sigma": noise, "val_psnr": history.val_psnr[-1]})

# Load it back: without a physics, the operator is rebuilt from the stored settings. A physics
# with other settings (another kernel, boundary, size...) is refused with a ValueError naming them.
saved = load_model(path)
x = load_dataset("patches", "test", size=size).tensors[0][:32]
y = task.observe(x, generator).observation
tikhonov = psnr(reconstruct(y, saved.physics, Tikhonov(0.03)), x).mean()
unrolled = psnr(reconstruct(y, saved.physics, saved), x).mean()
print(f"test PSNR: Tikhonov {tikhonov:.2f} dB, unrolled {unrolled:.2f} dB (model {path})")
