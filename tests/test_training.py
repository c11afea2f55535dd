"""Training entry point: lifted runs improve held-out PSNR, resume equals an uninterrupted run
bit for bit, non-finite states stop with the block named and the last good checkpoint kept,
bad input raises clear errors."""
from __future__ import annotations

import copy
import math
import pathlib
import re
from collections import Counter
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from liftinv.activations import ReLU, SoftThreshold
from liftinv.architectures import MLP, ProximalNeuralNetwork, UnrolledPrimalDual
from liftinv.bench.training import TensorMemory
from liftinv.blocks import Params, Var
from liftinv.checkpoint import load_checkpoint
from liftinv.data import load_dataset
from liftinv.evaluation import HeldOut, evaluate, sample_loss
from liftinv.history import TrainHistory, plot_history, plot_psnr_vs_time
from liftinv.methods import _BackpropRunner, _LiftedRunner
from liftinv.metrics import psnr, ssim
from liftinv.penalty import MAC
from liftinv.problem import LiftedProblem
from liftinv.solvers import BCD, ISGM, Adam, Nesterov, OddEven
from liftinv.tasks import Autoencoder, Denoising, Reconstruction
from liftinv.training import Backprop, CheckpointExistsError, Lifted, train
from liftinv.training_cli import train_main
from liftinv.training_setups import SETUP_NAMES, build_setup
from operators.blur import Blur
from operators.kernels import gaussian_kernel

DT = torch.float64


@pytest.fixture(scope="module")
def patches() -> tuple[torch.Tensor, torch.Tensor]:
    """Tiny train/val sets of 15x15 natural patches (odd size, float64)."""
    train_set = load_dataset("patches", "train", size=15, dtype=DT).tensors[0][:30]
    val_set = load_dataset("patches", "val", size=15, dtype=DT).tensors[0][:12]
    return train_set, val_set


def _pnn(seed: int = 1) -> ProximalNeuralNetwork:
    return ProximalNeuralNetwork(1, 4, 3, kernel_size=3, threshold=0.05, generator=torch.Generator().manual_seed(seed)).to(DT)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _held_out_gen(seed: int) -> torch.Generator:
    """The held-out noise's generator as documented: seeded with the word of NumPy's
    ``SeedSequence([key, seed])``, key the bytes of "held"."""
    return _gen(int(np.random.SeedSequence([int.from_bytes(b"held", "big"), seed]).generate_state(1)[0]))


def _same(a, b) -> bool:
    """Exact equality of nested lists of floats, NaN equal to NaN."""
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b or (math.isnan(a) and math.isnan(b))


# ----------------------------------------------------------------------------- learning
@pytest.mark.parametrize(
    "method",
    [
        Lifted(solver=BCD(param_rule=Adam(1e-2))),
        Lifted(solver=BCD(param_rule=Adam(1e-2), interleave=True), lipschitz_every=5),
        Lifted(solver=BCD(param_rule=Nesterov(), schedule=OddEven()), lipschitz_every=3),
        Lifted(solver=ISGM(eta=10.0, inner_steps=2)),
    ],
    ids=["bcd-adam", "bcd-adam-interleaved", "bcd-nesterov-oddeven", "isgm"],
)
def test_lifted_pnn_denoiser_beats_untrained(patches, method):
    train_set, val_set = patches
    task = Denoising(0.1)
    net = _pnn()
    before = evaluate(net, val_set, task=task, batch_size=5)
    result = train(net, train_set, task=task, method=method, epochs=4, batch_size=10, val_set=val_set, progress=False, generator=_gen())
    h = result.history
    after = evaluate(net, val_set, task=task, batch_size=5)
    assert h.val_psnr[0] == pytest.approx(before.psnr) and h.val_psnr[-1] == pytest.approx(after.psnr)
    assert after.psnr > before.psnr + 0.5
    assert after.loss < before.loss
    assert h.epoch == [0, 1, 2, 3, 4] and all(b > a for a, b in zip(h.seconds, h.seconds[1:]))
    assert all(math.isfinite(e) for e in h.energy[1:]) and all(len(g) == net.depth and min(g) >= 0 for g in h.gaps[1:])


def test_lifted_autoencoder_float32_beats_untrained(patches):
    train_set, val_set = (t.float()[:, :, :12, :12] for t in patches)
    net = MLP([144, 32, 16, 144], [ReLU(), SoftThreshold(0.01)], generator=_gen(3))
    task = Autoencoder(noise_sigma=0.05)
    method = Lifted(solver=BCD(param_rule=Adam(3e-3)), sweeps_per_batch=2)
    h = train(net, train_set, task=task, method=method, epochs=5, batch_size=10, val_set=val_set, progress=False).history
    assert h.val_psnr[-1] > h.val_psnr[0] + 3
    assert h.val_loss[-1] < h.val_loss[0]


@pytest.mark.parametrize("interleave", [False, True])
def test_lifted_unrolled_deblurring_beats_untrained(patches, interleave):
    train_set, val_set = patches
    physics = Blur(gaussian_kernel(1.0, dtype=DT), img_size=(1, 15, 15), boundary="zero", dtype=DT)
    net = UnrolledPrimalDual(physics, 3, 4, (1, 15, 15), threshold=0.02, generator=_gen(2)).to(DT)
    task = Reconstruction(physics, noise_sigma=0.02)
    h = train(net, train_set, task=task, method=Lifted(solver=BCD(param_rule=Adam(1e-2), interleave=interleave)), epochs=4, batch_size=10,
              val_set=val_set, progress=False).history
    assert h.val_psnr[-1] > h.val_psnr[0] + 0.5


def test_backprop_same_entry_point(patches):
    train_set, val_set = patches
    net = _pnn()
    h = train(net, train_set, task=Denoising(0.1), method=Backprop(lr=1e-2), epochs=3, batch_size=10, val_set=val_set,
              progress=False).history
    assert h.val_psnr[-1] > h.val_psnr[0] + 0.5
    assert all(math.isnan(e) for e in h.energy) and h.gaps == [[]] * 4


@pytest.mark.parametrize("method", [Lifted(), Backprop(lr=1e-2)])
def test_training_under_no_grad_is_the_same_run(patches, method):
    """``train`` called inside ``torch.no_grad()`` trains exactly as outside it."""
    kwargs = dict(task=Denoising(0.1), method=method, epochs=1, batch_size=10, progress=False)
    net, free = _pnn(), _pnn()
    train(free, patches[0][:20], **kwargs)
    with torch.no_grad():
        train(net, patches[0][:20], **kwargs)
    assert all(torch.equal(p, q) for p, q in zip(net.parameters(), free.parameters()))


def test_epoch_log_names_only_what_the_run_has(patches, capsys):
    """The lifted energy and gaps for lifted methods, the validation scores with a validation set;
    no NaN placeholders."""
    train_set, val_set = patches
    kwargs = dict(task=Denoising(0.1), epochs=1, batch_size=10, progress=True)
    train(_pnn(), train_set, method=Lifted(), **kwargs)
    lifted = capsys.readouterr()
    train(_pnn(), train_set, method=Backprop(lr=1e-2), val_set=val_set, **kwargs)
    backprop = capsys.readouterr()
    lifted_line = next(line for line in lifted.out.splitlines() if line.startswith("epoch 1"))
    backprop_line = next(line for line in backprop.out.splitlines() if line.startswith("epoch 1"))
    assert "energy" in lifted_line and "gaps" in lifted_line and "val loss" not in lifted_line
    assert "energy" not in backprop_line and "val loss" in backprop_line and "PSNR" in backprop_line
    assert "nan" not in lifted_line + backprop_line


# ----------------------------------------------------------------------------- lifted runner
@pytest.mark.parametrize("sweeps", [1, 3])
def test_each_batch_takes_sweeps_per_batch_solver_steps(patches, spy, sweeps):
    """N = 30 images in batches of 10 for E = 2 epochs: E * (N // 10) = 6 batches, each with
    ``sweeps_per_batch`` solver steps: 6 * sweeps calls of ``BCD.step``, iterations 1, 2, ... in turn."""
    calls = spy(BCD, "step", lambda self, problem, state: state.iteration + 1)
    train(_pnn(), patches[0], task=Denoising(0.1), method=Lifted(sweeps_per_batch=sweeps), epochs=2, batch_size=10,
          progress=False, generator=_gen())
    assert calls == list(range(1, 6 * sweeps + 1))


@pytest.mark.parametrize("solver, graphs", [
    (BCD(param_rule=Adam(1e-2), interleave=True), True),
    (ISGM(eta=10.0, inner=BCD(param_rule=Adam(1e-2), interleave=True), inner_steps=2), True),
    (ISGM(eta=10.0, inner=BCD(param_rule=Adam(1e-2))), False),
], ids=["bcd-interleaved", "isgm-interleaved", "isgm-top-down"])
def test_forward_pass_keeps_parameter_graphs_for_an_interleaved_sweep(patches, monkeypatch, solver, graphs):
    """The forward pass keeps the graphs to the parameters (``param_graphs``) exactly when the
    sweep is interleaved, an ISGM's inner one included (the trainer read ``solver.interleave``,
    which ISGM lacks, and took the parameter gradients from a second evaluation of the maps); the
    graphs save work only: the parameters equal those of a run without them, bit for bit."""
    real, asked = LiftedProblem.forward, []

    def forward(self, u, y=None, *, param_graphs=False, force=None):
        asked.append(param_graphs)
        return real(self, u, y, param_graphs=param_graphs if force is None else force)

    def run(force=None):
        monkeypatch.setattr(LiftedProblem, "forward", lambda *a, **k: forward(*a, **k, force=force))
        return train(_pnn(), patches[0][:20], task=Denoising(0.1), method=Lifted(solver=solver), epochs=1, batch_size=10,
                     progress=False, generator=_gen()).model

    model = run()
    assert asked == [graphs, graphs]
    for (name, a), b in zip(model.named_parameters(), run(force=not graphs).parameters()):
        assert torch.equal(a, b), name


def test_lifted_step_clamps_the_output_to_the_target_and_moves_the_hidden_variables(patches):
    r"""One lifted step holds the batch at its forward pass, clamps :math:`x_K` to the target and
    moves the hidden variables :math:`x_1..x_{K-1}` and the parameters: :math:`x_K` stays the
    target exactly, :math:`x_0` the observation, and the returned loss is that of the forward
    pass before the update, :math:`\tfrac1B\sum_i \tfrac12\|N(u^i) - t^i\|^2`."""
    net = _pnn()
    batch = Denoising(0.1).observe(patches[0][:10], _gen(5))
    with torch.no_grad():
        before = float(sample_loss(net(batch.observation), batch.target).mean())
        hidden = net.feasible(batch.observation)[1:-1]
    runner = _LiftedRunner(net, Lifted(solver=BCD(param_rule=Adam(1e-2))))
    assert runner.step(batch, 1) == pytest.approx(before, rel=1e-12)
    xs = runner.problem.xs
    assert torch.equal(xs[-1], batch.target) and torch.equal(xs[0], batch.observation)
    assert all(not torch.equal(x, h) for x, h in zip(xs[1:-1], hidden))


def test_lifted_runner_checkpoints_parameter_states_only_and_names_non_finite_blocks(patches):
    r"""After a step with Nesterov variables and Adam parameters, the runner's ``state_dict``
    holds the iteration and the parameter-rule states but no variable state (those belong to
    the batch); a NaN in :math:`x_2` makes ``summary`` name layer 2 (the first non-finite gap,
    block ``Var(2)``); a network whose forward output is NaN stops the next step before any
    solver step, naming ``Var(K)`` and the iteration."""
    net = _pnn()
    batch = Denoising(0.1).observe(patches[0][:10], _gen(5))
    runner = _LiftedRunner(net, Lifted(solver=BCD(var_rule=Nesterov(), param_rule=Adam(1e-2))))
    runner.step(batch, 1)
    assert runner.state.var_states  # the batch's Nesterov states exist ...
    state = runner.state_dict()["solver"]
    assert state["iteration"] == 1 and state["var_states"] == {}  # ... and are not checkpointed
    assert sorted(state["param_states"]) == list(range(len(runner.problem.param_groups)))
    runner.problem.set(Var(2), [torch.full_like(runner.problem.xs[2], math.nan)])
    with pytest.raises(FloatingPointError, match=r"non-finite penalty of layer 2 \(block Var\(2\)\)"):
        runner.summary()
    with torch.no_grad():
        next(net.parameters()).fill_(math.nan)
    with pytest.raises(FloatingPointError, match=rf"non-finite output of the forward pass \(block Var\({net.depth}\)\) at iteration 7"):
        runner.step(batch, 7)


def test_backprop_sgd_uses_the_momentum_and_refuses_non_finite_gradients():
    r"""``Backprop("sgd", lr, momentum)`` is heavy-ball SGD: on :math:`\tfrac12\|\theta - t\|^2`
    per sample (a bias-only model), :math:`\theta_1 = \theta_0 - \eta g_0`,
    :math:`\theta_2 = \theta_1 - \eta(\mu g_0 + g_1)` with :math:`g = \theta - t`; a NaN
    gradient of a finite loss raises, naming the parameter, before the update."""
    from liftinv.tasks import Batch

    model = torch.nn.Linear(1, 2).double()
    with torch.no_grad():
        model.weight.zero_()
        model.bias.copy_(torch.tensor([1.0, -2.0], dtype=DT))
    model.weight.requires_grad_(False)
    batch = Batch(torch.zeros(4, 1, dtype=DT), torch.zeros(4, 2, dtype=DT))
    runner = _BackpropRunner(model, Backprop("sgd", lr=0.1, momentum=0.5))
    theta0 = model.bias.detach().clone()
    runner.step(batch, 1)
    theta1 = theta0 - 0.1 * theta0
    torch.testing.assert_close(model.bias.detach(), theta1, rtol=1e-14, atol=1e-14)
    runner.step(batch, 2)
    theta2 = theta1 - 0.1 * (0.5 * theta0 + theta1)
    torch.testing.assert_close(model.bias.detach(), theta2, rtol=1e-14, atol=1e-14)
    model.bias.register_hook(lambda g: g * math.nan)  # a finite loss with a NaN gradient
    with pytest.raises(FloatingPointError, match="non-finite gradient of parameter bias at iteration 3"):
        runner.step(batch, 3)
    assert torch.equal(model.bias.detach(), theta2)


def test_backprop_step_reads_the_device_twice(host_reads):
    """A backprop step reads the loss and one flag for all the gradients on the host (device syncs
    on a GPU), not one per parameter (SGD: torch's Adam reads its CPU step counts, no sync)."""
    from liftinv.tasks import Batch

    model = torch.nn.Sequential(*(torch.nn.Linear(3, 3) for _ in range(4))).double()
    batch = Batch(torch.ones(2, 3, dtype=DT), torch.zeros(2, 3, dtype=DT))
    runner = _BackpropRunner(model, Backprop("sgd", lr=1e-2))
    with torch.no_grad():
        before = float(sample_loss(model(batch.observation), batch.target).mean())
    with host_reads() as reads:
        loss = runner.step(batch, 1)
    assert len(reads) == 2 and loss == before


def test_lifted_step_reads_the_loss_and_the_target_check_at_once(host_reads):
    """Besides its sweeps (BCD's finiteness checks) and the Lipschitz estimates, a lifted training
    step reads the device twice (syncs on a GPU): the scan of the batch's input and one read of
    the forward pass's loss with the check that the targets lie in the range of the output
    activation (they were two reads). Oracle: the counts of host reads for 1 and 2 sweeps per
    batch (constants kept: lipschitz_every = 100) differ by the sweep's; the loss returned is the
    mean sample loss of the forward pass, bit for bit."""
    from liftinv.tasks import Batch

    images = torch.rand(6, 1, 5, 5, dtype=DT, generator=torch.Generator().manual_seed(0))
    batches = [Batch(images[:3] + 0.1, images[:3]), Batch(images[3:] + 0.1, images[3:])]
    counts = []
    for sweeps in (1, 2):
        net = _pnn()
        runner = _LiftedRunner(net, Lifted(solver=BCD(param_rule=Adam(1e-2)), sweeps_per_batch=sweeps, lipschitz_every=100))
        runner.start_epoch()
        runner.step(batches[0], 1)  # the constants are estimated on the first batch
        with torch.no_grad():
            before = float(sample_loss(net(batches[1].observation), batches[1].target).mean())
        with host_reads() as reads:
            loss = runner.step(batches[1], 2)
        counts.append(len(reads))
        assert loss == before
    assert 2 * counts[0] - counts[1] == 2


@pytest.mark.parametrize("every, per_epoch", [(1, 3), (2, 2), (3, 1)])
def test_lipschitz_constants_are_estimated_once_per_lipschitz_every_batches(patches, spy, every, per_epoch):
    """B = 3 batches per epoch, one BCD sweep each: every block's Lipschitz constant is estimated
    (one power iteration run) on the batches b = 0, 1, 2 with b % lipschitz_every == 0, i.e.
    ceil(B / lipschitz_every) times per epoch (3 for 1, 2 for 2, 1 for 3), 2 * that over E = 2 epochs."""
    blocks = spy(LiftedProblem, "_power", lambda self, block, normal, like: block)
    net = _pnn()
    train(net, patches[0], task=Denoising(0.1), method=Lifted(lipschitz_every=every), epochs=2, batch_size=10,
          progress=False, generator=_gen())
    counts = Counter(blocks)
    assert {b for b in counts if isinstance(b, Var)} == {Var(k) for k in range(1, net.depth)}
    assert any(isinstance(b, Params) for b in counts)
    assert set(counts.values()) == {2 * per_epoch}


def test_kept_lipschitz_constants_follow_the_image_size():
    """The trainer's Lipschitz cache (``lipschitz_every`` > 1) keeps a constant across batches only
    while the batch has the shapes it was estimated on: a zero-padded convolution's norm grows with
    the image (a variable block's constant) and a parameter block's constant sums over the samples'
    pixels, so after batches of 3 x 3 images, a batch of 8 x 9 images gets every block's constant of
    a problem built on it (power iterations from scratch, within 5%), not the small images'."""
    from liftinv.methods import _CachedLipschitz

    net = _pnn()
    small, large = (torch.randn(2, 1, *hw, generator=_gen(44), dtype=DT) for hw in ((3, 3), (8, 9)))
    problem = LiftedProblem(net, net.feasible(small), free_vars=range(1, net.depth), train_params=True, power_iters=20)
    cached = _CachedLipschitz(problem)
    blocks = problem.blocks()
    for b in blocks:
        cached.lipschitz(b)
    problem.rebind(net.feasible(large))
    fresh = LiftedProblem(net, net.feasible(large), free_vars=range(1, net.depth), train_params=True, power_iters=20)
    for b in blocks:
        assert cached.lipschitz(b) == pytest.approx(fresh.lipschitz(b), rel=0.05), b


@pytest.mark.parametrize("change", ["weight", "parameter"])
def test_kept_lipschitz_constants_follow_a_changed_network(monkeypatch, change):
    """The trainer's Lipschitz cache (``lipschitz_every`` > 1) drops its constants when the
    network changes other than by the solver's updates between batches (a layer's penalty weight
    set to 100, or its weight matrix scaled by 4 in place), as the problem drops its own: the
    constants kept from the first batch give steps far too long for that layer's blocks. Oracle:
    plain BCD (PALM steps from constants of 50 power iterations) decreases the energy at every
    group update of the second batch, as with ``lipschitz_every`` = 1."""
    from liftinv.tasks import Batch

    g = _gen(5)
    images = torch.rand(8, 6, dtype=DT, generator=g)
    batches = [Batch(x + 0.1 * torch.randn(x.shape, dtype=DT, generator=g), x) for x in (images[:4], images[4:])]
    net = MLP([6, 8, 8, 6], [ReLU(), ReLU()], generator=_gen(3)).to(DT)
    runner = _LiftedRunner(net, Lifted(solver=BCD(), lipschitz_every=100, power_iters=50))
    runner.start_epoch()
    runner.step(batches[0], 1)
    if change == "weight":
        net.layers[1].weight = 100.0
    else:
        with torch.no_grad():
            net.layers[1].maps[0].weight.mul_(4.0)
    energies, update = [], BCD._update

    def recorded(self, problem, group, *args):
        energies.append(float(runner.problem.energy()))
        update(self, problem, group, *args)
        energies.append(float(runner.problem.energy()))

    monkeypatch.setattr(BCD, "_update", recorded)
    runner.step(batches[1], 2)
    assert len(energies) == 2 * 3  # Var(2), Var(1), then the three parameter groups (disjoint layers)
    assert all(after <= before * (1 + 1e-12) for before, after in zip(energies, energies[1:])), energies


def test_logged_energy_weights_each_layer_penalty(patches, spy):
    r"""The energy logged after an epoch is that of the last batch after its sweeps,
    :math:`\sum_k \lambda_k \tfrac1B\sum_i P_k^i` with the MAC penalty
    :math:`P_k^i = \tfrac12\|x_k^i - \sigma_k(W_k x_{k-1}^i + b_k)\|^2` recomputed here from the
    runner's final variables (layer weights 3, 0.25, 1.5; ReLU, ReLU, identity); the gaps are the
    unweighted :math:`\tfrac1B\sum_i P_k^i`."""
    runners = spy(_LiftedRunner, "summary", lambda self: self)
    weights = [3.0, 0.25, 1.5]
    net = MLP([225, 8, 6, 225], [ReLU(), ReLU()], weights=weights, generator=_gen(3)).to(DT)
    method = Lifted(penalty=MAC, solver=BCD(param_rule=Adam(1e-2)))
    h = train(net, patches[0], task=Autoencoder(0.05), method=method, epochs=1, batch_size=10, progress=False,
              generator=_gen()).history
    xs = runners[-1].problem.xs
    acts = [torch.relu, torch.relu, lambda a: a]
    with torch.no_grad():
        gaps = [float((0.5 * (xs[k] - act(lin(xs[k - 1]))).pow(2).sum(1)).mean())
                for k, (lin, act) in enumerate(zip([net.layer(k).maps[0] for k in (1, 2, 3)], acts), start=1)]
    expected = sum(w * g for w, g in zip(weights, gaps))
    assert abs(expected - sum(gaps)) > 0.1 * expected  # the weights matter here
    assert h.energy[-1] == pytest.approx(expected, rel=1e-12)
    assert h.gaps[-1] == pytest.approx(gaps, rel=1e-12)


def test_train_loss_is_the_batch_mean_and_iterations_count_across_epochs(patches, monkeypatch):
    """N = 25 images in batches of 10: 25 // 10 = 2 full batches per epoch (the last 5 images
    dropped), iterations 1, 2 | 3, 4 over two epochs; with each batch's loss set to its
    iteration, the logged training loss of an epoch is the mean (1.5, then 3.5)."""
    seen = []

    def fake_step(self, batch, iteration):
        seen.append((iteration, batch.observation.shape[0]))
        return float(iteration)

    monkeypatch.setattr(_BackpropRunner, "step", fake_step)
    h = train(_pnn(), patches[0][:25], task=Denoising(0.1), method=Backprop(), epochs=2, batch_size=10, progress=False,
              generator=_gen()).history
    assert seen == [(1, 10), (2, 10), (3, 10), (4, 10)]
    assert h.epoch == [0, 1, 2] and h.train_loss[1:] == [1.5, 3.5]


def test_time_budget_stops_at_the_batch_that_reaches_it(patches, monkeypatch):
    """With a clock that advances 1 s per reading, each batch takes 1 s: a budget of 2 s stops
    after the second of the three batches of epoch 1 (cumulative time 2 >= 2), at epoch 2/3."""
    from types import SimpleNamespace

    import liftinv.training as training

    clock = iter(range(1000))
    monkeypatch.setattr(training, "time", SimpleNamespace(perf_counter=lambda: float(next(clock))))
    monkeypatch.setattr(_BackpropRunner, "step", lambda self, batch, iteration: 0.0)
    h = train(_pnn(), patches[0], task=Denoising(0.1), method=Backprop(), epochs=3, batch_size=10, time_budget=2.0,
              progress=False, generator=_gen()).history
    assert h.epoch == [0, pytest.approx(2 / 3)] and h.seconds == [0.0, 2.0]


def test_time_budget_spent_at_the_end_of_an_epoch_stops_there(patches, monkeypatch, tmp_path):
    """Batches of 1 s, three per epoch: a budget of 3 s is reached by the last batch of epoch 1,
    which is checkpointed, and no batch of epoch 2 runs; resuming with that budget, spent, runs
    no batch either."""
    from types import SimpleNamespace

    import liftinv.training as training

    clock = iter(range(1000))
    monkeypatch.setattr(training, "time", SimpleNamespace(perf_counter=lambda: float(next(clock))))
    monkeypatch.setattr(_BackpropRunner, "step", lambda self, batch, iteration: 0.0)
    kwargs = dict(task=Denoising(0.1), method=Backprop(), epochs=3, batch_size=10, time_budget=3.0, progress=False,
                  checkpoint=tmp_path / "c.pt")
    h = train(_pnn(), patches[0], **kwargs).history
    assert h.epoch == [0, 1] and h.seconds == [0.0, 3.0]
    h = train(_pnn(), patches[0], **kwargs, resume=True).history
    assert h.epoch == [0, 1] and h.seconds == [0.0, 3.0]


def test_held_out_observations_come_from_the_seed(patches):
    r"""The held-out noise is drawn at once from a generator seeded with ``seed``, whatever the
    batch size: for the identity model on 11x11 images (the smallest SSIM size),
    loss :math:`= \tfrac12\|0.1\,n\|^2` with :math:`n` from ``manual_seed(3)``, and PSNR/SSIM
    of the noisy images; another seed gives another loss."""
    clean = patches[1][:6, :, :11, :11]
    noisy = clean + 0.1 * torch.randn(clean.shape, dtype=DT, generator=_held_out_gen(3))
    for batch_size in (4, 6):
        m = evaluate(torch.nn.Identity(), clean, task=Denoising(0.1), batch_size=batch_size, seed=3)
        assert m.loss == pytest.approx(float(0.5 * ((noisy - clean) ** 2).flatten(1).sum(1).mean()), rel=1e-12)
        assert m.psnr == pytest.approx(float(psnr(noisy, clean).mean()), rel=1e-12)
        assert m.ssim == pytest.approx(float(ssim(noisy, clean).mean()), rel=1e-12)
    assert HeldOut(clean, Denoising(0.1), 6, seed=4).evaluate(torch.nn.Identity()).loss != pytest.approx(m.loss)


def test_held_out_noise_is_drawn_on_the_cpu_whatever_the_images_device(patches):
    """The held-out noise comes from a CPU generator seeded with ``seed`` and is then moved to the
    images' device (tasks' own rule), so a model is scored on the same observations on every
    device: images on the 'meta' device (standing for a GPU on this machine) get the CPU
    generator, whose noise is that of ``manual_seed(3)`` (it was a generator on the images'
    device, which also fails on 'meta')."""
    clean = patches[1][:3, :, :8, :8]

    @dataclass(frozen=True)
    class Spy(Denoising):
        drawn: list

        def observe(self, x, generator):
            self.drawn.append((generator.device, generator.initial_seed()))
            return super().observe(x, generator)

    task = Spy(0.1, [])
    heldout = HeldOut(clean.to("meta"), task, 2, seed=3)
    assert task.drawn == [(torch.device("cpu"), _held_out_gen(3).initial_seed())] and heldout.chunks[0][0].device.type == "meta"
    cpu = HeldOut(clean, Denoising(0.1), 3, seed=3).chunks[0][0]
    torch.testing.assert_close(cpu, clean + 0.1 * torch.randn(clean.shape, dtype=DT, generator=_held_out_gen(3)), atol=0, rtol=0)


def test_training_noise_does_not_repeat_the_validation_noise():
    """train's default generator and the validation set were both seeded with 0, so the first
    epoch's batch noise continued the very stream of the validation noise after the shuffle's
    draws: in float32, with 64 validation images of 8x8 and 256 training images, most validation
    noise values came back in training (shifted by 255 entries). Oracle: the noise each batch of
    one epoch received (a spy task, images of zeros and unit noise, so the observation is the
    noise) against the validation noise: before the held-out seed was derived, 3360 of the 16384
    batch values were validation values; now only chance coincidences of float32 values remain
    (2 in this run)."""
    drawn = []

    @dataclass(frozen=True)
    class Spy(Denoising):
        def observe(self, x, generator):
            batch = super().observe(x, generator)
            drawn.append(batch.observation.flatten())
            return batch

    zeros = torch.zeros(256, 1, 8, 8)
    val = HeldOut(zeros[:64], Denoising(1.0), 64, seed=0).chunks[0][0].flatten()
    train(torch.nn.Conv2d(1, 1, 3, padding=1), zeros, task=Spy(1.0), method=Backprop(lr=1e-3), epochs=1,
          batch_size=64, progress=False)
    assert len(drawn) == 1 + 4  # the shape check's batch (its own generator), then the epoch's four
    shared = int(torch.isin(torch.cat(drawn[1:]), val).sum())  # 3360 of 16384 before
    assert shared < 0.01 * val.numel()  # float32 values of independent streams coincide by chance, a few times


def test_held_out_refuses_a_bad_batch_size_or_no_image(patches):
    """batch_size 0, -1, 2.5 or True failed inside Tensor.split with torch's messages (no
    argument named) and an empty image set in a ZeroDivisionError; now ValueErrors naming them.
    A NumPy integer batch size is a batch size: the means equal the hand loop's over all 5 images
    (chunks 2, 2, 1)."""
    clean = patches[1][:5, :, :11, :11]
    noisy = clean + 0.1 * torch.randn(clean.shape, dtype=DT, generator=_held_out_gen(0))
    m = evaluate(torch.nn.Identity(), clean, task=Denoising(0.1), batch_size=np.int64(2))
    assert m.psnr == pytest.approx(float(psnr(noisy, clean).mean()), rel=1e-12)
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
            evaluate(torch.nn.Identity(), clean, task=Denoising(0.1), batch_size=bad)
    with pytest.raises(ValueError, match=r"images must hold at least one image .*\(0, 1, 11, 11\)"):
        evaluate(torch.nn.Identity(), clean[:0], task=Denoising(0.1))


def test_held_out_takes_a_numpy_integer_seed_and_refuses_a_bool_or_float_by_name(patches):
    """seed=np.int64(3) failed in torch's manual_seed with 'an integer is required' (naming no
    argument), though the package takes NumPy integers as integers, and seed=True was taken as
    seed 1 without a word; the oracle is the noise of manual_seed(3) on the CPU generator."""
    clean = patches[1][:3, :, :11, :11]
    noisy = clean + 0.1 * torch.randn(clean.shape, dtype=DT, generator=_held_out_gen(3))
    m = evaluate(torch.nn.Identity(), clean, task=Denoising(0.1), seed=np.int64(3))
    assert m.loss == pytest.approx(float(0.5 * ((noisy - clean) ** 2).flatten(1).sum(1).mean()), rel=1e-12)
    for bad in (True, 1.0, "3", None):
        with pytest.raises(ValueError, match=f"^seed must be an integer, got {re.escape(repr(bad))}$"):
            HeldOut(clean, Denoising(0.1), 2, seed=bad)


# ----------------------------------------------------------------------------- resume
@pytest.mark.parametrize(
    "method",
    [
        Lifted(solver=BCD(param_rule=Nesterov())),
        Lifted(solver=BCD(param_rule=Adam(1e-2), interleave=True), lipschitz_every=3),
        Lifted(penalty=MAC, solver=ISGM(eta=5.0, inner=BCD(param_rule=Adam(1e-2)), inner_steps=2), lipschitz_every=2),
        Backprop(lr=1e-2),
    ],
    ids=["bregman-bcd-nesterov", "bregman-bcd-interleaved", "mac-isgm-adam", "backprop-adam"],
)
def test_resume_is_bit_identical(patches, tmp_path, method):
    train_set, val_set = patches
    kwargs = dict(task=Denoising(0.1), method=method, batch_size=10, val_set=val_set, progress=False)
    full = train(_pnn(), train_set, epochs=2, checkpoint=tmp_path / "full.pt", generator=_gen(), **kwargs)
    train(_pnn(), train_set, epochs=1, checkpoint=tmp_path / "part.pt", generator=_gen(), **kwargs)
    other = _pnn(seed=9)  # parameters, solver state and generator state all come from the checkpoint
    resumed = train(other, train_set, epochs=2, checkpoint=tmp_path / "part.pt", resume=True, generator=_gen(), **kwargs)
    for (name, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name
    for field in ("epoch", "energy", "gaps", "train_loss", "val_loss", "val_psnr", "val_ssim"):
        assert _same(getattr(full.history, field), getattr(resumed.history, field)), field
    assert load_checkpoint(tmp_path / "part.pt")["epoch"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["full.pt", "part.pt"]


def test_resume_refuses_a_generator_of_another_seed_and_takes_none_or_the_same_seed(patches, tmp_path):
    """train(..., resume=True, generator=G) replaced G's state by the checkpoint's without a word,
    so a seed other than the run's had no effect (liftinv train --seed 3 --resume ran seed 0's
    run). Now a generator of another initial_seed() is refused naming both seeds (SeedMismatchError,
    a ValueError), the model, the generator and the file as they were; generator=None or one of
    the run's seed (in any state) resumes to the uninterrupted run, bit for bit. Oracle: the
    uninterrupted run's parameters and losses, the generator's state before the call."""
    from liftinv.training import SeedMismatchError

    train_set = patches[0][:20]
    kwargs = dict(task=Denoising(0.1), method=Backprop(lr=1e-2), batch_size=10, progress=False)
    path = tmp_path / "c.pt"
    full = train(_pnn(), train_set, epochs=2, generator=_gen(3), **kwargs)
    train(_pnn(), train_set, epochs=1, checkpoint=path, generator=_gen(3), **kwargs)
    data, net, gen = path.read_bytes(), _pnn(seed=9), _gen(4)
    before, state = copy.deepcopy(net.state_dict()), gen.get_state()
    with pytest.raises(SeedMismatchError, match=re.escape(f"generator is seeded with 4, but checkpoint {path} continues "
                                                           "a run whose generator was seeded with 3")):
        train(net, train_set, epochs=2, checkpoint=path, resume=True, generator=gen, **kwargs)
    assert path.read_bytes() == data and torch.equal(gen.get_state(), state)
    assert all(torch.equal(a, b) for a, b in zip(before.values(), net.state_dict().values()))
    advanced = _gen(3)
    torch.rand(5, generator=advanced)
    for generator in (None, advanced):
        path.write_bytes(data)
        resumed = train(_pnn(seed=9), train_set, epochs=2, checkpoint=path, resume=True, generator=generator, **kwargs)
        assert all(torch.equal(a, b) for a, b in zip(full.model.parameters(), resumed.model.parameters()))
        assert _same(full.history.train_loss, resumed.history.train_loss)


def test_resume_from_a_checkpoint_with_the_old_normal_step_entries(patches, tmp_path):
    """Training checkpoints of the PNN written while NormalStep held its dead ``step`` submodule
    have a second entry ``...maps.0.step.conv.weight`` per dual step (equal to
    ``...adjoint.conv.weight``): such a checkpoint resumes, to the uninterrupted run bit for bit."""
    from liftinv.checkpoint import save_checkpoint

    train_set = patches[0][:20]
    kwargs = dict(task=Denoising(0.1), method=Backprop(lr=1e-2), batch_size=10, progress=False)
    full = train(_pnn(), train_set, epochs=2, generator=_gen(), **kwargs).model
    path = tmp_path / "part.pt"
    train(_pnn(), train_set, epochs=1, checkpoint=path, generator=_gen(), **kwargs)
    ckpt = load_checkpoint(path)
    model = {}
    for key, value in ckpt["model"].items():
        model[key] = value
        if key.endswith(".maps.0.adjoint.conv.weight"):
            model[key.replace(".adjoint.", ".step.")] = value.clone()
    assert len(model) == len(ckpt["model"]) + 2
    save_checkpoint(path, {**ckpt, "model": model})
    resumed = train(_pnn(seed=9), train_set, epochs=2, checkpoint=path, resume=True, generator=_gen(), **kwargs).model
    for (name, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


def test_train_never_replaces_a_checkpoint_without_resume_or_overwrite(patches, tmp_path):
    """train(..., checkpoint=PATH) with resume=False replaced an existing checkpoint after the
    first epoch (liftinv train refused it; the API did not). Now refused before any work, naming
    the argument and the path, the file byte for byte; overwrite=True writes a new run's epoch 1,
    equal to a run on a fresh path (oracle); resume and overwrite together are refused."""
    kwargs = dict(task=Denoising(0.1), method=Backprop(lr=1e-2), epochs=1, batch_size=10, progress=False)
    path = tmp_path / "c.pt"
    path.write_bytes(b"a long run's checkpoint")
    net = _pnn()
    before = copy.deepcopy(net.state_dict())
    with pytest.raises(CheckpointExistsError, match=re.escape(f"checkpoint {path} exists: pass resume=True")) as err:
        train(net, patches[0][:20], checkpoint=path, **kwargs)
    assert isinstance(err.value, ValueError) and err.value.path == path
    assert path.read_bytes() == b"a long run's checkpoint"
    assert all(torch.equal(a, b) for a, b in zip(before.values(), net.state_dict().values()))
    with pytest.raises(ValueError, match="resume=True continues from the checkpoint and overwrite=True replaces it"):
        train(_pnn(), patches[0][:20], checkpoint=path, resume=True, overwrite=True, **kwargs)
    with pytest.raises(TypeError, match="overwrite must be a bool"):
        train(_pnn(), patches[0][:20], checkpoint=path, overwrite=1, **kwargs)
    train(_pnn(), patches[0][:20], checkpoint=path, overwrite=True, **kwargs)
    train(_pnn(), patches[0][:20], checkpoint=tmp_path / "fresh.pt", **kwargs)
    ours, fresh = load_checkpoint(path), load_checkpoint(tmp_path / "fresh.pt")
    assert ours["epoch"] == 1 and all(torch.equal(a, b) for a, b in zip(ours["model"].values(), fresh["model"].values()))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_resume_on_cuda_restores_the_generator(patches, tmp_path):
    """The checkpoint is loaded onto the model's device, its generator state with it; the
    generator (a CPU one) gets it back on the CPU and draws as in an uninterrupted run."""
    kwargs = dict(task=Denoising(0.1), method=Lifted(solver=BCD(param_rule=Adam(1e-2))), batch_size=10, progress=False)
    images = patches[0][:20].cuda()
    full, part = _gen(), _gen()
    train(_pnn().cuda(), images, epochs=2, generator=full, **kwargs)
    train(_pnn().cuda(), images, epochs=1, checkpoint=tmp_path / "part.pt", generator=part, **kwargs)
    resumed = _gen()  # seeded as the run, in its initial state
    train(_pnn().cuda(), images, epochs=2, checkpoint=tmp_path / "part.pt", resume=True, generator=resumed, **kwargs)
    assert torch.equal(resumed.get_state(), full.get_state())


@pytest.mark.parametrize("method", [Lifted(solver=BCD(param_rule=Adam(1e-2))), Backprop(lr=1e-2)], ids=["lifted", "backprop"])
@pytest.mark.parametrize("saved, now", [(torch.float64, torch.float32), (torch.float32, torch.float64)], ids=["64to32", "32to64"])
def test_resume_refuses_a_checkpoint_of_another_dtype(patches, tmp_path, method, saved, now):
    """A float32 run resumed a float64 checkpoint (and the reverse, liftinv train --resume
    --float64 on a float32 checkpoint) silently, the state cast by load_state_dict: the result is
    not the uninterrupted run's, which resume promises (bit-identical on CPU). Refused before
    loading, naming both dtypes; the model (its entries and dtypes) and the checkpoint's bytes
    are untouched."""
    kwargs = dict(task=Denoising(0.1), method=method, batch_size=10, progress=False)
    path = tmp_path / "c.pt"
    train(_pnn().to(saved), patches[0][:20], epochs=1, checkpoint=path, **kwargs)
    data = path.read_bytes()
    net = _pnn(seed=3).to(now)
    before = copy.deepcopy(net.state_dict())
    with pytest.raises(ValueError, match=re.escape(f"checkpoint {path} was written in {saved} (model entry ") + r".*"
                       + re.escape(f"this run uses {now}")):
        train(net, patches[0][:20], epochs=2, checkpoint=path, resume=True, **kwargs)
    assert path.read_bytes() == data
    assert all(torch.equal(a, b) and a.dtype == b.dtype for a, b in zip(before.values(), net.state_dict().values()))
    assert next(net.parameters()).dtype == now


def test_a_refused_resume_leaves_the_model_and_the_generator_as_they_were(patches, tmp_path):
    """A resume refused for too few epochs, or for a runner state that does not fit, raised after
    load_state_dict had copied the checkpoint's weights into the model: the caller's model held
    another run's parameters after the error. Now the epochs are checked before loading and the
    model is restored when a later load fails. Oracle: a deep copy of the model's state and the
    generator's state taken before the call, equal entry for entry after it."""
    kwargs = dict(task=Denoising(0.1), method=Backprop(lr=1e-2), batch_size=10, progress=False)
    path = tmp_path / "c.pt"
    train(_pnn(), patches[0][:20], epochs=2, checkpoint=path, **kwargs)
    bad = load_checkpoint(path)
    bad["runner"] = {}
    torch.save(bad, tmp_path / "bad.pt")
    for checkpoint, epochs, message in ((path, 1, "epochs must be at least the 2 epochs"),
                                        (tmp_path / "bad.pt", 3, "does not fit this run: KeyError")):
        net, gen = _pnn(seed=5), _gen()
        torch.rand(1, generator=gen)  # the run's seed, in a state of its own
        before, state = copy.deepcopy(net.state_dict()), gen.get_state()
        with pytest.raises(ValueError, match=message):
            train(net, patches[0][:20], epochs=epochs, checkpoint=checkpoint, resume=True, generator=gen, **kwargs)
        assert all(torch.equal(a, b) for a, b in zip(before.values(), net.state_dict().values()))
        assert torch.equal(gen.get_state(), state)


def test_a_numpy_noise_level_is_stored_as_a_float_and_its_checkpoint_resumes(patches, tmp_path):
    """Denoising(np.float64(0.1)) kept the NumPy scalar, which went into the checkpoint's config,
    and torch.load(weights_only=True) refuses NumPy scalars: the resume failed with 'cannot read
    checkpoint file'. Oracle: a run resumed after one epoch equals two uninterrupted epochs with
    the Python float 0.1."""
    physics = Blur(gaussian_kernel(1.0, dtype=DT), img_size=(1, 15, 15), boundary="zero", dtype=DT)
    for task in (Denoising(np.float64(0.1)), Reconstruction(physics, noise_sigma=np.float32(0.1)), Autoencoder(np.int64(1))):
        assert type(task.noise_sigma) is float
    kwargs = dict(method=Backprop(lr=1e-2), batch_size=10, progress=False)
    nets = [_pnn(), _pnn()]
    train(nets[0], patches[0][:20], task=Denoising(0.1), epochs=2, **kwargs)
    for epochs in (1, 2):
        train(nets[1], patches[0][:20], task=Denoising(np.float64(0.1)), epochs=epochs, resume=epochs == 2,
              checkpoint=tmp_path / "c.pt", **kwargs)
    assert all(torch.equal(p, q) for p, q in zip(*(n.parameters() for n in nets)))


def test_a_numpy_batch_size_and_learning_rate_resume(patches, tmp_path):
    """batch_size=np.int64(10) (in the checkpoint's config) and Backprop(lr=np.float64(0.01)) (in
    the optimizer's state) made the checkpoint unreadable under weights_only; oracle: the resumed
    run equals two uninterrupted epochs with Python numbers."""
    nets = [_pnn(), _pnn()]
    train(nets[0], patches[0][:20], task=Denoising(0.1), method=Backprop(lr=1e-2), epochs=2, batch_size=10, progress=False)
    for epochs in (1, 2):
        train(nets[1], patches[0][:20], task=Denoising(0.1), method=Backprop(lr=np.float64(1e-2)), epochs=epochs,
              batch_size=np.int64(10), resume=epochs == 2, checkpoint=tmp_path / "c.pt", progress=False)
    assert all(torch.equal(p, q) for p, q in zip(*(n.parameters() for n in nets)))


def test_resume_refuses_another_noise_level(patches, tmp_path):
    train_set, _ = patches
    kwargs = dict(method=Backprop(lr=1e-2), batch_size=10, checkpoint=tmp_path / "c.pt", progress=False)
    train(_pnn(), train_set, task=Denoising(0.1), epochs=1, **kwargs)
    with pytest.raises(ValueError, match=r"another run than this one: noise_sigma 0.1 \(checkpoint\) vs 0.2 \(this run\)$"):
        train(_pnn(), train_set, task=Denoising(0.2), epochs=2, resume=True, **kwargs)


def test_resume_refuses_another_training_set_size(patches, tmp_path):
    """The epoch's permutation depends on N: a checkpoint of a run on 30 images does not resume
    a run on 20."""
    train_set, _ = patches
    kwargs = dict(task=Denoising(0.1), method=Backprop(lr=1e-2), batch_size=10, checkpoint=tmp_path / "c.pt", progress=False)
    train(_pnn(), train_set, epochs=1, **kwargs)
    with pytest.raises(ValueError, match=r"another run than this one: n_train 30 \(checkpoint\) vs 20 \(this run\)$"):
        train(_pnn(), train_set[:20], epochs=2, resume=True, **kwargs)


def test_resume_refuses_another_image_shape(tmp_path):
    """A checkpoint of an unrolled CT network trained on 8x8 images resumed a run on 10x10 ones
    (``liftinv train --task ct --quick``, then ``--resume`` without ``--quick``: same method,
    noise, batch size and training-set size): the gradient steps' stored tau, a buffer of the
    state dict, became the 8x8 operator's 1/|A|^2 while the network's physics is the 10x10
    operator, for which it is another step (oracle: the new network's own tau)."""
    from operators.radon import Radon

    def run(n: int, epochs: int, resume: bool) -> UnrolledPrimalDual:
        physics = Radon(n, 6, dtype=DT)
        images = torch.rand(4, 1, n, n, dtype=DT, generator=_gen())
        net = UnrolledPrimalDual(physics, 2, 2, (1, n, n), generator=_gen()).to(DT)
        train(net, images, task=Reconstruction(physics, 0.01), method=Backprop(lr=1e-3), epochs=epochs, batch_size=2,
              checkpoint=tmp_path / "c.pt", resume=resume, progress=False)
        return net

    run(8, 1, False)
    with pytest.raises(ValueError, match=r"image_shape \[1, 8, 8\] \(checkpoint\) vs \[1, 10, 10\] \(this run\)$"):
        run(10, 2, True)
    net = run(8, 2, True)  # the same shape resumes, its steps its own operator's
    assert all(float(m.tau) == net.tau for m in net.modules() if type(m).__name__ == "GradientStep")


def test_resume_refuses_another_physics(tmp_path):
    """A CT checkpoint resumed a run with other angles at the same image size without a word (same
    config): the network went on learning for another operator. Oracle: the two operators' specs
    (check_spec names the angles); the same physics resumes, and a task without physics keeps
    resuming."""
    from operators.blur import Blur
    from operators.radon import Radon

    def run(physics, epochs: int, resume: bool) -> None:
        images = torch.rand(4, 1, 8, 8, dtype=DT, generator=_gen())
        net = UnrolledPrimalDual(physics, 2, 2, (1, 8, 8), generator=_gen()).to(DT)
        train(net, images, task=Reconstruction(physics, 0.01), method=Backprop(lr=1e-3), epochs=epochs, batch_size=2,
              checkpoint=tmp_path / "c.pt", resume=resume, progress=False)

    run(Radon(8, 6, dtype=DT), 1, False)
    with pytest.raises(ValueError, match=r"written for Radon\(angles=6\) but got Radon\(angles=5\)"):
        run(Radon(8, 5, dtype=DT), 2, True)
    with pytest.raises(ValueError, match=r"written for Radon\(.*but got Blur\("):
        run(Blur(torch.ones(3, 3, dtype=DT) / 9, dtype=DT), 2, True)
    run(Radon(8, 6, dtype=DT), 2, True)


def test_resume_refuses_a_checkpoint_with_missing_or_bad_entries(patches, tmp_path):
    """A checkpoint edited by hand or corrupted, with the right format and config: a missing
    entry was a KeyError (a traceback from ``liftinv train --resume``), an epoch of 1.5 or -1 was
    resumed (-1 trained three epochs up to 2), a history ending at another epoch than the
    checkpoint's (or at none: IndexError) was continued, a generator state that is not a tensor
    failed on ``.cpu()``; an optimizer state without its key (KeyError), a generator state of
    another size or a model state without a parameter (RuntimeError) escaped the command line's
    handling. Each is a ValueError (``liftinv train`` exit status 2) naming the checkpoint and the
    entry; the unedited checkpoint resumes."""
    kwargs = dict(task=Denoising(0.1), method=Backprop(lr=1e-2), batch_size=10, progress=False)
    train(_pnn(), patches[0][:20], epochs=1, checkpoint=tmp_path / "c.pt", **kwargs)
    good = load_checkpoint(tmp_path / "c.pt")
    cases = [
        (lambda c: c.pop("history"), r"lacks the entries \['history'\]"),
        (lambda c: (c.pop("model"), c.pop("runner")), r"lacks the entries \['model', 'runner'\]"),
        (lambda c: c.update(epoch=1.5), "holds the epoch 1.5, not an integer >= 1"),
        (lambda c: c.update(epoch=-1), "holds the epoch -1, not an integer >= 1"),
        (lambda c: c["history"].update(epoch=[0.0, 3.0]), "holds epoch 1 but its history ends at 3.0"),
        (lambda c: c.update(history={k: [] for k in c["history"]}), "holds epoch 1 but its history ends at no record"),
        (lambda c: c["history"].update(gaps=[1.0, 2.0]), r"holds a bad history: history field gaps\[0\] must be a list"),
        (lambda c: c.update(generator=[1, 2]), r"holds no generator state \(a uint8 vector\), got \[1, 2\]"),
    ]
    cases += [  # entries that the model, the optimizer or the generator refuse (torch's messages)
        (lambda c: c.update(runner={}), "does not fit this run: KeyError: 'optimizer'"),
        (lambda c: c.update(generator=torch.zeros(3, dtype=torch.uint8)), "does not fit this run: RuntimeError: .*size"),
        (lambda c: c["model"].pop("layers.0.maps.0.conv.weight"), r"does not fit this run: RuntimeError: Error\(s\) in loading state_dict for .*:\s+Missing key"),
    ]
    for edit, match in cases:
        bad = copy.deepcopy(good)
        edit(bad)
        torch.save(bad, tmp_path / "bad.pt")
        with pytest.raises(ValueError, match=r"^checkpoint .*bad\.pt " + match):
            train(_pnn(), patches[0][:20], epochs=2, checkpoint=tmp_path / "bad.pt", resume=True, **kwargs)
    assert train(_pnn(), patches[0][:20], epochs=2, checkpoint=tmp_path / "c.pt", resume=True, **kwargs).history.epoch == [0, 1, 2]


def test_resume_refuses_other_method(patches, tmp_path):
    train_set, _ = patches
    kwargs = dict(task=Denoising(0.1), epochs=2, batch_size=10, checkpoint=tmp_path / "c.pt", progress=False)
    train(_pnn(), train_set, method=Backprop(lr=1e-2), **{**kwargs, "epochs": 1})
    with pytest.raises(ValueError, match="checkpoint"):
        train(_pnn(), train_set, method=Lifted(), resume=True, **kwargs)
    with pytest.raises(FileNotFoundError):
        train(_pnn(), train_set, method=Lifted(), resume=True, **{**kwargs, "checkpoint": tmp_path / "none.pt"})


def test_resume_takes_another_momentum_for_adam_only(patches, tmp_path):
    """Adam does not use ``Backprop.momentum``: a checkpoint of Adam with one momentum resumes
    with another to the uninterrupted run, bit for bit (it was refused as another method); SGD's
    momentum still must match."""
    train_set = patches[0][:20]
    kwargs = dict(task=Denoising(0.1), batch_size=10, progress=False)
    full = train(_pnn(), train_set, method=Backprop("adam", 1e-2, momentum=0.3), epochs=2, generator=_gen(), **kwargs)
    train(_pnn(), train_set, method=Backprop("adam", 1e-2, momentum=0.5), epochs=1, checkpoint=tmp_path / "a.pt",
          generator=_gen(), **kwargs)
    resumed = train(_pnn(seed=9), train_set, method=Backprop("adam", 1e-2), epochs=2, checkpoint=tmp_path / "a.pt",
                    resume=True, generator=_gen(), **kwargs)
    for (name, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name
    assert _same(full.history.train_loss, resumed.history.train_loss)
    train(_pnn(), train_set, method=Backprop("sgd", 1e-2, momentum=0.5), epochs=1, checkpoint=tmp_path / "s.pt", **kwargs)
    with pytest.raises(ValueError, match="momentum=0.5.*momentum=0.9"):
        train(_pnn(), train_set, method=Backprop("sgd", 1e-2), epochs=2, checkpoint=tmp_path / "s.pt", resume=True, **kwargs)


def test_resume_refuses_fewer_epochs_than_the_checkpoint_holds(patches, tmp_path):
    """A checkpoint of 2 epochs resumed with ``epochs=1`` would return its 2-epoch model as the
    1-epoch run asked for; ``epochs=2`` returns it unchanged."""
    train_set, _ = patches
    kwargs = dict(task=Denoising(0.1), method=Backprop(lr=1e-2), batch_size=10, checkpoint=tmp_path / "c.pt", progress=False)
    model = _pnn()
    train(model, train_set, epochs=2, **kwargs)
    with pytest.raises(ValueError, match=r"^epochs must be at least the 2 epochs that checkpoint .*c\.pt holds, got 1$"):
        train(_pnn(), train_set, epochs=1, resume=True, **kwargs)
    again = train(_pnn(), train_set, epochs=2, resume=True, **kwargs)
    assert again.history.epoch[-1] == 2
    assert all(torch.equal(p, q) for p, q in zip(again.model.parameters(), model.parameters()))


def test_train_under_inference_mode_is_refused(patches):
    train_set, _ = patches
    for method in (Lifted(), Backprop(lr=1e-2)):
        with torch.inference_mode(), pytest.raises(RuntimeError, match="^train cannot run under torch.inference_mode"):
            train(_pnn(), train_set, task=Denoising(0.1), method=method, epochs=1, batch_size=10, progress=False)


def test_time_budget_stops_inside_an_epoch_without_checkpoint(patches, tmp_path):
    train_set, _ = patches
    h = train(_pnn(), train_set, task=Denoising(0.1), method=Lifted(), epochs=5, batch_size=10, time_budget=1e-9,
              checkpoint=tmp_path / "c.pt", progress=False).history
    assert h.epoch == [0, pytest.approx(1 / 3)]
    assert not (tmp_path / "c.pt").exists()


# ----------------------------------------------------------------------------- non-finite
@dataclass(frozen=True)
class _PoisonedBCD(BCD):
    """BCD that overwrites hidden variable 1 with NaN before sweep ``at``."""

    at: int = 4

    def step(self, problem, state):
        if state.iteration + 1 == self.at:
            x = problem.get(Var(1))[0]
            problem.set(Var(1), [torch.full_like(x, math.nan)])
        return super().step(problem, state)


@dataclass(frozen=True)
class _PoisonedAfterBCD(BCD):
    """BCD that overwrites hidden variable 1 with NaN after sweep ``at``: the batch's own checks
    have run, only the epoch's summary of the last batch sees it."""

    at: int = 6

    def step(self, problem, state):
        state = super().step(problem, state)
        if state.iteration == self.at:
            x = problem.get(Var(1))[0]
            problem.set(Var(1), [torch.full_like(x, math.nan)])
        return state


def test_non_finite_penalty_at_the_end_of_an_epoch_names_it_and_the_kept_checkpoint(patches, tmp_path):
    """A non-finite penalty found by the epoch's summary raised without the epoch and what the
    checkpoint keeps, which the other non-finite errors say."""
    train_set, _ = patches
    path = tmp_path / "c.pt"
    with pytest.raises(FloatingPointError, match=r"penalty of layer 1 \(block Var\(1\)\) after the last batch of epoch 2; "
                                                 r"checkpoint .*c\.pt keeps epoch 1$"):
        train(_pnn(), train_set, task=Denoising(0.1), method=Lifted(solver=_PoisonedAfterBCD()), epochs=3, batch_size=10,
              checkpoint=path, progress=False)
    assert load_checkpoint(path)["epoch"] == 1


def test_non_finite_state_names_block_and_keeps_last_checkpoint(patches, tmp_path):
    train_set, _ = patches
    net = _pnn()
    path = tmp_path / "c.pt"
    with pytest.raises(FloatingPointError, match=r"Var\(\d\) at iteration 4.*epoch 2, batch 1.*keeps epoch 1"):
        train(net, train_set, task=Denoising(0.1), method=Lifted(solver=_PoisonedBCD()), epochs=3, batch_size=10,
              checkpoint=path, progress=False)
    ckpt = load_checkpoint(path)
    assert ckpt["epoch"] == 1 and all(bool(torch.isfinite(v).all()) for v in ckpt["model"].values())
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]


def test_non_finite_block_is_named_at_the_training_iteration_whatever_the_sweeps_per_batch(patches):
    """With two sweeps per batch the solver's 7th sweep is the 4th training iteration (epoch 2,
    batch 1 of 3): the message said 'at iteration 7 (epoch 2, batch 1)', the solver's count, where
    the runner's other messages count batches. Oracle: (epoch - 1) * batches per epoch + batch."""
    with pytest.raises(FloatingPointError, match=r"Var\(\d\) at iteration 4; the last finite state was kept \(epoch 2, batch 1\)$"):
        train(_pnn(), patches[0], task=Denoising(0.1), method=Lifted(solver=_PoisonedBCD(at=7), sweeps_per_batch=2),
              epochs=3, batch_size=10, progress=False)


def test_backprop_divergence_names_loss(patches, tmp_path):
    """A divergence in the first epoch says that no checkpoint was written (not that it keeps
    epoch 0), and none was."""
    train_set, _ = patches
    path = tmp_path / "c.pt"
    with pytest.raises(FloatingPointError, match="non-finite (loss|gradient).*iteration 2.*; no checkpoint was written to " + re.escape(str(path)) + "$"):
        train(_pnn(), train_set, task=Denoising(0.1), method=Backprop("sgd", lr=1e200, momentum=0.0), epochs=1,
              batch_size=10, progress=False, checkpoint=path)
    assert not path.exists()


def test_backprop_names_the_update_that_made_a_parameter_non_finite(patches):
    """A finite-gradient SGD step of lr 1e38 on float32 makes a parameter Inf at iteration 1;
    the next batch's loss is NaN, which was reported as 'non-finite loss at iteration 2',
    blaming the loss of a batch and not the update of the parameter. Oracle: the parameters
    after the run (the named one is the only non-finite one)."""
    net = _pnn().float()
    with pytest.raises(FloatingPointError, match=r"^non-finite parameter (\S+) after the update of iteration 1, found at "
                       r"iteration 2 \(epoch 1, batch 2\)$") as info:
        train(net, patches[0].float(), task=Denoising(100.0), method=Backprop("sgd", lr=1e38, momentum=0.0), epochs=1,
              batch_size=10, progress=False)
    name = re.match(r"non-finite parameter (\S+)", str(info.value)).group(1)
    assert [n for n, p in net.named_parameters() if not bool(torch.isfinite(p).all())] == [name]
    with pytest.raises(FloatingPointError, match=f"^non-finite parameter {re.escape(name)} before any update, found at iteration 1 "):
        train(net, patches[0].float(), task=Denoising(0.1), method=Backprop("sgd"), epochs=1, batch_size=10, progress=False)


def test_non_finite_parameters_are_never_checkpointed(patches, tmp_path):
    train_set = patches[0].float()  # one batch per epoch; large noise and lr 1e38 overflow float32 parameters
    with pytest.raises(FloatingPointError, match=r"non-finite parameter layers\.\d.* after epoch 1"):
        train(_pnn().float(), train_set, task=Denoising(100.0), method=Backprop("sgd", lr=1e38, momentum=0.0), epochs=2,
              batch_size=30, checkpoint=tmp_path / "c.pt", progress=False)
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- bad input
def test_targets_outside_the_output_range_are_refused_where_the_penalty_is_infinite(patches):
    """Targets in [-1, 1] under a sigmoid output: the output layer's Bregman penalty is infinite
    there, so lifted Bregman training refuses them by name; MAC's penalty is finite and trains."""
    from liftinv.convert import lift
    from liftinv.penalty import bregman

    from torch.nn import Conv2d, Sequential, Sigmoid, Tanh

    def model():
        return lift(Sequential(Conv2d(1, 2, 3, padding=1), Tanh(), Conv2d(2, 1, 3, padding=1), Sigmoid())).to(DT)

    data = 2 * patches[0][:10] - 1
    net = model()
    assert math.isinf(float(bregman(net.layer(2).activation, data, torch.zeros_like(data)).sum()))
    kwargs = dict(task=Denoising(0.1), epochs=1, batch_size=5, progress=False)
    with pytest.raises(ValueError, match=r"targets of iteration 1 lie outside the range of the output activation Sigmoid\(\)"):
        train(net, data, **kwargs)
    h = train(model(), data, method=Lifted(penalty=MAC), **kwargs).history
    assert all(math.isfinite(g) for g in h.gaps[-1])


def test_a_mac_penalty_other_than_the_module_constant_trains_as_mac():
    """Lifted took MACPenalty() or a copy of MAC (equal to MAC, a frozen dataclass), but the runner
    told MAC by identity: such a run refused targets outside the output activation's range as
    'its mac penalty is infinite (use ... the MAC penalty)', where MAC's penalty is finite. Oracle:
    the run with the MAC constant, bit for bit."""
    import pickle

    from liftinv.activations import ReLU
    from liftinv.penalty import MACPenalty

    def net() -> MLP:
        return MLP([16, 8, 16], [ReLU()], output_activation=ReLU(), generator=_gen(1)).to(DT)

    images = torch.rand(4, 1, 4, 4, dtype=DT, generator=_gen(0)) - 0.5  # negative targets: outside ReLU's range
    kwargs = dict(task=Autoencoder(0.0), epochs=1, batch_size=2, progress=False)
    expected = train(net(), images, method=Lifted(penalty=MAC), **kwargs)
    for penalty in (MACPenalty(), copy.deepcopy(MAC), pickle.loads(pickle.dumps(MAC))):
        result = train(net(), images, method=Lifted(penalty=penalty), **kwargs)
        assert all(torch.equal(a, b) for a, b in zip(expected.model.parameters(), result.model.parameters()))
        assert _same(expected.history.gaps, result.history.gaps)


@pytest.mark.parametrize("method", [Backprop(lr=1e-2), Lifted()], ids=["backprop", "lifted"])
def test_images_that_require_grad_are_data(patches, method):
    """Training images that require grad (a tensor from an autograd computation): backprop
    accumulated the loss gradient into the caller's tensor's ``.grad`` (nonzero after one epoch)
    and the lifted runner warned about a scalar of a tensor that requires grad. Oracle: the same
    run on the detached images gives the same parameters, and the tensor keeps ``grad is None``."""
    import warnings

    images = patches[0][:20]
    kwargs = dict(task=Denoising(0.1), method=method, epochs=1, batch_size=10, val_set=patches[1][:4], progress=False)
    plain = train(_pnn(), images, **kwargs).model
    leaf = images.clone().requires_grad_(True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        watched = train(_pnn(), leaf, **kwargs).model
    assert leaf.grad is None
    assert all(torch.equal(p, q) for p, q in zip(plain.parameters(), watched.parameters()))


def test_backprop_with_batch_norm_is_the_hand_written_adam_loop():
    """A model with batch norm in training mode, trained by backprop for one epoch of three
    batches: the shape check before training ran the model in training mode, so its running
    statistics took one extra batch (num_batches_tracked 4, running mean off). Oracle: the same
    permutation and noise drawn from the default generator, torch.optim.Adam on the mean
    per-sample loss, by hand; the state dicts agree bit for bit, and the modes are kept."""
    def model() -> torch.nn.Module:
        torch.manual_seed(3)
        return torch.nn.Sequential(torch.nn.Conv2d(1, 3, 3, padding=1), torch.nn.BatchNorm2d(3), torch.nn.ReLU(),
                                   torch.nn.Conv2d(3, 1, 3, padding=1)).to(DT)

    images, task = torch.rand(6, 1, 8, 8, dtype=DT, generator=_gen(2)), Denoising(0.1)
    trained = train(model(), images, task=task, method=Backprop(lr=1e-2), epochs=1, batch_size=2, progress=False).model
    by_hand, generator = model(), _gen(0)
    optimizer = torch.optim.Adam(by_hand.parameters(), lr=1e-2)
    order = torch.randperm(6, generator=generator)
    for b in range(3):
        batch = task.observe(images[order[2 * b : 2 * b + 2]], generator)
        optimizer.zero_grad()
        sample_loss(by_hand(batch.observation), batch.target).mean().backward()
        optimizer.step()
    assert int(trained[1].num_batches_tracked) == 3 and trained.training and trained[1].training
    for (name, a), b in zip(by_hand.state_dict().items(), trained.state_dict().values()):
        assert torch.equal(a, b), name


def test_dropout_masks_come_from_the_seed_and_resume_bit_identically(tmp_path):
    """A model with dropout in training mode, trained by backprop, drew its masks from torch's
    global RNG: two runs with the same generator gave other parameters when the global RNG was
    elsewhere, a resumed run was not the uninterrupted one (against the module docstring's 'every
    random draw comes from generator'), and training moved the caller's global RNG. Now each
    step's global RNG is seeded from the generator's seed and the iteration and restored after it.
    Oracles: the uninterrupted run, bit for bit, whatever torch.manual_seed before each call;
    torch's global RNG state, unchanged by train; the same model with Dropout(0), different (the
    masks are drawn); another seed, different."""
    def model(p: float = 0.5) -> torch.nn.Module:
        return torch.nn.Sequential(torch.nn.Conv2d(1, 3, 3, padding=1, bias=False), torch.nn.Dropout(p),
                                   torch.nn.Conv2d(3, 1, 3, padding=1, bias=False)).to(DT)

    torch.manual_seed(3)
    init = model().state_dict()
    images = torch.rand(4, 1, 8, 8, dtype=DT, generator=_gen(2))
    kwargs = dict(task=Denoising(0.1), method=Backprop(lr=1e-2), batch_size=2, progress=False)

    def run(epochs: int, global_seed: int, p: float = 0.5, seed: int = 0, **extra) -> list[torch.Tensor]:
        net = model(p)
        net.load_state_dict(init)
        torch.manual_seed(global_seed)
        state = torch.get_rng_state()
        train(net, images, epochs=epochs, generator=_gen(seed), **kwargs, **extra)
        assert torch.equal(torch.get_rng_state(), state)
        return list(net.parameters())

    full = run(2, global_seed=1)
    run(1, global_seed=2, checkpoint=tmp_path / "c.pt")
    resumed = run(2, global_seed=4, checkpoint=tmp_path / "c.pt", resume=True)
    assert all(torch.equal(a, b) for a, b in zip(full, resumed))
    assert all(torch.equal(a, b) for a, b in zip(full, run(2, global_seed=5)))
    assert not torch.equal(full[0], run(2, global_seed=1, p=0.0)[0])
    assert not torch.equal(full[0], run(2, global_seed=1, seed=1)[0])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_dropout_masks_on_cuda_come_from_the_seed():
    """On CUDA a dropout draws from the device's global RNG: two runs of one seed give the same
    parameters whatever torch.manual_seed before them, and the device's RNG state is kept."""
    torch.manual_seed(3)
    init = torch.nn.Sequential(torch.nn.Conv2d(1, 3, 3, padding=1), torch.nn.Dropout(0.5),
                               torch.nn.Conv2d(3, 1, 3, padding=1)).to(DT).cuda()
    images = torch.rand(4, 1, 8, 8, dtype=DT, generator=_gen(2)).cuda()
    results = []
    for global_seed in (1, 2):
        net = copy.deepcopy(init)
        torch.manual_seed(global_seed)
        state = torch.cuda.get_rng_state()
        train(net, images, task=Denoising(0.1), method=Backprop(lr=1e-2), epochs=1, batch_size=2, progress=False)
        assert torch.equal(torch.cuda.get_rng_state(), state)
        results.append(list(net.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(*results))


def test_bad_data(patches):
    train_set, val_set = patches
    kwargs = dict(task=Denoising(0.1), epochs=1, batch_size=5, progress=False)
    bad = train_set.clone()
    bad[3, 0, 2, 2] = math.nan
    with pytest.raises(ValueError, match="train_set contains NaN or Inf"):
        train(_pnn(), bad, **kwargs)
    bad_val = val_set.clone()
    bad_val[0, 0, 0, 0] = math.inf
    with pytest.raises(ValueError, match="val_set contains NaN or Inf"):
        train(_pnn(), train_set, val_set=bad_val, **kwargs)
    with pytest.raises(ValueError, match="val_set images have shape"):
        train(_pnn(), train_set, val_set=val_set[:, :, :13, :13], **kwargs)
    with pytest.raises(ValueError, match="train_set must hold images"):
        train(_pnn(), train_set[:, 0], **kwargs)
    with pytest.raises(ValueError, match=r"val_set must hold images \(N, C, H, W\) with N >= 1, got shape \(0, 1, 15, 15\)"):
        train(_pnn(), train_set, val_set=val_set[:0], **kwargs)
    with pytest.raises(ValueError, match="do not fit the model"):
        train(MLP([100, 8, 100], ReLU()).to(DT), train_set, **{**kwargs, "task": Autoencoder()})
    with pytest.raises(ValueError, match="target has shape"):
        train(MLP([225, 8, 100], ReLU()).to(DT), train_set, **{**kwargs, "task": Autoencoder()})
    with pytest.raises(ValueError, match="batch_size must be at most"):
        train(_pnn(), train_set, **{**kwargs, "batch_size": 31})
    with pytest.raises(TypeError, match="lifted training needs a LiftedNetwork"):
        train(torch.nn.Conv2d(1, 1, 3, padding=1).to(DT), train_set, **kwargs)


def test_images_that_overflow_the_model_dtype_are_refused(patches):
    """float64 images finite in float64 but beyond float32's range were cast to Inf for a float32
    model and trained on silently; they are refused by name."""
    train_set, _ = patches
    big = train_set[:6].to(torch.float64, copy=True)  # the fixture is float64: a view otherwise
    big[2, 0, 1, 1] = 1e300
    assert bool(torch.isfinite(big).all()) and not bool(torch.isfinite(big.float()).all())  # the oracle
    net = ProximalNeuralNetwork(1, 4, 3, kernel_size=3, threshold=0.05, generator=_gen(1)).float()
    with pytest.raises(ValueError, match=r"^train_set has entries beyond the range of the model's torch.float32"):
        train(net, big, task=Denoising(0.1), method=Backprop(lr=1e-2), epochs=1, batch_size=2, progress=False)


@pytest.mark.parametrize(
    "make, error, match",
    [
        (lambda: Lifted(sweeps_per_batch=0), ValueError, "sweeps_per_batch"),
        (lambda: Lifted(power_iters=1.5), ValueError, "power_iters"),
        (lambda: Lifted(lipschitz_every=-1), ValueError, "lipschitz_every"),
        (lambda: Lifted(cache_preactivations="no"), TypeError, "cache_preactivations"),
        (lambda: Lifted(solver="bcd"), TypeError, "solver"),
        (lambda: Lifted(penalty="bregman"), ValueError, "penalty"),
        (lambda: Backprop(optimizer="rmsprop"), ValueError, "optimizer"),
        (lambda: Backprop(lr=0.0), ValueError, "lr"),
        (lambda: Backprop(lr=math.nan), ValueError, "lr"),
        (lambda: Backprop(momentum=1.0), ValueError, "momentum"),
        (lambda: Denoising(noise_sigma=-0.1), ValueError, "noise_sigma"),
        (lambda: Denoising(noise_sigma=True), TypeError, "noise_sigma must be a real number, got True"),
        (lambda: Autoencoder(noise_sigma=math.inf), ValueError, "noise_sigma"),
        (lambda: Reconstruction(object(), 0.1), TypeError, "physics"),
    ],
)
def test_bad_hyper_parameters(make, error, match):
    with pytest.raises(error, match=match):
        make()


@pytest.mark.parametrize(
    "override, error, match",
    [
        ({"epochs": 0}, ValueError, "epochs"),
        ({"epochs": True}, ValueError, "epochs must be an integer >= 1, got True"),
        ({"time_budget": 0.0}, ValueError, "time_budget must be positive, got 0.0"),
        ({"batch_size": 2.0}, ValueError, "batch_size"),
        ({"time_budget": -1.0}, ValueError, "time_budget"),
        ({"resume": True}, ValueError, "resume"),
        ({"resume": "False"}, TypeError, "^resume must be a bool, got 'False'$"),  # was 'resume=True needs a checkpoint'
        ({"resume": 0}, TypeError, "^resume must be a bool, got 0$"),  # was taken as False
        ({"progress": None}, TypeError, "^progress must be a bool, got None$"),  # was taken as False
        ({"task": "denoising"}, TypeError, "task"),
        ({"method": "bregman"}, TypeError, "method"),
        ({"generator": 0}, TypeError, "generator"),
        ({"checkpoint": pathlib.Path(__file__).parent}, IsADirectoryError, "checkpoint must be a file path, got the directory"),
        # refused before training (they failed when the first checkpoint was written, after an epoch):
        ({"checkpoint": ""}, IsADirectoryError, "^checkpoint must be a file path, got the directory ''$"),
        ({"checkpoint": 123}, TypeError, r"^checkpoint must be a file path \(str or os.PathLike\), got int$"),
        ({"checkpoint": b"c.pt"}, TypeError, r"^checkpoint must be a file path \(str or os.PathLike\), got bytes$"),
    ],
)
def test_bad_train_arguments(patches, override, error, match):
    kwargs = {**dict(task=Denoising(0.1), method=Lifted(), epochs=1, batch_size=5, progress=False), **override}
    with pytest.raises(error, match=match):
        train(_pnn(), patches[0], **kwargs)


# ----------------------------------------------------------------------------- tasks, history
def test_tasks_draw_from_the_generator(patches):
    clean = patches[0][:6]
    noisy = Denoising(0.3).observe(clean, _gen(4))
    n = torch.randn(clean.shape, dtype=DT, generator=_gen(4))
    assert torch.equal(noisy.observation, clean + 0.3 * n) and noisy.target is clean
    physics = Blur(gaussian_kernel(1.0, dtype=DT), img_size=(1, 15, 15), boundary="zero", dtype=DT)
    meas = Reconstruction(physics, 0.05).observe(clean, _gen(4))
    assert torch.allclose(meas.observation, physics.A(clean) + 0.05 * n) and meas.target is clean
    task = Autoencoder()
    flat = task.observe(clean, _gen(4))
    assert flat.observation.shape == (6, 225) and torch.equal(flat.observation, flat.target)
    assert torch.equal(task.image(flat.target, clean), clean)
    assert float(sample_loss(flat.target + 1, flat.target)[0]) == pytest.approx(0.5 * 225)


def test_noise_free_tasks_draw_nothing_and_reconstruction_defaults_to_no_noise(patches):
    """With sigma = 0 the observation is exact and the generator is left untouched (``gaussian``
    returns zeros without drawing), so noise-free tasks do not shift later draws."""
    clean = patches[0][:4]
    physics = Blur(gaussian_kernel(1.0, dtype=DT), img_size=(1, 15, 15), boundary="zero", dtype=DT)
    task = Reconstruction(physics)
    assert task.noise_sigma == 0.0
    for t, expected in ((task, physics.A(clean)), (Denoising(0.0), clean), (Autoencoder(), clean.flatten(1))):
        g = _gen(4)
        assert torch.equal(t.observe(clean, g).observation, expected)
        assert torch.equal(g.get_state(), _gen(4).get_state())


def test_history_roundtrip_and_plots(tmp_path):
    h = TrainHistory()
    h.append(epoch=0, seconds=0.0, val_loss=2.0, val_psnr=18.0, val_ssim=0.3)
    h.append(epoch=1, seconds=1.5, train_loss=1.0, energy=1.2, gaps=[0.1, 0.0, 0.3], val_loss=1.0, val_psnr=21.0, val_ssim=0.5)
    back = TrainHistory.from_dict(h.as_dict()).as_dict()
    assert back.keys() == h.as_dict().keys() and all(_same(back[k], v) for k, v in h.as_dict().items())
    with pytest.raises(ValueError, match="missing"):
        TrainHistory.from_dict({"epoch": [0]})
    bad = h.as_dict()
    bad["seconds"] = [0.0]
    with pytest.raises(ValueError, match="different lengths"):
        TrainHistory.from_dict(bad)
    plot_history(h, tmp_path / "h.png", title="t")
    plot_psnr_vs_time({"a": h, "b": h}, tmp_path / "c.pdf")
    assert (tmp_path / "h.png").read_bytes()[:4] == b"\x89PNG" and (tmp_path / "c.pdf").read_bytes()[:4] == b"%PDF"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.pdf", "h.png"]  # no temporary file left


def test_history_plot_shows_every_recorded_point():
    """After one epoch (``liftinv train --epochs 1``, or a time budget spent in the first) each
    curve holds one finite point, at epoch 1 (epoch 0, the untrained model, has no energy, gaps
    or training loss). A line draws a lone point only through its marker: the per-layer gaps,
    drawn as bare lines, left their panel empty. Every curve of every panel draws its points."""
    h = TrainHistory()
    h.append(epoch=0, seconds=0.0, val_loss=2.0, val_psnr=18.0, val_ssim=0.3)
    h.append(epoch=1, seconds=1.5, train_loss=1.0, energy=1.2, gaps=[0.1, 0.2, 0.3], val_loss=1.0, val_psnr=21.0, val_ssim=0.5)
    fig = plot_history(h)
    lines = [line for ax in fig.axes for line in ax.get_lines()]
    assert len(lines) == 7  # train and validation loss, energy, three gaps, PSNR
    for line in lines:
        finite = [y for y in line.get_ydata() if math.isfinite(y)]
        assert finite and line.get_marker() not in ("None", "", " ", None), (line.get_label(), line.get_marker())


def test_history_plots_tick_whole_epochs():
    """The epoch axes are ticked at whole epochs only: matplotlib's default locator put ticks at
    1.5, 2.5 on the energy and gap panels of a 4-epoch run (they start at epoch 1) and at 0.2,
    0.4, ... after one epoch, epochs that do not exist. Oracle: every tick inside the axis range
    is an integer, for runs of 1 and 4 epochs and for both plotting functions."""
    for epochs in (1, 4):
        h = TrainHistory()
        h.append(epoch=0, seconds=0.0, val_loss=2.0, val_psnr=18.0, val_ssim=0.3)
        for e in range(1, epochs + 1):
            h.append(epoch=e, seconds=1.5 * e, train_loss=1.0 / e, energy=1.2 / e, gaps=[0.1 / e, 0.2], val_loss=1.0 / e,
                     val_psnr=20.0 + e, val_ssim=0.5)
        axes = plot_history(h).axes + plot_psnr_vs_time({"a": h}).axes[1:]
        assert len(axes) == 5
        for ax in axes:
            lo, hi = ax.get_xlim()
            ticks = [t for t in ax.get_xticks() if lo <= t <= hi]
            assert ticks and all(t == round(t) for t in ticks), (epochs, ax.get_title(), ticks)


def test_history_from_dict_copies_the_records():
    """``from_dict`` builds its own lists: the per-record gap lists are copies (editing the
    source dict, e.g. a loaded checkpoint's, leaves the history as it was) and numbers become
    floats (an ``int`` epoch from JSON reads as ``1.0``)."""
    d = {"epoch": [0, 1], "seconds": [0, 2], "energy": [math.nan, 1], "gaps": [[], [0.5, 1]], "train_loss": [math.nan, 3],
         "val_loss": [1, 2], "val_psnr": [3, 4], "val_ssim": [0, 1]}
    h = TrainHistory.from_dict(d)
    d["gaps"][1].append(7.0)
    d["epoch"].append(2)
    assert h.gaps == [[], [0.5, 1.0]] and h.epoch == [0.0, 1.0]
    assert all(type(v) is float for f in ("epoch", "seconds", "val_loss", "val_psnr") for v in getattr(h, f))


def test_a_history_with_nan_entries_equals_its_round_trip_through_a_checkpoint(tmp_path):
    """A backprop run's history (energy NaN, SSIM NaN for 8x8 images) compared unequal to the same
    history read back from its checkpoint: the dataclass ``==`` compared the lists, where each
    loaded NaN is another float object and ``nan != nan``. Oracle: the records compared field by
    field with NaN equal to NaN (``_same``); a history differing in one record, a NaN against a
    number or one gap, is still unequal."""
    images = torch.rand(4, 1, 8, 8, dtype=DT, generator=_gen(2))
    path = tmp_path / "c.pt"
    h = train(torch.nn.Conv2d(1, 1, 3, padding=1).to(DT), images, task=Denoising(0.1), method=Backprop(lr=1e-2),
              epochs=1, batch_size=2, val_set=images[:2], checkpoint=path, progress=False).history
    back = TrainHistory.from_dict(load_checkpoint(path)["history"])
    assert math.isnan(h.energy[1]) and math.isnan(h.val_ssim[1])
    assert all(_same(getattr(h, f), getattr(back, f)) for f in h.as_dict())
    assert h == back and not h != back
    other = TrainHistory.from_dict({**h.as_dict(), "energy": [math.nan, 1.0]})
    assert h != other and other != h
    gaps = TrainHistory.from_dict({**h.as_dict(), "gaps": [[], [math.nan]]})
    assert h != gaps and TrainHistory.from_dict(gaps.as_dict()) == gaps
    assert h != h.as_dict()


@pytest.mark.parametrize("gaps", [torch.tensor([0.0]), np.array([0.0]), np.array([0.25, 0.0]), torch.tensor([0.25, 0.0])])
def test_history_append_records_gaps_given_as_an_array(gaps):
    """``append`` tested ``gaps or []``: a one-entry tensor or array holding 0 is false, so the gap
    was dropped (``[]`` recorded, as for a backprop record) without an error, and one of several
    entries failed with 'The truth value of an array with more than one element is ambiguous'."""
    h = TrainHistory()
    h.append(epoch=1, seconds=0.5, gaps=gaps)
    h.append(epoch=2, seconds=1.0)
    assert h.gaps == [[float(g) for g in gaps.tolist()], []]


# ----------------------------------------------------------------------------- CLI, setups, benchmark memory
def test_cli_trains_resumes_and_refuses_bad_arguments(tmp_path, capsys):
    out = tmp_path / "ae.pt"
    args = ["--task", "autoencoder", "--quick", "--method", "bregman-bcd", "--out", str(out), "--no-progress"]
    assert train_main([*args, "--epochs", "1"]) == 0
    assert load_checkpoint(out)["epoch"] == 1 and out.with_suffix(".png").stat().st_size > 0
    assert train_main([*args, "--epochs", "2", "--resume"]) == 0
    assert load_checkpoint(out)["epoch"] == 2
    assert "test PSNR" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        train_main([*args, "--epochs", "0"])
    assert exit_info.value.code == 2 and "argument --epochs: must be an integer >= 1, got '0'" in capsys.readouterr().err
    assert train_main([*args, "--method", "backprop-adam", "--resume", "--epochs", "3"]) == 2  # another method's
    assert "checkpoint" in capsys.readouterr().err


def test_cli_never_replaces_a_checkpoint_without_resume_or_overwrite(tmp_path, capsys):
    """Running the command again without --resume started a new run and replaced the checkpoint
    of the previous one after its first epoch. Now it is refused before any work (exit status
    2), naming the file and the ways forward, the file left byte for byte; --overwrite replaces
    it with a new run's; --resume and --overwrite together are refused."""
    out = tmp_path / "ae.pt"
    out.write_bytes(b"a long run's checkpoint")
    args = ["--task", "autoencoder", "--quick", "--method", "backprop-adam", "--epochs", "1", "--no-progress",
            "--out", str(out)]
    with pytest.raises(SystemExit) as exit_info:
        train_main(args)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert f"--out {out} exists: pass --resume to continue from it or --overwrite to replace it (or delete it)" in err
    assert out.read_bytes() == b"a long run's checkpoint" and not out.with_suffix(".png").exists()
    with pytest.raises(SystemExit) as exit_info:
        train_main([*args, "--resume", "--overwrite"])
    assert exit_info.value.code == 2 and "not allowed with argument" in capsys.readouterr().err
    assert train_main([*args, "--overwrite"]) == 0
    assert load_checkpoint(out)["epoch"] == 1


def test_cli_resume_refuses_another_seed_and_keeps_the_checkpoints_without_one(tmp_path, capsys):
    """``liftinv train --seed 3 --resume`` continued the run of seed 0 (the checkpoint's generator
    state) without a word. Now refused as an argparse error naming --seed, both seeds and the
    way forward (exit status 2, the checkpoint byte for byte); --resume with the run's seed (or
    without --seed) continues the run. Oracle: the checkpoint's bytes and epochs."""
    out = tmp_path / "ae.pt"
    args = ["--task", "autoencoder", "--quick", "--method", "backprop-adam", "--no-progress", "--out", str(out)]
    assert train_main([*args, "--epochs", "1"]) == 0
    data = out.read_bytes()
    with pytest.raises(SystemExit) as exit_info:
        train_main([*args, "--epochs", "2", "--resume", "--seed", "3"])
    assert exit_info.value.code == 2
    assert (f"--seed 3: checkpoint {out} continues a run of seed 0, which --resume keeps (omit --seed, or pass "
            "--seed 0)") in capsys.readouterr().err
    assert out.read_bytes() == data
    assert train_main([*args, "--epochs", "2", "--resume", "--seed", "0"]) == 0  # without --seed: the test above
    assert load_checkpoint(out)["epoch"] == 2


def _held_out_noise(monkeypatch) -> list:
    """Record the observation noise (observation less clean target) of every HeldOut built."""
    import liftinv.evaluation as evaluation

    noises, init = [], evaluation.HeldOut.__init__

    def spy(self, *args, **kwargs):
        init(self, *args, **kwargs)
        noises.append(torch.cat([obs - target for obs, target, _ in self.chunks]).flatten(1).double())

    monkeypatch.setattr(evaluation.HeldOut, "__init__", spy)
    return noises


def _assert_independent(val_noise, test_noise):
    """The sample correlation of the validation noise with that of as many test images is that of
    independent fields (|r| < 0.02 over 64 * 256 entries; it was 1: the same noise image for
    image, both drawn with seed 0)."""
    n = min(len(val_noise), len(test_noise))
    r = torch.corrcoef(torch.stack([val_noise[:n].flatten(), test_noise[:n].flatten()]))[0, 1]
    assert abs(float(r)) < 0.02, float(r)


def test_cli_draws_the_test_noise_independently_of_the_validation_noise(tmp_path, monkeypatch, capsys):
    import liftinv.training_cli as cli

    noises = _held_out_noise(monkeypatch)
    monkeypatch.setattr(cli, "plot_history", lambda *a, **k: None)
    assert train_main(["--task", "autoencoder", "--quick", "--method", "backprop-adam", "--epochs", "1",
                       "--time-budget", "1e-9", "--no-progress", "--out", str(tmp_path / "ae.pt")]) == 0
    val_noise, test_noise = noises
    assert (len(val_noise), len(test_noise)) == (64, 128)  # the quick setup's validation and test images
    _assert_independent(val_noise, test_noise)


def test_training_benchmark_draws_the_test_noise_independently_of_the_validation_noise(monkeypatch):
    import liftinv.bench.training as bt

    noises = _held_out_noise(monkeypatch)
    monkeypatch.setattr(bt, "_methods", lambda setup, quick: [("backprop-adam", "lr=0.001", Backprop("adam", 1e-3))])
    monkeypatch.setattr(bt, "QUICK_BUDGET", 1e-9)  # one batch
    monkeypatch.setattr(bt, "peak_training_memory", lambda setup, method: 0)
    monkeypatch.setattr(bt, "plot_psnr_vs_time", lambda *a, **k: None)
    bt.run_task("autoencoder", quick=True)
    val_noise, test_noise = noises
    _assert_independent(val_noise, test_noise)


def test_cli_sweep_order_sets_the_bcd_order_and_refuses_other_methods(tmp_path, capsys):
    """The checkpoint records the method that trained: interleaved or not as asked; the option
    is refused, naming itself, for a method without BCD sweeps."""
    args = ["--task", "autoencoder", "--quick", "--epochs", "1", "--no-progress"]
    for order, flag in (("interleaved", "interleave=True"), ("top-down", "interleave=False")):
        out = tmp_path / f"{order}.pt"
        assert train_main([*args, "--method", "mac-bcd", "--sweep-order", order, "--out", str(out)]) == 0
        method = load_checkpoint(out)["config"]["method"]
        assert flag in method and "MAC" in method
    with pytest.raises(SystemExit) as exit_info:
        train_main([*args, "--method", "backprop-adam", "--sweep-order", "interleaved", "--out", str(tmp_path / "b.pt")])
    assert exit_info.value.code == 2
    assert "--sweep-order applies to the lifted BCD methods (*-bcd), not to backprop-adam" in capsys.readouterr().err


def test_cli_low_memory_turns_the_preactivation_cache_off_and_refuses_backprop(tmp_path, capsys):
    """The checkpoint records ``cache_preactivations=False``; backprop refuses the option by name."""
    args = ["--task", "autoencoder", "--quick", "--epochs", "1", "--no-progress"]
    out = tmp_path / "low.pt"
    assert train_main([*args, "--method", "bregman-bcd", "--low-memory", "--out", str(out)]) == 0
    assert "cache_preactivations=False" in load_checkpoint(out)["config"]["method"]
    with pytest.raises(SystemExit) as exit_info:
        train_main([*args, "--method", "backprop-adam", "--low-memory", "--out", str(tmp_path / "b.pt")])
    assert exit_info.value.code == 2
    assert "--low-memory applies to the lifted methods, not to backprop-adam" in capsys.readouterr().err


def test_cli_resume_of_a_low_memory_run_without_it_names_the_difference(tmp_path, capsys):
    """Resuming a ``--low-memory`` run without the option is refused (the mode changes the
    rounding, and a resumed run is the uninterrupted one bit for bit), but the error printed both
    configs in full (two dicts of some 700 characters differing in one word). It names the
    differing fields only; the checkpoint is left byte for byte, and resuming with the option
    continues the run."""
    out = tmp_path / "low.pt"
    args = ["--task", "autoencoder", "--quick", "--method", "bregman-bcd", "--no-progress", "--out", str(out)]
    assert train_main([*args, "--low-memory", "--epochs", "1"]) == 0
    data = out.read_bytes()
    capsys.readouterr()
    assert train_main([*args, "--resume", "--epochs", "2"]) == 2
    err = capsys.readouterr().err
    assert (f"liftinv train: error: checkpoint {out} was written by another run than this one: method "
            "cache_preactivations=False (checkpoint) vs cache_preactivations=True (this run)\n") == err
    assert out.read_bytes() == data
    assert train_main([*args, "--resume", "--low-memory", "--epochs", "2"]) == 0
    assert load_checkpoint(out)["epoch"] == 2


def test_cli_depth_ratio_sets_the_penalty_weights_of_the_run(tmp_path):
    """The checkpoint's layer weights are ratio^(K-k) (the autoencoder's make_model weights are
    1, K = 4): the setup's ratio 3 by default, the option's 2 when given, 1 for backprop."""
    args = ["--task", "autoencoder", "--quick", "--epochs", "1", "--no-progress"]
    for extra, ratio in ((["--method", "bregman-bcd"], 3.0), (["--method", "mac-bcd", "--depth-ratio", "2"], 2.0),
                         (["--method", "backprop-adam"], 1.0)):
        out = tmp_path / f"r{ratio:g}.pt"
        assert train_main([*args, *extra, "--out", str(out)]) == 0
        state = load_checkpoint(out)["model"]
        assert [float(state[f"layers.{i}._extra_state"]) for i in range(4)] == [ratio**3, ratio**2, ratio, 1.0]


def test_cli_depth_ratio_whose_weights_overflow_is_refused_naming_the_option(tmp_path, capsys):
    """--depth-ratio 1e30 on the autoencoder (K = 4, float32): 1e90 is beyond float32's range
    (oracle: torch.finfo(float32).max), so the run is refused as an argparse error naming
    --depth-ratio and its value (exit status 2, usage), nothing written; it came out as
    'liftinv train: error: ratio = 1e+30 makes ...', naming an argument the command does not have."""
    assert 1e30**3 > torch.finfo(torch.float32).max
    out = tmp_path / "r.pt"
    with pytest.raises(SystemExit) as exit_info:
        train_main(["--task", "autoencoder", "--quick", "--epochs", "1", "--no-progress", "--method", "bregman-bcd",
                    "--depth-ratio", "1e30", "--out", str(out)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "usage:" in err and "error: --depth-ratio 1e+30: ratio = 1e+30 makes a penalty weight overflow" in err
    assert list(tmp_path.iterdir()) == []


def test_cli_reports_the_checkpointed_epoch(tmp_path, monkeypatch, capsys):
    """With batches of 1 s, ``--time-budget 1`` ends the first epoch after its first batch: no
    checkpoint is written and the summary says so; a complete epoch is reported with its number."""
    from types import SimpleNamespace

    import liftinv.training as training

    clock = iter(range(10**6))
    monkeypatch.setattr(training, "time", SimpleNamespace(perf_counter=lambda: float(next(clock))))
    out = tmp_path / "ae.pt"
    args = ["--task", "autoencoder", "--quick", "--method", "backprop-adam", "--no-progress", "--out", str(out)]
    assert train_main([*args, "--epochs", "1", "--time-budget", "1"]) == 0
    assert "; no checkpoint (no epoch completed); plot" in capsys.readouterr().out and not out.exists()
    assert train_main([*args, "--epochs", "1"]) == 0
    assert f"; checkpoint {out} (epoch 1); plot" in capsys.readouterr().out and out.exists()


def test_cli_overwrite_that_completes_no_epoch_says_the_previous_checkpoint_is_still_there(tmp_path, monkeypatch,
                                                                                          capsys):
    """``--overwrite --time-budget 1`` with batches of 1 s completes no epoch, so the previous run's
    checkpoint is not replaced (overwrite replaces it after a complete epoch): the summary said
    'no checkpoint (no epoch completed)' with the old file in place. Now it says the file still
    holds the previous run's; a divergence in the first epoch of train(..., overwrite=True) says
    the same. Oracle: the file's bytes, unchanged."""
    from types import SimpleNamespace

    import liftinv.training as training

    clock = iter(range(10**6))
    monkeypatch.setattr(training, "time", SimpleNamespace(perf_counter=lambda: float(next(clock))))
    out = tmp_path / "ae.pt"
    out.write_bytes(b"a long run's checkpoint")
    args = ["--task", "autoencoder", "--quick", "--method", "backprop-adam", "--no-progress", "--out", str(out)]
    assert train_main([*args, "--epochs", "1", "--time-budget", "1", "--overwrite"]) == 0
    assert (f"; no epoch completed, so checkpoint {out} was not replaced: it still holds the previous run's; plot"
            in capsys.readouterr().out)
    assert out.read_bytes() == b"a long run's checkpoint"
    with pytest.raises(FloatingPointError, match="; no checkpoint was written, so " + re.escape(str(out))
                       + " still holds the previous run's$"):
        train(_pnn(), torch.rand(4, 1, 8, 8, dtype=DT, generator=_gen(2)), task=Denoising(0.1), checkpoint=out,
              overwrite=True, method=Backprop("sgd", lr=1e200, momentum=0.0), epochs=1, batch_size=2, progress=False)
    assert out.read_bytes() == b"a long run's checkpoint"


def test_cli_refuses_a_checkpoint_path_that_the_plot_would_overwrite(tmp_path, capsys):
    """The history plot is written to ``--out`` with the suffix ``.png``: ``--out m.png`` would
    replace the checkpoint by the plot, so it is refused before training."""
    with pytest.raises(SystemExit) as exit_info:
        train_main(["--task", "autoencoder", "--quick", "--epochs", "1", "--no-progress", "--out", str(tmp_path / "m.png")])
    assert exit_info.value.code == 2 and "would overwrite the checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "m.png").exists()


@pytest.mark.parametrize("argv, message", [
    (["--method", "bregman-bcd", "--lr", "0.5"], "--lr applies to the backprop methods (backprop-*), not to bregman-bcd"),
    (["--method", "bregman-isgm", "--lr", "0.5"], "--lr applies to the backprop methods (backprop-*), not to bregman-isgm"),
    (["--method", "bregman-isgm", "--sweep-order", "top-down"],
     "--sweep-order applies to the lifted BCD methods (*-bcd), not to bregman-isgm"),
    (["--method", "backprop-sgd", "--low-memory"], "--low-memory applies to the lifted methods, not to backprop-sgd"),
    (["--method", "bregman-isgm", "--depth-ratio", "3"],
     "--depth-ratio applies to the lifted BCD methods (*-bcd), not to bregman-isgm"),
    (["--method", "bregman-bcd", "--depth-ratio", "3", "--resume"],
     "--depth-ratio sets the penalty weights of a new run; --resume keeps the checkpoint's"),
])
def test_cli_refuses_an_option_of_other_methods_before_loading_the_data(tmp_path, monkeypatch, capsys, argv, message):
    """``--lr`` sets the backprop methods' learning rate only, ``--sweep-order`` the lifted BCD
    order, ``--low-memory`` the lifted cache: another method refuses them by name rather than
    ignore them, as an argparse error before the setup's data are loaded (build_setup not called)."""
    import liftinv.training_cli as cli

    built = []
    monkeypatch.setattr(cli, "build_setup", lambda *a, **k: built.append(1) or build_setup(*a, **k))
    with pytest.raises(SystemExit) as exit_info:
        train_main(["--task", "autoencoder", "--quick", "--no-progress", "--out", str(tmp_path / "l.pt"), *argv])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert built == [] and not (tmp_path / "l.pt").exists()


@pytest.mark.parametrize("argv, check", [
    (["--method", "backprop-adam"], lambda m, setup: m == Backprop("adam", 1e-2)),
    (["--method", "bregman-isgm"], lambda m, setup: m == setup.isgm and isinstance(m.solver, ISGM)),
    (["--method", "fenchel-bcd"], lambda m, setup: type(m.penalty).__name__ == "FenchelPenalty" and isinstance(m.solver, BCD)),
    (["--method", "mac-bcd"], lambda m, setup: m.penalty is MAC),
    (["--method", "backprop-adam", "--lr", "0.003"], lambda m, setup: m == Backprop("adam", 0.003)),
    (["--method", "backprop-sgd", "--lr", "0.2"], lambda m, setup: m == Backprop("sgd", 0.2)),
])
def test_cli_maps_options_to_the_training_call(tmp_path, monkeypatch, capsys, argv, check):
    """Each ``--method`` reaches ``train`` as documented (with ``--lr`` for backprop), ``--seed``
    seeds the generator, ``--dtype float64`` the model, the checkpoint defaults to
    ``out/train/TASK-METHOD.pt``, and a diverged training exits with status 1."""
    import liftinv.training_cli as cli

    calls = []

    def diverge(model, train_set, **kwargs):
        calls.append((model, kwargs))
        raise FloatingPointError("training diverged")

    monkeypatch.setattr(cli, "train", diverge)
    monkeypatch.chdir(tmp_path)
    assert train_main(["--task", "autoencoder", "--quick", "--seed", "7", "--dtype", "float64", "--no-progress", *argv]) == 1
    assert "liftinv train: training diverged" in capsys.readouterr().err
    (model, kwargs), = calls
    method = argv[argv.index("--method") + 1]
    assert check(kwargs["method"], build_setup("autoencoder", quick=True))
    assert kwargs["checkpoint"] == pathlib.Path("out/train") / f"autoencoder-{method}.pt"
    assert kwargs["generator"].initial_seed() == 7
    assert all(p.dtype == torch.float64 for p in model.parameters())


def test_cli_dtype_is_the_option_of_reconstruct_and_a_resume_keeps_it(tmp_path, capsys):
    """liftinv train took --float64 where liftinv reconstruct takes --dtype {float32,float64}:
    both now take --dtype from one table (cli_types.DTYPES); --float64 is an unknown option. A
    resume with another dtype than its checkpoint's is refused naming both (exit status 2), the
    checkpoint byte for byte."""
    from liftinv.reconstruct_cli import build_parser
    from liftinv.training_cli import _parser

    def dtype_action(parser):
        return next(a for a in parser._actions if a.dest == "dtype")

    assert dtype_action(_parser()).choices == dtype_action(build_parser()).choices == ["float32", "float64"]
    assert _parser().parse_args([]).dtype == "float32"
    out = tmp_path / "ae.pt"
    args = ["--task", "autoencoder", "--quick", "--method", "backprop-adam", "--no-progress", "--out", str(out)]
    with pytest.raises(SystemExit) as exit_info:
        train_main([*args, "--float64"])
    assert exit_info.value.code == 2 and "unrecognized arguments: --float64" in capsys.readouterr().err
    assert train_main([*args, "--epochs", "1"]) == 0
    data = out.read_bytes()
    assert train_main([*args, "--epochs", "2", "--resume", "--dtype", "float64"]) == 2
    err = capsys.readouterr().err
    assert f"liftinv train: error: checkpoint {out} was written in torch.float32 (model entry " in err
    assert "this run uses torch.float64" in err and out.read_bytes() == data


@pytest.mark.parametrize("kind", ["bcd", "isgm"])
@pytest.mark.parametrize("name", SETUP_NAMES)
def test_setup_methods_learn(name, kind):
    """Each setup's tuned lifted method, on a few of its own batches, stays finite and raises the
    validation PSNR of the untrained network."""
    setup = build_setup(name, quick=True)
    h = train(setup.make_model(), setup.train[: 4 * setup.batch_size], task=setup.task, method=getattr(setup, kind),
              epochs=2, batch_size=setup.batch_size, val_set=setup.val[:16], progress=False, generator=_gen()).history
    assert h.val_psnr[-1] > h.val_psnr[0]
    assert all(math.isfinite(e) for e in h.energy[1:])


def test_reconstruction_task_must_use_the_network_operator(patches):
    """An unrolled network is bound to the task's physics for training: the same operator (here
    a copy in float64) is accepted, another blur is refused before any training."""
    train_set, _ = patches

    def physics(width: float, dtype=DT) -> Blur:
        return Blur(gaussian_kernel(width, dtype=dtype), img_size=(1, 15, 15), boundary="zero", dtype=dtype)

    net = UnrolledPrimalDual(physics(1.0, torch.float32), 2, 2, (1, 15, 15), generator=_gen(2)).to(DT)
    before = copy.deepcopy(net.state_dict())
    with pytest.raises(ValueError, match=r"physics must have the spec of the operator the network is bound to: Blur\(kernel="):
        train(net, train_set, task=Reconstruction(physics(2.0), 0.02), epochs=1, batch_size=10, progress=False)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    same = physics(1.0)
    train(net, train_set, task=Reconstruction(same, 0.02), epochs=1, batch_size=10, progress=False)
    assert net.physics is same


def test_evaluate_binds_an_unrolled_network_to_the_task_physics(patches):
    """evaluate, as train, binds a network with bind(physics) to the task's physics: a network
    built for one blur scored on observations of another was scored with its own blur without a
    word; now refused, and a copy of its operator is bound and gives the score of the network
    run with the task's physics (oracle: the observations and loss written out)."""
    clean = patches[1][:4]

    def physics(width: float) -> Blur:
        return Blur(gaussian_kernel(width, dtype=DT), img_size=(1, 15, 15), boundary="zero", dtype=DT)

    net = UnrolledPrimalDual(physics(1.0), 2, 2, (1, 15, 15), generator=_gen(2)).to(DT)
    with pytest.raises(ValueError, match=r"physics must have the spec of the operator the network is bound to: Blur\(kernel="):
        evaluate(net, clean, task=Reconstruction(physics(2.0), 0.02), batch_size=4)
    same = physics(1.0)
    m = evaluate(net, clean, task=Reconstruction(same, 0.02), batch_size=4, seed=3)
    assert net.physics is same
    y = same.A(clean) + 0.02 * torch.randn(same.A(clean).shape, dtype=DT, generator=_held_out_gen(3))
    with torch.no_grad():
        expected = float(sample_loss(net(y, same), clean).mean())
    assert m.loss == pytest.approx(expected, rel=1e-12)


def test_build_setup_refuses_unknown_name():
    with pytest.raises(ValueError, match="name must be one of"):
        build_setup("inpainting")


def test_setups_carry_their_documented_configurations():
    r"""What the module docstring of :mod:`liftinv.training_setups` states: penalty weights 1,
    except :math:`1/s^2` on the dual layers of the CT network (those reading through the dual
    step's scaled convolutions), times ``depth_ratio^(K-k)`` in the models for lifted BCD (10 on
    the denoiser and deblurring, 3 on the autoencoder), not for ISGM or backprop; BCD with Adam and constants kept for 20 batches, interleaved on
    denoising and deblurring, with deferred parameter steps on deblurring; ISGM with :math:`\eta = 0.5`, on the denoiser two interleaved
    Nesterov (0.9) inner sweeps with steps :math:`1.9/L` and kept constants, elsewhere one plain
    sweep with fresh constants; one power iteration per estimate."""
    from liftinv.affine import ScaledConv
    from liftinv.penalty import BREGMAN
    from liftinv.solvers import Plain

    plain_isgm = Lifted(BREGMAN, ISGM(eta=0.5, inner=BCD(), inner_steps=1), power_iters=1, lipschitz_every=1)
    for name, lr, interleave, batch_size, ratio in (("denoising", 5e-3, True, 32, 10), ("deblurring", 1e-2, True, 32, 10),
                                                    ("ct", 1e-2, False, 16, 1), ("autoencoder", 1e-3, False, 32, 3)):
        setup = build_setup(name, quick=True)
        assert setup.batch_size == batch_size, name
        solver = BCD(param_rule=Adam(lr), interleave=interleave, defer_params=name == "deblurring")
        assert setup.bcd == Lifted(BREGMAN, solver, lipschitz_every=20, power_iters=1), name
        if name == "denoising":
            inner = BCD(var_rule=Plain(), param_rule=Nesterov(0.9), step_scale=1.9, interleave=True)
            assert setup.isgm == Lifted(BREGMAN, ISGM(eta=0.5, inner=inner, inner_steps=2), lipschitz_every=20, power_iters=1)
        else:
            assert setup.isgm == plain_isgm, name
        for method, scale in ((setup.bcd, ratio), (setup.isgm, 1), (Backprop("adam", 1e-3), 1)):
            model = setup.model(method)
            lifted = getattr(model, "lifted", model)
            for k in range(1, lifted.depth + 1):
                dual = name == "ct" and any(isinstance(m, ScaledConv) for m in lifted.layer(k).maps)
                expected = (1 / model.s**2 if dual else 1.0) * scale ** (lifted.depth - k)
                assert lifted.layer(k).weight == pytest.approx(expected, rel=1e-12), (name, k)
        assert setup.depth_ratio == ratio
        assert name != "ct" or sum(lifted.layer(k).weight < 1 for k in range(1, lifted.depth + 1)) == 9


def test_tensor_memory_counts_live_storages():
    outside = torch.ones(1000, dtype=DT)
    with TensorMemory() as mem:
        a = torch.zeros(1000, dtype=DT)  # 8000 bytes
        b = a + 1  # 8000 more
        a.add_(1), outside.mul_(2), b[10:20]  # in place and views: nothing new
        assert (mem.current, mem.peak) == (16000, 16000)
        del a
        assert (mem.current, mem.peak) == (8000, 16000)
        c = torch.empty(3000, dtype=DT)
        assert (mem.current, mem.peak) == (32000, 32000)
    del b, c
    assert mem.current == 0


def test_tensor_memory_excludes_given_storages_while_they_hold_them():
    param = torch.nn.Parameter(torch.zeros(1000, dtype=DT))
    with TensorMemory(exclude=[param]) as mem:
        new = torch.ones(1000, dtype=DT)  # 8000 bytes, counted
        assert mem.peak == 8000
        with torch.no_grad():
            param.set_(new)  # now the parameter's storage: not counted
        del new
        grad = torch.ones(1000, dtype=DT)
        assert mem.peak == 8000 and mem.current == 16000
    del grad


def test_cli_checkpoint_that_cannot_be_written_exits_1_with_a_message(tmp_path, capsys, monkeypatch):
    """A checkpoint folder that cannot be created (its parent is a file) is an ``OSError``: exit
    status 1 with a message, as ``liftinv invert`` and ``liftinv reconstruct`` (2 is bad input).
    It was found when the first epoch's checkpoint was written, after that epoch's training; now
    before the first batch (the runner is never built), for train() as for the command."""
    import liftinv.training as training

    (tmp_path / "file").write_text("not a folder")
    out = tmp_path / "file" / "sub" / "ae.pt"
    monkeypatch.setattr(training, "runner", lambda *a: pytest.fail("trained with a checkpoint that cannot be written"))
    assert train_main(["--task", "autoencoder", "--quick", "--epochs", "1", "--no-progress", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"liftinv train: error: checkpoint file {out}: {tmp_path / 'file'} is a file, not a folder")
    assert "Traceback" not in err
    with pytest.raises(NotADirectoryError, match=re.escape(f"checkpoint file {out}: {tmp_path / 'file'} is a file")):
        train(_pnn(), torch.rand(4, 1, 8, 8, dtype=DT), task=Denoising(0.1), epochs=1, batch_size=2, checkpoint=out,
              progress=False)
    assert (tmp_path / "file").read_text() == "not a folder"


@pytest.mark.skipif(not pathlib.Path("/proc/self").is_dir(), reason="needs Linux's /proc, where no file can be created")
def test_checkpoint_in_a_folder_that_takes_no_file_is_refused_before_training(capsys, monkeypatch):
    """A checkpoint in a folder where no file can be created (/proc): train checked only that its
    folder can be made under no file, so liftinv train --out /proc/x.pt trained its first epoch
    (17 s on the quick denoiser) and then failed naming the temporary file ('[Errno 2] No such
    file or directory: '/proc/.x.pt.o2mj9i7e.tmp''). Now an OSError naming the checkpoint and the
    folder before the first batch (exit status 1). Oracle: open() of a new file there fails."""
    import liftinv.training as training

    with pytest.raises(OSError):
        open("/proc/liftinv-probe", "x")
    out = "/proc/liftinv-ae.pt"
    monkeypatch.setattr(training, "runner", lambda *a: pytest.fail("trained with a checkpoint that cannot be written"))
    assert train_main(["--task", "autoencoder", "--quick", "--epochs", "1", "--no-progress", "--out", out]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"liftinv train: error: checkpoint file {out}: no file can be created in /proc (")
    with pytest.raises(OSError, match=re.escape(f"checkpoint file {out}: no file can be created in /proc")):
        train(_pnn(), torch.rand(4, 1, 8, 8, dtype=DT), task=Denoising(0.1), epochs=1, batch_size=2, checkpoint=out,
              progress=False)


def test_cli_out_ending_with_a_separator_is_refused_as_a_folder(tmp_path, capsys, monkeypatch):
    """``--out runs/`` (a folder that does not exist yet) was read as the file ``runs`` (argparse's
    Path drops the separator): the checkpoint and plot were written as ``runs`` and ``runs.png``
    without a word. Now an argparse error naming --out (exit status 2), nothing written."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        train_main(["--task", "autoencoder", "--quick", "--epochs", "1", "--no-progress", "--out", "runs/"])
    assert exit_info.value.code == 2
    assert "argument --out: must be a checkpoint file, got the folder 'runs/' (e.g. runs/run.pt)" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("folder", ["TMP", ".", ""])
def test_cli_folder_as_checkpoint_exits_1_before_training(tmp_path, capsys, monkeypatch, folder):
    """A folder given as --out is a file that cannot be written: exit status 1, as liftinv invert
    and reconstruct (and a checkpoint folder that cannot be created); it was an argparse error
    (2, bad arguments). Refused before the first batch. A folder without a name ('.' or '')
    failed on the plot's path with "PosixPath('.') has an empty name" (exit status 2), naming
    neither --out nor the folder."""
    import liftinv.training as training

    monkeypatch.setattr(training, "runner", lambda *a: pytest.fail("trained with a folder as checkpoint"))
    monkeypatch.chdir(tmp_path)
    folder = str(tmp_path) if folder == "TMP" else folder
    assert train_main(["--task", "autoencoder", "--quick", "--epochs", "1", "--no-progress", "--out", folder]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"liftinv train: error: checkpoint must be a file path, got the directory '{folder or '.'}'")
    assert "usage:" not in err and list(tmp_path.iterdir()) == []


def test_cli_plot_that_cannot_be_written_exits_1_with_a_message(tmp_path, capsys, monkeypatch):
    """A folder where the history plot goes (``--out c.pt`` next to a folder ``c.png``): the
    write failed after training with a traceback (IsADirectoryError from the rename), then with
    exit status 1 and a message naming the plot, still after the whole training run (the
    checkpoint written, the plot lost). Now refused before training, as the checkpoint is:
    exit status 1, naming the plot; nothing written. A plot that fails after training all the
    same (its file made a folder meanwhile) still exits 1 naming it. Oracle: open() of the plot
    path for writing fails."""
    import liftinv.training_cli as cli
    from liftinv.training import TrainResult

    (tmp_path / "c.png").mkdir()
    with pytest.raises(OSError):
        open(tmp_path / "c.png", "wb")
    monkeypatch.setattr(cli, "train", lambda *a, **k: pytest.fail("trained although the plot cannot be written"))
    assert train_main(["--task", "autoencoder", "--quick", "--no-progress", "--out", str(tmp_path / "c.pt")]) == 1
    err = capsys.readouterr().err
    assert err == f"liftinv train: error: history plot file {tmp_path / 'c.png'} is a folder, not a file\n"
    assert [p.name for p in tmp_path.iterdir()] == ["c.png"] and not any((tmp_path / "c.png").iterdir())

    def fake_train(model, *args, checkpoint, **kwargs):
        (tmp_path / "d.png").mkdir()  # in the plot's place after the check
        history = TrainHistory()
        history.append(epoch=0, seconds=0.0, val_psnr=20.0)
        return TrainResult(model, history)

    monkeypatch.setattr(cli, "train", fake_train)
    monkeypatch.setattr(cli, "evaluate", lambda *a, **k: type("M", (), {"psnr": 20.0, "ssim": 0.5})())
    assert train_main(["--task", "autoencoder", "--quick", "--no-progress", "--out", str(tmp_path / "d.pt")]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"liftinv train: error: cannot write the history plot {tmp_path / 'd.png'}: ") and "Traceback" not in err


def test_held_out_scores_the_model_in_eval_mode_and_restores_its_modes(patches):
    """A model in training mode with dropout and batch norm is scored as the trained model: the
    loss equals that of the same model in eval mode (dropout off, running statistics), computed
    by hand; afterwards every module is back in its own mode (here one module was in eval mode)."""
    clean = patches[1][:6, :, :11, :11]
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3, padding=1), torch.nn.BatchNorm2d(2), torch.nn.Dropout(0.5),
                                torch.nn.Conv2d(2, 1, 3, padding=1)).to(DT)
    with torch.no_grad():
        model[1].running_mean.fill_(0.3)
        model[1].running_var.fill_(2.0)
    model.train()
    model[3].eval()
    held = HeldOut(clean, Denoising(0.1), 4, seed=3)
    obs = torch.cat([o for o, _, _ in held.chunks])
    model.eval()
    with torch.no_grad():
        expected = float(0.5 * (model(obs) - clean).pow(2).flatten(1).sum(1).mean())
    model.train()
    model[3].eval()
    assert held.evaluate(model).loss == pytest.approx(expected, rel=1e-12)
    assert [m.training for m in model.modules()] == [True, True, True, True, False]
    assert float(model[1].running_mean[0]) == 0.3  # no batch statistics were folded in


def test_reconstruction_noise_on_complex_measurements_has_sigma_per_part():
    r"""Reconstruction(mri, sigma) on complex k-space (MRI's complex layout) drew torch.randn of a
    complex dtype, whose real and imaginary parts have standard deviation 1/sqrt(2): a network
    trained on it saw sigma/sqrt(2) per part while the real layout (B, 2, H, W) and MRI's own noise
    model (operators.mri.MRI.noise, physics(x)) give sigma per part. Oracle:
    the sample standard deviation of each part over 4 x 32 x 32 entries (within 5 %) for the
    complex layout, the real layout and the operator's deepinv GaussianNoise."""
    from deepinv.physics import GaussianNoise

    from operators.mri import MRI

    sigma, g = 0.3, _gen(0)
    mri = MRI(torch.ones(32, 32, dtype=DT), dtype=DT)
    clean = torch.rand(4, 1, 32, 32, dtype=DT, generator=g)
    z = torch.complex(clean, torch.zeros_like(clean))
    noise = Reconstruction(mri, sigma).observe(z, g).observation - mri.A(z)
    real = torch.cat([clean, torch.zeros_like(clean)], 1)  # the real layout (B, 2, H, W)
    noise_real = Reconstruction(mri, sigma).observe(real, g).observation - mri.A(real)
    physics = MRI(torch.ones(32, 32, dtype=DT), dtype=DT, noise_model=GaussianNoise(sigma, rng=_gen(1)))
    noise_physics = physics(z) - mri.A(z)
    for part in (noise.real, noise.imag, noise_real[:, 0], noise_real[:, 1], noise_physics.real, noise_physics.imag):
        assert float(part.std()) == pytest.approx(sigma, rel=0.05)


def test_cli_checkpoint_that_cannot_be_opened_exits_1_as_a_network_file(tmp_path, capsys, monkeypatch, deny_open):
    """Opening the checkpoint to resume is denied (``PermissionError``, simulated: root reads any
    file): exit status 1, as ``liftinv invert`` for a network file that cannot be opened; it was
    taken for unreadable content (a ``ValueError``, exit status 2). Content that cannot be read
    stays exit status 2."""
    out = tmp_path / "ae.pt"
    out.write_bytes(b"not a checkpoint")  # opening it is denied before its content is read
    args = ["--task", "autoencoder", "--quick", "--no-progress", "--out", str(out)]
    deny_open(out)
    with pytest.raises(PermissionError):
        load_checkpoint(out)
    capsys.readouterr()
    assert train_main([*args, "--epochs", "2", "--resume"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("liftinv train: error: ") and "Permission denied" in err and "Traceback" not in err
    monkeypatch.undo()
    assert train_main([*args, "--epochs", "2", "--resume"]) == 2
    assert "cannot read checkpoint file" in capsys.readouterr().err


def test_history_from_dict_refuses_entries_of_another_type():
    """A hand-written or corrupted history (a checkpoint's) was taken as it came: gaps of numbers
    (not lists) and nested epochs were kept, and failed later (``len`` of a float in
    :func:`plot_history`); a string field was read letter by letter ('could not convert string to
    float'), an ``int`` field failed in ``len``. Each is refused naming the field and record; the
    records of a valid dict (tuples and ints included) read back as floats."""
    good = {"epoch": (0, 1), "seconds": [0, 2.5], "energy": [math.nan, 1], "gaps": [[], (0.5, 1)],
            "train_loss": [math.nan, 3], "val_loss": [1, 2], "val_psnr": [3, 4], "val_ssim": [0, 1]}
    h = TrainHistory.from_dict(good)
    assert h.epoch == [0.0, 1.0] and h.gaps == [[], [0.5, 1.0]] and type(h.gaps[1][1]) is float
    cases = [
        ({"gaps": [1.0, 2.0]}, r"^history field gaps\[0\] must be a list of real numbers, got float$"),
        ({"gaps": [[], [0.5, "x"]]}, r"^history field gaps\[1\]\[1\] must be a real number, got str$"),
        ({"epoch": [[0.0], [1.0]]}, r"^history field epoch\[0\] must be a real number, got list$"),
        ({"epoch": "ab"}, r"^history field epoch must be a list, got str$"),
        ({"seconds": 3}, r"^history field seconds must be a list, got int$"),
        ({"val_psnr": [1.0, True]}, r"^history field val_psnr\[1\] must be a real number, got bool$"),
        ({"energy": [0.0, torch.tensor(1.0)]}, r"^history field energy\[1\] must be a real number, got Tensor$"),
    ]
    for change, match in cases:
        with pytest.raises(TypeError, match=match):
            TrainHistory.from_dict({**good, **change})
    with pytest.raises(TypeError, match="^history must be a mapping of its fields, got list$"):
        TrainHistory.from_dict([good])


def test_fista_momentum_runs_on_over_batches_for_parameters_and_restarts_for_variables(patches, monkeypatch):
    """``Nesterov()`` (FISTA rule) in BCD training, two epochs of three batches, one sweep each:
    every parameter block's momentum follows one FISTA sequence over all six batches (oracle: the
    hand-written t_k, beta_k of Beck & Teboulle), every variable block's starts again with each
    batch (beta = 0 at its only update), as the rule's docstring says."""
    calls = []
    original = Nesterov._momentum
    var_rule, param_rule = Nesterov(), Nesterov()

    def spy(self, state):
        beta = original(self, state)
        calls.append(("var" if self is var_rule else "param", beta))
        return beta

    monkeypatch.setattr(Nesterov, "_momentum", spy)
    method = Lifted(solver=BCD(var_rule=var_rule, param_rule=param_rule))
    net = _pnn()
    train(net, patches[0][:30], task=Denoising(0.1), method=method, epochs=2, batch_size=10, progress=False)
    t, fista = 0.0, []
    for _ in range(6):
        t_next = 0.5 * (1 + math.sqrt(1 + 4 * t * t))
        fista.append(max(t - 1, 0.0) / t_next)
        t = t_next
    n_params = len(LiftedProblem(net, net.feasible(patches[0][:2]), free_vars=[], train_params=True).param_groups)
    params = [beta for kind, beta in calls if kind == "param"]
    assert len(params) == 6 * n_params
    assert params == pytest.approx([b for b in fista for _ in range(n_params)], abs=1e-15) and fista[-1] > 0.45
    assert {beta for kind, beta in calls if kind == "var"} == {0.0}


@pytest.mark.parametrize("seed", ["18446744073709551616", "-9223372036854775809", "1.5", "x"])
def test_cli_refuses_a_seed_that_torch_does_not_take_naming_the_option(seed, capsys):
    """``--seed 2**64`` failed in ``torch.Generator.manual_seed`` with 'Overflow when unpacking
    long long', naming no option, after the data were loaded; oracle: torch's own range, whose
    ends are taken (``manual_seed`` of them). ``liftinv reconstruct --seed`` likewise."""
    from liftinv.cli_types import SEED_RANGE

    for end in SEED_RANGE:
        torch.Generator().manual_seed(end)
        with pytest.raises(ValueError, match="Overflow"):
            torch.Generator().manual_seed(end + (1 if end > 0 else -1))
    with pytest.raises(SystemExit) as exit_info:
        train_main(["--task", "autoencoder", "--quick", "--epochs", "1", "--seed", seed])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and f"argument --seed: must be an integer from -2**63 to 2**64 - 1 (a torch seed), got '{seed}'" in err
    from liftinv.reconstruct_cli import reconstruct_main  # the same option, the same type

    with pytest.raises(SystemExit) as exit_info:
        reconstruct_main(["--simulate", "--operator", "blur", "--method", "adjoint", "--seed", seed, "--out", "x.npy"])
    assert exit_info.value.code == 2 and "argument --seed: must be an integer from -2**63" in capsys.readouterr().err


def test_build_setup_takes_a_numpy_integer_seed_and_refuses_a_bool_or_float_by_name():
    """``build_setup(seed=np.int64(3))`` failed only when ``make_model`` ran, inside torch's
    ``manual_seed`` ('an integer is required', naming no argument), and ``seed=True`` built the
    models of seed 1 without a word. Oracle: the model of ``seed=3``, bit for bit."""
    ref = build_setup("autoencoder", seed=3).make_model()
    model = build_setup("autoencoder", seed=np.int64(3)).make_model()
    assert all(torch.equal(p, q) for p, q in zip(ref.parameters(), model.parameters()))
    for bad in (True, 1.5, "3", None):
        with pytest.raises(ValueError, match=r"seed must be an integer, got"):
            build_setup("autoencoder", seed=bad)


def test_build_setup_refuses_a_quick_that_is_not_a_bool():
    """``quick="no"`` was taken by its truth value (the quick sizes) and ``quick=0`` built the full
    setup (2048 training images), both without a word: a bool is required, as for train's flags.
    Oracle: the documented sizes, 512 / 2048 training images for True / False."""
    assert build_setup("autoencoder", quick=True).train.shape[0] == 512
    for bad in ("no", 0, None):
        with pytest.raises(TypeError, match=r"quick must be a bool, got"):
            build_setup("autoencoder", quick=bad)


def test_plot_psnr_vs_time_refuses_no_history(tmp_path):
    """An empty mapping drew two empty panels and matplotlib warned 'No artists with labels found
    to put in legend'; it is refused by name, and nothing is written."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match="histories must name at least one TrainHistory"):
            plot_psnr_vs_time({}, tmp_path / "c.png")
    assert not (tmp_path / "c.png").exists()
