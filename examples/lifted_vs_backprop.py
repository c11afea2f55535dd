"""Train the same unrolled deblurring network from the same start three times (lifted Bregman
training by BCD with Adam, the same by ISGM, and backpropagation with Adam) and compare
validation PSNR and training time.

    python examples/lifted_vs_backprop.py          # 32 x 32 patches, under a minute
    python examples/lifted_vs_backprop.py --tiny   # 16 x 16, seconds (used by the tests)
"""
import argparse
import copy
import os

import torch

from liftinv.architectures import UnrolledPrimalDual
from liftinv.data import load_dataset
from liftinv.solvers import BCD, ISGM
from liftinv.solvers.rules import Adam
from liftinv.tasks import Reconstruction
from liftinv.training import Backprop, Lifted, train
from operators import Blur, gaussian_kernel

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--tiny", action="store_true", default=os.environ.get("LIFTINV_TINY") == "1",
                    help="tiny images and budgets, a run of seconds (the default with LIFTINV_TINY=1, as in the tests)")
args = parser.parse_args()
size, n_train, epochs = (16, 32, 1) if args.tiny else (32, 256, 3)
torch.set_num_threads(1)

train_set = load_dataset("patches", "train", size=size).tensors[0][:n_train]
val_set = load_dataset("patches", "val", size=size).tensors[0][:32]
physics = Blur(gaussian_kernel(1.5, dtype=torch.float32), img_size=(1, size, size), boundary="zero")
task = Reconstruction(physics, noise_sigma=0.02)
start = UnrolledPrimalDual(physics, 5, 8, (1, size, size), threshold=0.05,
                           generator=torch.Generator().manual_seed(1))

# One entry point, three methods: only the `method` argument differs. Each run gets a copy of the
# same initial network and the same generator seed (same batches, same noise).
methods = {
    "lifted Bregman, BCD + Adam": Lifted(solver=BCD(param_rule=Adam(1e-2))),
    "lifted Bregman, ISGM": Lifted(solver=ISGM(eta=5.0, inner=BCD(param_rule=Adam(1e-2)), inner_steps=2)),
    "backpropagation, Adam": Backprop(lr=1e-2),
}
print(f"{'method':28} {'val PSNR per epoch (dB)':>36} {'time (s)':>9}")
for name, method in methods.items():
    history = train(copy.deepcopy(start), train_set, task=task, method=method, epochs=epochs, batch_size=16,
                    val_set=val_set, generator=torch.Generator().manual_seed(0), progress=False).history
    curve = " ".join(f"{p:6.2f}" for p in history.val_psnr)
    print(f"{name:28} {curve:>36} {history.seconds[-1]:9.2f}")
# Epoch 0 is the untrained network. Backpropagation is faster per epoch on this small network;
# the lifted methods need no gradient through the network (every update is local to one layer).
