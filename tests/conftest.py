"""Test settings: one CPU thread (small tensors on a 2-core machine run fastest without thread
pools, and results are reproducible) and no TF32."""
import torch

torch.set_num_threads(1)
torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
