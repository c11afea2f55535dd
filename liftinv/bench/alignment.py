r"""Direction of lifted training's parameter gradients against backpropagation's, per group.

``python -m liftinv.bench alignment [--json FILE]`` (or ``python -m liftinv.bench.alignment``):
for each setup of :mod:`liftinv.training_setups` (quick sizes), at the initial network and on
one training batch, the gradients that one lifted Bregman BCD sweep hands to the parameter
blocks, in both orders of the sweep, against backpropagation's gradient of the objective the
sweep starts from: at the forward pass every hidden penalty is zero and the energy is the top
penalty :math:`\lambda_K P_K(y, a_K(u; \Theta))` of the clamped output (autograd through the
nested network). Columns per parameter group (``layers`` that use it): ``cosine`` of the two
gradients and ``norm_ratio`` = lifted / backprop, with the parameters held where they are during
the sweep, as ``BCD(defer_params=True)`` does (the deblurring setup's); ``cosine_moving`` and
``norm_ratio_moving`` with each parameter block moved by the setup's rule as the sweep reaches
it, as the other setups' sweeps do.

Adam, the setups' parameter rule, is invariant to a constant rescaling of a group's gradient, so
the ratio does not matter to it, the cosine does. What one sweep computes: a variable moves by a
prox-gradient step from the forward pass, :math:`x_k^+ \approx x_k - c_k\,\sigma_k' \odot g_k`
with :math:`c_k = t_k/(1 + t_k)/\lambda_k`, :math:`t_k = s_k\lambda_k` (its step times its
weight; :math:`g_k` collects the residuals of the layers that read :math:`x_k`), and the
residual it leaves, :math:`\lambda_k(\sigma_k(a_k) - x_k^+)`, carries that move to the layers
below. Each layer a path crosses multiplies it by :math:`t/(1+t) < 1`: on a chain of layers
this rescales each group's gradient by one factor, which Adam undoes (with equal weights the
PNN denoiser's cosines are 0.98-0.99); in the unrolled networks a variable is read by layers of
several depths, paths of different lengths add up with different factors and the direction
changes. So does the leak through the flat pieces of the activations (saturated clips, inactive
ReLUs), which the prox lets through where backpropagation's :math:`\sigma' = 0` does not: with
equal weights the MLP autoencoder, a chain of ReLU layers, has cosines of about 0.6-0.7 below
its top group. The command measures the models the setups train with lifted BCD
(:meth:`~liftinv.training_setups.Setup.model`, weights growing with depth, which raise every
:math:`t`): the denoiser's cosines are then 1.00, the autoencoder's 0.80-0.82 below its top group.
"""
from __future__ import annotations

import dataclasses
import math

import torch
from torch import Tensor

from liftinv.methods import Lifted, lifted_view, runner
from liftinv.solvers import BCD
from liftinv.solvers.rules import Rule
from liftinv.training_setups import SETUP_NAMES, build_setup


class _Record(Rule):
    """Keep the gradient; leave the block where it is, or move it by the rule ``then``."""

    def __init__(self, then: Rule | None = None):
        self.then = then
        self.needs_step = then is not None and then.needs_step

    def init(self, values):
        return {"then": {} if self.then is None else self.then.init(values)}

    def lookahead(self, values, state):
        return values if self.then is None else self.then.lookahead(values, state["then"])

    def advance(self, values, look, grads, step, prox, state):
        recorded = [g.clone() for g in grads]  # before a rule that reuses their storage (Adam)
        if self.then is None:
            return values, {"grad": recorded, "then": {}}
        new, then = self.then.advance(values, look, grads, step, prox, state["then"])
        return new, {"grad": recorded, "then": then}


def _backprop_grads(model, batch, groups: list[list[Tensor]], penalty) -> list[list[Tensor]]:
    net, inputs = lifted_view(model)
    u, y = inputs(batch.observation)
    with torch.enable_grad():
        xs = net.feasible(u, y)
        top = net.layer(net.depth)
        a = net.preactivation(net.depth, xs, y)
        energy = top.weight * penalty.value(top.activation, batch.target, a).sum()
        flat = torch.autograd.grad(energy, [p for g in groups for p in g], allow_unused=True)
    out, i = [], 0
    for g in groups:
        out.append([torch.zeros_like(p) if d is None else d for p, d in zip(g, flat[i:i + len(g)])])
        i += len(g)
    return out


def _compare(a: list[Tensor], b: list[Tensor]) -> tuple[float, float]:
    va, vb = torch.cat([t.flatten() for t in a]).double(), torch.cat([t.flatten() for t in b]).double()
    na, nb = float(va.norm()), float(vb.norm())
    cosine = float(va @ vb) / (na * nb) if na > 0 and nb > 0 else math.nan
    return cosine, (na / nb if nb > 0 else math.nan)


def sweep_alignment(model, method, batch, moving: bool = False) -> list[dict]:
    """``{"layers", "cosine", "norm_ratio"}`` per parameter group (``layers`` that use it,
    comma-separated): the gradients one sweep of ``method`` (a :class:`~liftinv.methods.Lifted`
    with a BCD solver, whose parameter rule is wrapped by a recorder; its first sweep whatever
    its ``sweeps_per_batch``) hands to the parameter blocks of ``model`` on ``batch``, from the
    forward pass, against backpropagation's gradient of the energy it starts from. The recorder
    leaves every parameter block where it is, as a sweep with ``BCD(defer_params=True)`` does;
    with ``moving`` it moves each by the method's rule as the sweep reaches it, as a sweep without
    deferral does, so that a gradient taken after another block moved sees its new parameters
    (the parameters are put back afterwards)."""
    if not (isinstance(method, Lifted) and isinstance(method.solver, BCD)):
        raise TypeError(f"method must be a Lifted method with a BCD solver (one sweep to record), got {method!r}")
    start = [p.detach() for p in model.parameters()]  # the sweep replaces their storages (LiftedProblem.set)
    solver = dataclasses.replace(method.solver, param_rule=_Record(method.solver.param_rule if moving else None),
                                 defer_params=False)
    lifted = runner(model, dataclasses.replace(method, solver=solver, sweeps_per_batch=1))
    lifted.start_epoch()
    lifted.step(batch, 1)
    problem = lifted.problem
    with torch.no_grad():
        for p, v in zip(model.parameters(), start):
            p.set_(v)
    reference = _backprop_grads(model, batch, problem.param_groups, problem.penalty)
    return [
        dict(zip(("cosine", "norm_ratio"), _compare(lifted.state.param_states[i]["grad"], reference[i])),
             layers=",".join(map(str, problem.param_layers(i))))
        for i in range(len(problem.param_groups))
    ]


def run_task(name: str, device: str = "cpu") -> list[dict]:
    """One record per (order of the sweep, parameter group) for the setup ``name``."""
    setup = build_setup(name, quick=True, device=device)
    batch = setup.task.observe(setup.train[: setup.batch_size], torch.Generator(device=setup.train.device).manual_seed(0))
    rows = []
    for interleave in (False, True):
        method = dataclasses.replace(setup.bcd, solver=dataclasses.replace(setup.bcd.solver, interleave=interleave))
        model = setup.model(method)
        moving = sweep_alignment(model, method, batch, moving=True)
        for index, group in enumerate(sweep_alignment(model, method, batch)):
            rows.append({
                "task": name, "order": "interleaved" if interleave else "top-down",
                "setup_order": interleave == setup.bcd.solver.interleave, "group": index, **group,
                "cosine_moving": moving[index]["cosine"], "norm_ratio_moving": moving[index]["norm_ratio"],
            })
    return rows


def run(quick: bool = True, device: str = "cpu", tasks: tuple[str, ...] = SETUP_NAMES) -> list[dict]:
    """Records of every task (see the module docstring); ``quick`` is accepted for the bench
    interface (one batch per task either way)."""
    return [row for name in tasks for row in run_task(name, device)]


if __name__ == "__main__":
    from liftinv.bench import run_module

    raise SystemExit(run_module(__spec__.name, run, __doc__))
