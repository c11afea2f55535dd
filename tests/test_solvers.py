"""Solvers on problems with known minimisers: least squares (closed form), lasso (KKT), a proximal
point (closed form), update rules against torch.optim and a textbook FISTA, lifted networks."""
from __future__ import annotations

import copy
import io
import math
import re

import numpy as np
import pytest
import torch
from torch import nn

from liftinv.blocks import Params, Var
from liftinv.methods import Backprop, Lifted
from liftinv.solvers import (
    BCD,
    ISGM,
    Adam,
    BlockProblem,
    BottomUp,
    HeavyBall,
    Nesterov,
    NonFiniteError,
    OddEven,
    Plain,
    ProximalPoint,
    Simultaneous,
    SolverState,
    TopDown,
    run,
)

DT = torch.float64


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _soft(v, t):
    return torch.sign(v) * torch.clamp(v.abs() - t, min=0)


class Quadratic:
    r"""Toy problem :math:`\tfrac12\sum_j |\sum_b A_{jb} z_b - c_j|^2 + \sum_b \lambda_b |z_b|_1`, one
    vector per block; gradients, exact Lipschitz constants, soft-thresholding prox."""

    def __init__(self, z, terms, l1=None):
        self.z = {b: v.clone() for b, v in z.items()}
        self.terms = terms  # list of ({block: matrix}, c)
        self.l1 = l1 or {}
        self._lip = {b: float(torch.linalg.eigvalsh(sum(m[b].T @ m[b] for m, _ in terms if b in m))[-1]) for b in z}

    def blocks(self):
        return [b for b in self.z if isinstance(b, Var)] + [b for b in self.z if isinstance(b, Params)]

    def get(self, block):
        return [self.z[block]]

    def set(self, block, values):
        self.z[block] = values[0]

    def _residuals(self):
        return [sum(m @ self.z[b] for b, m in mats.items()) - c for mats, c in self.terms]

    def grads(self, blocks):
        rs = self._residuals()
        return [[sum(mats[b].T @ r for (mats, _), r in zip(self.terms, rs) if b in mats)] for b in blocks]

    def lipschitz(self, block):
        return self._lip[block]

    def prox(self, block, values, step):
        return [_soft(values[0], step * self.l1.get(block, 0.0))]

    def energy(self):
        smooth = sum(0.5 * (r**2).sum() for r in self._residuals())
        return smooth + sum(w * self.z[b].abs().sum() for b, w in self.l1.items())

    def stacked(self):
        """The whole smooth part as one least-squares system ``G z - c`` (blocks in ``blocks()`` order)."""
        order = self.blocks()
        rows = [torch.cat([mats.get(b, torch.zeros(len(c), len(self.z[b]), dtype=DT)) for b in order], 1) for mats, c in self.terms]
        return order, torch.cat(rows), torch.cat([c for _, c in self.terms])

    def least_squares(self):
        order, g, c = self.stacked()
        sol = torch.linalg.lstsq(g, c[:, None]).solution[:, 0]
        return dict(zip(order, sol.split([len(self.z[b]) for b in order])))


def two_blocks(seed=0, l1=0.0, m=13, n=5, p=3):
    r""":math:`\tfrac12|Ax + Bw - c|^2 + \lambda|x|_1` with x = Var(1), w = Params(0)."""
    g = _gen(seed)
    a, b = torch.randn(m, n, generator=g, dtype=DT), torch.randn(m, p, generator=g, dtype=DT)
    c = torch.randn(m, generator=g, dtype=DT)
    z = {Var(1): torch.zeros(n, dtype=DT), Params(0): torch.zeros(p, dtype=DT)}
    return Quadratic(z, [({Var(1): a, Params(0): b}, c)], {Var(1): l1} if l1 else None)


def chain(seed=0, depth=4, n=4, ridge=1.0):
    r"""Lifted linear chain :math:`\sum_k \tfrac12|x_k - M_k x_{k-1} - b_k|^2 + \tfrac{\rho}{2}|b_k|^2`,
    x_0 and x_K fixed, x_1..x_{K-1} = Var blocks, b_k = Params(k) blocks (strongly convex)."""
    g = _gen(seed)
    u, t = torch.randn(n, generator=g, dtype=DT), torch.randn(n, generator=g, dtype=DT)
    ms = [torch.randn(n, n, generator=g, dtype=DT) / math.sqrt(n) for _ in range(depth)]
    eye = torch.eye(n, dtype=DT)
    z = {Var(k): torch.randn(n, generator=g, dtype=DT) for k in range(1, depth)}
    z.update({Params(k): torch.zeros(n, dtype=DT) for k in range(1, depth + 1)})
    terms = []
    for k in range(1, depth + 1):
        mats = {Params(k): -eye}
        if k < depth:
            mats[Var(k)] = eye
        if k > 1:
            mats[Var(k - 1)] = -ms[k - 1]
        c = (ms[0] @ u if k == 1 else torch.zeros(n, dtype=DT)) - (t if k == depth else 0)
        terms.append((mats, c))
        terms.append(({Params(k): math.sqrt(ridge) * eye}, torch.zeros(n, dtype=DT)))
    return Quadratic(z, terms)


def _assert_close_blocks(problem, reference, atol):
    for b, v in reference.items():
        torch.testing.assert_close(problem.get(b)[0], v, atol=atol, rtol=0)


def test_quadratic_is_a_block_problem():
    assert isinstance(two_blocks(), BlockProblem)


# ----------------------------------------------------------------------------- schedules
def test_schedules_groups():
    blocks = [Var(1), Var(2), Var(3), Var(4), Var(5)]
    assert TopDown()(blocks) == [[Var(5)], [Var(4)], [Var(3)], [Var(2)], [Var(1)]]
    assert BottomUp()(blocks) == [[b] for b in blocks]
    assert OddEven()(blocks) == [[Var(1), Var(3), Var(5)], [Var(2), Var(4)]]
    assert OddEven()([Var(2)]) == [[Var(2)]]
    assert Simultaneous()(blocks) == [blocks]


# ----------------------------------------------------------------------------- BCD
def test_plain_bcd_converges_to_least_squares_and_decreases_energy():
    problem = two_blocks()
    state, history = run(BCD(), problem, max_iter=600)
    _assert_close_blocks(problem, problem.least_squares(), atol=1e-7)
    e = torch.tensor(history.energy)
    assert (e[1:] <= e[:-1] + 1e-12 * e[0]).all()
    assert history.iterations == state.iteration == len(history.time) - 1


def test_plain_bcd_lasso_satisfies_kkt():
    lam = 1.5
    problem = two_blocks(seed=1, l1=lam)
    run(BCD(), problem, max_iter=600)
    (ga,), (gb,) = problem.grads([Var(1), Params(0)])
    x = problem.get(Var(1))[0]
    assert gb.abs().max() < 1e-7
    nz = x != 0
    assert nz.any() and (~nz).any()
    torch.testing.assert_close(ga[nz], -lam * x[nz].sign(), atol=1e-7, rtol=0)
    assert (ga[~nz].abs() <= lam + 1e-9).all()


@pytest.mark.parametrize(
    "solver",
    [BCD(schedule=TopDown()), BCD(schedule=BottomUp()), BCD(schedule=OddEven()), BCD(schedule=OddEven(), var_sweeps=2)],
    ids=["topdown", "bottomup", "oddeven", "oddeven-2sweeps"],
)
def test_schedules_converge_on_a_chain(solver):
    problem = chain()
    reference = problem.least_squares()
    _, history = run(solver, problem, max_iter=500)
    _assert_close_blocks(problem, reference, atol=1e-6)
    e = torch.tensor(history.energy)
    assert (e[1:] <= e[:-1] + 1e-12 * e[0]).all()


@pytest.mark.parametrize(
    "solver",
    [BCD(var_rule=HeavyBall(0.3), param_rule=HeavyBall(0.3)), BCD(var_rule=Nesterov(), param_rule=Nesterov(0.5))],
    ids=["heavyball", "nesterov"],
)
def test_inertial_bcd_converges(solver):
    problem = chain(seed=2)
    run(solver, problem, max_iter=300)
    _assert_close_blocks(problem, problem.least_squares(), atol=1e-6)


@pytest.mark.parametrize("beta", [0.3, 0.6, 0.9])
def test_heavy_ball_below_the_ipiano_bound_decreases_its_lyapunov_function(beta):
    r"""The documented iPiano guarantee: with step_scale < 2(1 - beta) (exact constants L_b),
    every sweep decreases :math:`H = E + \sum_b \tfrac{\beta}{2s_b}|x_b - x_b^-|^2` by at least
    :math:`\sum_b (\tfrac{1-\beta}{s_b} - \tfrac{L_b}2)|x_b^+ - x_b|^2`, on the lifted chain (each
    block moves once per sweep) with an l1 term on one block; the energy alone need not decrease."""
    problem = chain(seed=5)
    problem.l1 = {Var(2): 0.3}
    scale = 0.99 * 2 * (1 - beta)
    solver = BCD(var_rule=HeavyBall(beta), param_rule=HeavyBall(beta), step_scale=scale)
    steps = {b: scale / problem.lipschitz(b) for b in problem.blocks()}

    def lyapunov(state):
        prev = {**{Var(i): st["prev"][0] for i, st in state.var_states.items()},
                **{Params(i): st["prev"][0] for i, st in state.param_states.items()}}
        return float(problem.energy()) + sum(beta / (2 * s) * float(((problem.get(b)[0] - prev[b]) ** 2).sum())
                                             for b, s in steps.items())

    state = solver.init(problem)
    h, rises = lyapunov(state), 0
    for _ in range(60):
        before = {b: problem.get(b)[0] for b in steps}
        e, state = float(problem.energy()), solver.step(problem, state)
        gain = sum(((1 - beta) / s - problem.lipschitz(b) / 2) * float(((problem.get(b)[0] - before[b]) ** 2).sum())
                   for b, s in steps.items())
        h, previous = lyapunov(state), h
        assert h <= previous - gain + 1e-12 * abs(previous)
        rises += float(problem.energy()) > e
    assert beta < 0.9 or rises > 0  # E itself rises with the strongest momentum


def _iterations_to(solver, problem, target, tol):
    def stop(state, history):
        return history.energy[-1] - target < tol

    _, history = run(solver, problem, max_iter=20000, callback=stop)
    assert history.energy[-1] - target < tol
    return history.iterations


def test_nesterov_faster_than_plain_when_ill_conditioned():
    g = _gen(3)
    q, _ = torch.linalg.qr(torch.randn(15, 15, generator=g, dtype=DT))
    a = q @ torch.diag(torch.logspace(0, -1.25, 15, dtype=DT))  # condition number of A^T A: 316
    c = torch.randn(15, generator=g, dtype=DT)

    def make():
        return Quadratic({Var(1): torch.zeros(15, dtype=DT)}, [({Var(1): a}, c)])

    x_star = make().least_squares()[Var(1)]
    target = float(0.5 * ((a @ x_star - c) ** 2).sum())
    tol = 1e-6 * float(0.5 * (c**2).sum())
    plain = _iterations_to(BCD(), make(), target, tol)
    fista = _iterations_to(BCD(var_rule=Nesterov()), make(), target, tol)
    assert 3 * fista < plain


# ----------------------------------------------------------------------------- update rules
def _smooth_block(seed=4):
    r"""Gradient of :math:`f(W, b) = \tfrac12|X W^\top + b - Y|^2` and a starting point."""
    g = _gen(seed)
    x, y = torch.randn(9, 3, generator=g, dtype=DT), torch.randn(9, 2, generator=g, dtype=DT)
    start = [torch.randn(2, 3, generator=g, dtype=DT), torch.randn(2, generator=g, dtype=DT)]

    def grad(values):
        r = x @ values[0].T + values[1] - y
        return [r.T @ x, r.sum(0)]

    return start, grad


def _identity(values, step):
    return values


def _torch_iterates(optimizer_factory, start, grad, steps):
    params = [nn.Parameter(v.clone()) for v in start]
    opt = optimizer_factory(params)
    out = []
    for _ in range(steps):
        out.append([p.detach().clone() for p in params])
        for p, g in zip(params, grad([p.detach() for p in params])):
            p.grad = g
        opt.step()
    return out


def _rule_iterates(rule, start, grad, step, steps, prox=_identity, record=lambda values, look: values):
    values, state, out = start, rule.init(start), []
    for _ in range(steps):
        look = rule.lookahead(values, state)
        out.append(record(values, look))
        values, state = rule.advance(values, look, grad(look), step, prox, state)
    return out


def _assert_trajectories(ours, theirs, atol):
    for a, b in zip(ours, theirs, strict=True):
        for u, v in zip(a, b, strict=True):
            torch.testing.assert_close(u, v, atol=atol, rtol=0)


def test_heavy_ball_is_torch_sgd_momentum():
    start, grad = _smooth_block()
    lr, beta = 0.01, 0.7
    theirs = _torch_iterates(lambda p: torch.optim.SGD(p, lr=lr, momentum=beta), start, grad, 15)
    _assert_trajectories(_rule_iterates(HeavyBall(beta), start, grad, lr, 15), theirs, 1e-12)


def test_nesterov_lookahead_points_are_torch_sgd_nesterov():
    # torch's iterate p_k is the look-ahead y_k = x_k + beta (x_k - x_{k-1}) of the inertial form.
    start, grad = _smooth_block()
    lr, beta = 0.01, 0.6
    theirs = _torch_iterates(lambda p: torch.optim.SGD(p, lr=lr, momentum=beta, nesterov=True), start, grad, 15)
    ours = _rule_iterates(Nesterov(beta), start, grad, lr, 15, record=lambda values, look: look)
    _assert_trajectories(ours, theirs, 1e-12)


def test_adam_is_torch_adam():
    start, grad = _smooth_block()
    rule = Adam(lr=0.05, b1=0.8, b2=0.95, eps=1e-6)
    theirs = _torch_iterates(lambda p: torch.optim.Adam(p, lr=0.05, betas=(0.8, 0.95), eps=1e-6), start, grad, 20)
    _assert_trajectories(_rule_iterates(rule, start, grad, None, 20), theirs, 1e-12)


@pytest.mark.parametrize("rule, factory", [
    (HeavyBall(0.7), lambda p: torch.optim.SGD(p, lr=0.01, momentum=0.7)),
    (Adam(lr=0.05, b1=0.8, b2=0.95, eps=1e-6), lambda p: torch.optim.Adam(p, lr=0.05, betas=(0.8, 0.95), eps=1e-6)),
])
def test_restart_starts_the_samples_in_the_mask_again(rule, factory):
    """``restart(values, state, mask)`` starts the momentum of the samples in ``mask`` (along the
    first dimension) again and keeps the others' (Adam: its moments and its bias-correction
    count, which becomes one per sample). The rows of the least-squares block are independent
    problems. Oracle: torch.optim, for row 0 a fresh optimiser from the values at the restart,
    for row 1 the optimiser run on without a restart."""
    start, grad = _smooth_block()
    values, state = start, rule.init(start)
    ours = []
    for n in range(11):
        if n == 6:
            state = rule.restart(values, state, torch.tensor([True, False]))
        values, state = rule.advance(values, values, grad(values), 0.01, _identity, state)
        ours.append(values)
    theirs = _torch_iterates(factory, start, grad, 12)
    restarted = _torch_iterates(factory, theirs[6], grad, 6)
    for j in range(1, 6):
        for u, v, w in zip(ours[5 + j], restarted[j], theirs[6 + j]):
            torch.testing.assert_close(u, torch.cat([v[:1], w[1:]]), atol=1e-12, rtol=0)


def test_restart_of_a_rule_with_a_state_needs_the_rule_s_own():
    """A rule without state has nothing to restart; one with a state that does not say how to
    restart some samples only is refused by name (clearing every sample's would couple them)."""
    values = [torch.ones(2, 3, dtype=DT)]
    mask = torch.tensor([True, False])
    assert Plain().restart(values, Plain().init(values), mask) == {}

    class Counting(Plain):
        def init(self, values):
            return {"count": 0}

    with pytest.raises(NotImplementedError, match="Counting has a state and no per-sample restart"):
        Counting().restart(values, {"count": 3}, mask)


def test_adam_with_a_prox_is_torch_adam_then_the_prox_with_step_lr():
    r""":math:`x^+ = \operatorname{prox}_{\mathrm{lr}\,h}(\text{Adam move})`: with
    :math:`h = \lambda|\cdot|_1`, torch's Adam step followed by soft-thresholding at
    :math:`\mathrm{lr}\,\lambda` (Adam's moments do not see the prox)."""
    start, grad = _smooth_block()
    lr, lam = 0.05, 0.7
    params = [nn.Parameter(v.clone()) for v in start]
    opt = torch.optim.Adam(params, lr=lr, betas=(0.8, 0.95), eps=1e-6)
    theirs = []
    for _ in range(12):
        theirs.append([p.detach().clone() for p in params])
        for p, g in zip(params, grad([p.detach() for p in params])):
            p.grad = g
        opt.step()
        with torch.no_grad():
            for p in params:
                p.copy_(_soft(p, lr * lam))
    ours = _rule_iterates(Adam(lr=lr, b1=0.8, b2=0.95, eps=1e-6), start, grad, None, 12,
                          prox=lambda v, s: [_soft(t, s * lam) for t in v])
    _assert_trajectories(ours, theirs, 1e-12)


def test_heavy_ball_with_a_prox_is_ipiano():
    r"""iPiano (Ochs et al. 2014): :math:`x^+ = \operatorname{soft}(x - s\nabla f(x) + \beta(x - x^-), s\lambda)`
    with :math:`x^- = x` at the first step, written out by hand."""
    start, grad = _smooth_block()
    step, beta, lam = 0.01, 0.7, 2.0
    expected, x, prev = [], start, start
    for _ in range(15):
        expected.append(x)
        new = [_soft(v - step * g + beta * (v - p), step * lam) for v, g, p in zip(x, grad(x), prev)]
        x, prev = new, x
    ours = _rule_iterates(HeavyBall(beta), start, grad, step, 15, prox=lambda v, t: [_soft(u, t * lam) for u in v])
    _assert_trajectories(ours, expected, 1e-12)


def test_nesterov_default_is_textbook_fista():
    g = _gen(5)
    a, c, lam = torch.randn(11, 6, generator=g, dtype=DT), torch.randn(11, generator=g, dtype=DT), 0.8
    step = 1 / float(torch.linalg.matrix_norm(a, 2) ** 2)

    def grad(v):
        return [a.T @ (a @ v[0] - c)]

    def prox(v, s):
        return [_soft(v[0], s * lam)]

    x0 = torch.randn(6, generator=g, dtype=DT)
    # Beck & Teboulle (2009), FISTA with constant step.
    expected, x_prev, y, t = [], x0, x0, 1.0
    for _ in range(25):
        expected.append([x_prev])
        x = _soft(y - step * grad([y])[0], step * lam)
        t_next = (1 + math.sqrt(1 + 4 * t * t)) / 2
        y = x + (t - 1) / t_next * (x - x_prev)
        x_prev, t = x, t_next
    _assert_trajectories(_rule_iterates(Nesterov(), [x0], grad, step, 25, prox), expected, 1e-12)


# ----------------------------------------------------------------------------- solver state
def test_bcd_refuses_rule_states_made_for_other_blocks():
    """BCD.step completed the state with fresh rule states for the blocks it lacked and took the
    others as they were: a HeavyBall state made for a variable of one entry, stepped on a problem
    whose variable has five, broadcast its x^- over them (x - x^- with shapes (5,) and (1,)),
    silently another iterate; Adam's moments of another parameter shape failed inside torch
    naming nothing. Now a ValueError naming the state and the shapes (TypeError for a state that
    is no dict), before anything moves; after reset_vars the step is the fresh one. Oracle: the
    first HeavyBall step from init, which is the Plain step x - g / L."""
    solver = BCD(var_rule=HeavyBall(0.5), param_rule=Adam(1e-2))
    small, problem = two_blocks(seed=30, n=1, p=2), two_blocks(seed=31)
    state = solver.step(small, solver.init(small))
    before = {b: problem.get(b)[0].clone() for b in problem.blocks()}
    with pytest.raises(ValueError, match=r"^state.var_states\[1\]\['prev'\] holds tensors \['\(1,\) torch.float64 on cpu'\], "
                                         r"but Var\(index=1\) holds \['\(5,\) torch.float64 on cpu'\]: a state made for another"):
        solver.step(problem, state)
    with pytest.raises(ValueError, match=r"^state.param_states\[0\]\['m'\] holds tensors \['\(2,\) "):
        solver.step(problem, solver.reset_vars(state))
    with pytest.raises(TypeError, match=r"^state.var_states\[1\] must be a rule state \(a dict\), got list"):
        solver.step(problem, SolverState(0, {1: [before[Var(1)]]}, {}))
    for b, v in before.items():
        assert torch.equal(problem.get(b)[0], v)
    (g,), = problem.grads([Var(1)])
    want = before[Var(1)] - g / problem.lipschitz(Var(1))
    solver.step(problem, solver.init(problem))
    torch.testing.assert_close(problem.get(Var(1))[0], want, rtol=1e-14, atol=1e-14)
    solver.step(problem, SolverState(1, {1: {"prev": [before[Var(1)]]}}, {}))  # a state of the block's shape passes


@pytest.mark.parametrize("solver", [BCD(var_rule=HeavyBall(0.5)), ISGM(1.0, BCD(var_rule=HeavyBall(0.5)))], ids=["bcd", "isgm"])
def test_solvers_refuse_a_state_that_is_no_solver_state(solver):
    """BCD.step, ISGM.step and their reset_vars read state.var_states / state.iteration: a saved
    state (as_dict's dict) or None failed with "'dict' object has no attribute 'var_states'".
    Now a TypeError naming state (and SolverState.from_dict for a dict), before anything moves.
    Oracle: the step from SolverState.from_dict of that dict, the step from the state itself."""
    problem, twin = two_blocks(seed=40), two_blocks(seed=40)
    state = solver.step(problem, solver.init(problem))
    twin_state = solver.step(twin, solver.init(twin))
    before = [problem.get(b)[0].clone() for b in problem.blocks()]
    for call in (solver.step, lambda _, s: solver.reset_vars(s)):
        with pytest.raises(TypeError, match=r"^state must be a SolverState \(SolverState.from_dict makes one from as_dict's "
                                            r"dict\), got dict$"):
            call(problem, state.as_dict())
        with pytest.raises(TypeError, match=r"^state must be a SolverState, got NoneType$"):
            call(problem, None)
    assert all(torch.equal(problem.get(b)[0], v) for b, v in zip(problem.blocks(), before))
    solver.step(problem, SolverState.from_dict(state.as_dict()))
    solver.step(twin, twin_state)
    for b in problem.blocks():
        assert torch.equal(problem.get(b)[0], twin.get(b)[0])


def test_parameter_state_survives_a_new_batch():
    solver = BCD(var_rule=Nesterov(), param_rule=HeavyBall(0.5))
    first = two_blocks(seed=0)
    state = solver.step(first, solver.init(first))
    second = two_blocks(seed=6)  # a new batch with the same parameter group
    second.set(Params(0), first.get(Params(0)))
    state = solver.reset_vars(state)
    assert state.var_states == {} and set(state.param_states) == {0}
    w, w_prev = first.get(Params(0))[0], state.param_states[0]["prev"][0]
    state = solver.step(second, state)
    # the parameter momentum continued from the first batch: heavy ball at the new variables
    (mats, c), x = second.terms[0], second.get(Var(1))[0]
    g = mats[Params(0)].T @ (mats[Var(1)] @ x + mats[Params(0)] @ w - c)
    expected = w - g / second.lipschitz(Params(0)) + 0.5 * (w - w_prev)
    torch.testing.assert_close(second.get(Params(0))[0], expected, atol=1e-14, rtol=0)


def test_state_round_trips_through_a_weights_only_checkpoint():
    solver = BCD(var_rule=Nesterov(), param_rule=Adam(lr=0.05))
    problem = chain(seed=7)
    state, _ = run(solver, problem, max_iter=4)
    buffer = io.BytesIO()
    torch.save(state.as_dict(), buffer)
    buffer.seek(0)
    loaded = SolverState.from_dict(torch.load(buffer, weights_only=True))
    twin = copy.deepcopy(problem)
    run(solver, problem, state, max_iter=5)
    run(solver, twin, loaded, max_iter=5)
    _assert_close_blocks(twin, {b: problem.get(b)[0] for b in problem.blocks()}, atol=0)


# ----------------------------------------------------------------------------- ISGM
def test_problem_wrappers_copy_and_delegate():
    """ProximalPoint and the trainer's Lipschitz cache hand unknown attributes to the problem they
    wrap; a copy (built before its attributes are set) copies instead of recursing or failing."""
    import copy

    from liftinv.methods import _CachedLipschitz

    problem = two_blocks(seed=8)
    problem.marker = object()  # an attribute beyond the protocol, which only the problem has
    for wrapper in (ProximalPoint(problem, 0.3), _CachedLipschitz(problem)):
        twin = copy.copy(wrapper)
        assert twin.problem is problem and twin.marker is problem.marker
        with pytest.raises(AttributeError, match="no_such_attribute"):
            twin.no_such_attribute


def test_proximal_point_gradients_lipschitz_and_energy():
    problem = two_blocks(seed=8)
    g = _gen(9)
    for b in problem.blocks():
        problem.set(b, [torch.randn(problem.get(b)[0].shape, generator=g, dtype=DT)])
    eta = 0.3
    wrapped = ProximalPoint(problem, eta)
    anchor = problem.get(Params(0))[0].clone()
    w = anchor + torch.randn(anchor.shape, generator=g, dtype=DT)
    wrapped.set(Params(0), [w])
    base_energy = float(problem.energy())
    torch.testing.assert_close(float(wrapped.energy()), base_energy + ((w - anchor) ** 2).sum().item() / (2 * eta))
    assert wrapped.lipschitz(Params(0)) == pytest.approx(problem.lipschitz(Params(0)) + 1 / eta)
    assert wrapped.lipschitz(Var(1)) == problem.lipschitz(Var(1))
    leaves = {b: problem.get(b)[0].detach().requires_grad_() for b in problem.blocks()}
    for b, v in leaves.items():
        problem.set(b, [v])
    autograd = torch.autograd.grad(wrapped.energy(), list(leaves.values()))
    for b, v in leaves.items():
        problem.set(b, [v.detach()])
    for (ours,), theirs in zip(wrapped.grads(problem.blocks()), autograd):
        torch.testing.assert_close(ours, theirs, atol=1e-12, rtol=0)


def test_proximal_point_checks_eta_as_isgm_does():
    """ProximalPoint (public, ISGM's wrapped problem) took any eta: 0 failed at the first gradient
    with a ZeroDivisionError, -1 gave the concave term -|w - w^k|^2/2 (an ascent direction and a
    Lipschitz constant below the problem's, silently), NaN every gradient NaN, a string a bare
    TypeError of '/'. Now ISGM's errors naming eta; a number > 0 (inf included) is taken as its
    float. Oracle: ISGM(eta)'s errors, and 1/eta added to the Lipschitz constant."""
    problem = two_blocks(seed=41)
    for eta, error in [(0, ValueError), (-1.0, ValueError), (math.nan, ValueError), ("x", TypeError), (True, TypeError)]:
        with pytest.raises(error) as want:
            ISGM(eta)
        with pytest.raises(error, match=f"^{re.escape(str(want.value))}$"):
            ProximalPoint(problem, eta)
    for eta in (np.float32(0.5), 2, math.inf):
        wrapped = ProximalPoint(problem, eta)
        assert type(wrapped.eta) is float
        assert wrapped.lipschitz(Params(0)) == problem.lipschitz(Params(0)) + 1 / float(eta)


def test_isgm_step_is_the_proximal_point():
    r"""Many inner sweeps solve :math:`\min_{x,w} \tfrac12|Ax + Bw - c|^2 + \tfrac1{2\eta}|w - w^k|^2`,
    the least-squares problem with the extra rows :math:`[0,\ I/\sqrt\eta]\,[x; w] = w^k/\sqrt\eta`."""
    eta = 0.2
    problem = two_blocks(seed=10)
    anchor = torch.randn(3, generator=_gen(11), dtype=DT)
    problem.set(Params(0), [anchor])
    (mats, c) = problem.terms[0]
    rows = torch.cat([torch.cat([mats[Var(1)], mats[Params(0)]], 1), torch.cat([torch.zeros(3, 5, dtype=DT), torch.eye(3, dtype=DT) / math.sqrt(eta)], 1)])
    target = torch.cat([c, anchor / math.sqrt(eta)])
    solution = torch.linalg.lstsq(rows, target[:, None]).solution[:, 0]
    state = ISGM(eta, inner_steps=400).step(problem, ISGM(eta).init(problem))
    assert state.iteration == 1
    _assert_close_blocks(problem, {Var(1): solution[:5], Params(0): solution[5:]}, atol=1e-9)


def test_isgm_passes_the_expect_hints_on_in_the_last_inner_sweep_only():
    """The inner BCD's ``expect(later)`` hints reach the problem during the last of the
    ``inner_steps`` sweeps only; the closing ``expect(None)`` of every sweep always does."""

    class Expecting(Quadratic):
        def __init__(self, base):
            super().__init__(base.z, base.terms, base.l1)
            self.calls = []

        def expect(self, later):
            self.calls.append(None if later is None else list(later))

    problem = Expecting(chain(seed=15, depth=3))
    ISGM(1.0, inner_steps=3).step(problem, SolverState())
    later = [[Var(1), *[Params(k) for k in (1, 2, 3)]], [Params(k) for k in (1, 2, 3)], []]
    assert problem.calls == [None, None, *later, None]


@pytest.mark.parametrize("solver", [ISGM(1e3), ISGM(2.0, BCD(var_rule=Nesterov()), inner_steps=3)], ids=["large-eta", "nesterov-inner"])
def test_isgm_converges_to_least_squares(solver):
    problem = two_blocks(seed=12)
    run(solver, problem, max_iter=400)
    _assert_close_blocks(problem, problem.least_squares(), atol=1e-7)


# ----------------------------------------------------------------------------- run
def test_run_stops_on_rtol_and_on_callback():
    _, history = run(BCD(), two_blocks(), max_iter=10_000, rtol=1e-6)
    e = history.energy
    changes = [abs(b - a) / abs(a) for a, b in zip(e[:-1], e[1:])]
    assert history.iterations < 10_000 and changes[-1] < 1e-6 and min(changes[:-1]) >= 1e-6
    _, history = run(BCD(), two_blocks(), max_iter=50, callback=lambda state, h: state.iteration == 3)
    assert history.iterations == 3
    state, history = run(BCD(), two_blocks(), max_iter=0)
    assert state.iteration == 0 and history.as_dict() == {"energy": history.energy, "time": [0.0], "gaps": []}
    assert len(history.energy) == 1



def test_run_calls_the_callback_after_every_iteration_also_the_one_that_meets_rtol():
    """As its docstring says, the callback sees every iteration: it was skipped on the iteration
    whose energy change met ``rtol``, so a callback logging the iterates missed the last one."""
    seen = []
    state, history = run(BCD(), two_blocks(), max_iter=10_000, rtol=1e-6,
                         callback=lambda state, h: seen.append((state.iteration, len(h.energy))))
    assert history.iterations < 10_000
    assert seen == [(k, k + 1) for k in range(1, history.iterations + 1)] and state.iteration == history.iterations



def test_run_times_include_the_energy_evaluation():
    """History.time counts the energy evaluation, as documented (on a GPU it is what waits for the
    device): the clock was read before it. A problem whose energy takes 20 ms gives times >= 20 ms."""
    import time

    class SlowEnergy(Quadratic):
        def energy(self):
            time.sleep(0.02)
            return super().energy()

    problem = two_blocks()
    problem.__class__ = SlowEnergy
    _, history = run(BCD(), problem, max_iter=2)
    assert history.time[0] == 0.0 and min(history.time[1:]) >= 0.02


# ----------------------------------------------------------------------------- non-finite guard
class NaNGradient(Quadratic):
    """A chain whose gradient of ``bad`` is NaN from its ``after + 1``-th evaluation on."""

    def __init__(self, base, bad, after):
        super().__init__(base.z, base.terms, base.l1)
        self.bad, self.after, self.calls = bad, after, 0

    def grads(self, blocks):
        out = super().grads(blocks)
        if self.bad in blocks:
            self.calls += 1
            if self.calls > self.after:
                i = list(blocks).index(self.bad)
                out[i] = [torch.full_like(g, math.nan) for g in out[i]]
        return out


@pytest.mark.parametrize("rule", [Plain(), Nesterov()], ids=repr)
@pytest.mark.parametrize("bad", [Var(2), Params(3)], ids=repr)
def test_non_finite_update_raises_and_keeps_last_finite_values(rule, bad):
    problem = NaNGradient(chain(seed=13), bad, after=2)
    solver = BCD(var_rule=rule, param_rule=rule)
    state, _ = run(solver, problem, max_iter=2)
    kept = problem.get(bad)[0].clone()
    name = f"{type(bad).__name__}\\({bad.index}\\)"
    with pytest.raises(FloatingPointError, match=f"non-finite values in {name} at iteration 3; the last finite state was kept"):
        run(solver, problem, state, max_iter=5)
    assert all(torch.isfinite(problem.get(b)[0]).all() for b in problem.blocks())
    torch.testing.assert_close(problem.get(bad)[0], kept, atol=0, rtol=0)


def test_finite_check_is_exact_when_the_sum_overflows():
    from operators.checks import all_finite

    big = torch.full((4,), 3e38, dtype=torch.float32)  # finite entries, infinite sum
    assert not math.isfinite(float(big.sum())) and all_finite(big)
    for bad in (math.nan, math.inf, -math.inf):
        t = torch.ones(5, dtype=torch.float32)
        t[3] = bad
        assert not all_finite(t)


class NaNProx(Quadratic):
    """A problem whose prox of ``bad`` returns NaN from its ``after + 1``-th call on."""

    def __init__(self, base, bad, after):
        super().__init__(base.z, base.terms, base.l1)
        self.bad, self.after, self.calls = bad, after, 0

    def prox(self, block, values, step):
        out = super().prox(block, values, step)
        if block == self.bad:
            self.calls += 1
            if self.calls > self.after:
                out = [torch.full_like(v, math.nan) for v in out]
        return out


def test_non_finite_prox_output_keeps_the_values_not_the_lookahead():
    """A NaN update of a Nesterov block raises and leaves the block at its value before the
    step, not at the look-ahead point y = x + beta (x - x^-) where its gradient was taken."""
    problem = NaNProx(chain(seed=14), Var(2), after=3)
    solver = BCD(var_rule=Nesterov())
    state, _ = run(solver, problem, max_iter=3)
    kept = problem.get(Var(2))[0].clone()
    assert not torch.equal(Nesterov().lookahead([kept], state.var_states[2])[0], kept)  # beta_3 > 0
    with pytest.raises(NonFiniteError, match=r"Var\(2\) at iteration 4;"):
        solver.step(problem, state)
    torch.testing.assert_close(problem.get(Var(2))[0], kept, atol=0, rtol=0)


@pytest.mark.parametrize("schedule, groups", [(Simultaneous(), 2), (TopDown(), 4)])
def test_finite_checks_read_the_device_once_per_group_and_check(host_reads, schedule, groups):
    """The gradients and the updates of a group are each checked by one host read (a device sync
    on a GPU), whatever its number of blocks: one group of all the variables and one of all the
    parameters (Simultaneous), or three variable groups and the parameters' (TopDown)."""
    problem = chain(seed=17)
    solver = BCD(var_rule=Adam(lr=0.01), param_rule=Adam(lr=0.01), schedule=schedule)  # no Lipschitz constants
    state = solver.init(problem)
    with host_reads() as reads:
        solver.step(problem, state)
    assert len(reads) == 2 * groups


def test_nan_gradient_in_a_jacobi_group_leaves_every_adam_state_finite():
    """All gradients of a Jacobi group are checked before any rule runs: a NaN gradient of the
    group's last block raises before Adam updates the moments (in place) of the blocks before it."""
    problem = NaNGradient(chain(seed=16), Var(3), after=1)
    solver = BCD(var_rule=Adam(lr=0.01), schedule=Simultaneous())
    state = solver.step(problem, solver.init(problem))
    before = {i: [t.clone() for t in st["m"] + st["v"]] for i, st in state.var_states.items()}
    with pytest.raises(NonFiniteError, match=r"Var\(3\) at iteration 2;"):
        solver.step(problem, state)
    for i, st in state.var_states.items():
        assert st["count"] == 1
        for t, b in zip(st["m"] + st["v"], before[i]):
            torch.testing.assert_close(t, b, atol=0, rtol=0)


class Linear:
    r""":math:`\langle c, x\rangle + \lambda|x|_1`: affine smooth part, Lipschitz constant 0."""

    def __init__(self, c, x, lam):
        self.c, self.x, self.lam = c, x, lam

    def blocks(self):
        return [Var(1)]

    def get(self, block):
        return [self.x]

    def set(self, block, values):
        self.x = values[0]

    def grads(self, blocks):
        return [[self.c.clone()] for _ in blocks]

    def lipschitz(self, block):
        return 0.0

    def prox(self, block, values, step):
        return [_soft(values[0], step * self.lam)]

    def energy(self):
        return (self.c * self.x).sum() + self.lam * self.x.abs().sum()


def test_zero_lipschitz_block_takes_the_step_scale_as_step():
    r"""With :math:`L_b = 0` (affine smooth part) the step is ``step_scale`` itself:
    :math:`x^+ = \operatorname{soft}(x - s c, s\lambda)` with :math:`s` = ``step_scale``."""
    g = _gen(50)
    c, x0 = torch.randn(6, generator=g, dtype=DT), torch.randn(6, generator=g, dtype=DT)
    problem = Linear(c, x0, 0.3)
    solver = BCD(step_scale=0.4)
    solver.step(problem, solver.init(problem))
    torch.testing.assert_close(problem.x, _soft(x0 - 0.4 * c, 0.4 * 0.3), atol=1e-15, rtol=0)


def test_power_iteration_reads_the_device_once(host_reads):
    """The iterations run without host reads (device syncs on a GPU): one read of the estimate at
    the end; a map that zeroes its argument gives 0, a non-finite one NaN, no iteration 0."""
    from liftinv.problem import power_iteration

    m = torch.randn(5, 5, generator=_gen(7), dtype=DT)
    a = m @ m.T
    v = [torch.randn(5, generator=_gen(8), dtype=DT)]
    with host_reads() as reads:
        lam, w = power_iteration(lambda u: [a @ u[0]], v, 200)
    assert len(reads) == 1
    assert lam == pytest.approx(float(torch.linalg.eigvalsh(a)[-1]), rel=1e-12)
    torch.testing.assert_close(a @ (w[0] / w[0].norm()), lam * w[0] / w[0].norm())
    lam, w = power_iteration(lambda u: [0 * u[0]], v, 3)
    assert lam == 0.0 and not w[0].any()
    assert math.isnan(power_iteration(lambda u: [math.nan * u[0]], v, 3)[0])
    lam, w = power_iteration(lambda u: [a @ u[0]], v, 0)
    assert lam == 0.0 and w is v


@pytest.mark.parametrize("scale", [1e21, 1e35, 1e-25])
def test_power_iteration_estimates_eigenvalues_whose_square_leaves_the_dtype(scale):
    """power_iteration normalised each iterate by sqrt(<v, v>), which overflows in float32 once
    |v| passes 1.8e19 (underflows below 1e-19): the iterate became 0 and the estimate of a map
    with eigenvalue 1e21 (or 1e-25) came out 0, which BCD takes for an affine block (step
    step_scale, 1e21 times too long; a float32 MLP whose second layer has penalty weight 1e21 got
    constant 0 for Var(1)). Oracle: the float64 estimate of the same map from the same start, and
    the float64 problem's constant (rel 1e-5); in the normal range the estimate is bit for bit
    that of the unscaled iteration (the scaling by a power of two is exact)."""
    from liftinv.problem import power_iteration

    d = torch.linspace(0.1, 1.0, 20, dtype=DT)
    start = torch.randn(20, generator=_gen(9), dtype=DT)
    want = power_iteration(lambda u: [scale * d * u[0]], [start], 8)[0]
    lam = power_iteration(lambda u: [scale * d.float() * u[0]], [start.float()], 8)[0]
    assert lam == pytest.approx(want, rel=1e-5)
    lam, w = power_iteration(lambda u: [d * u[0]], [start], 3)
    v = start
    for _ in range(3):  # the unscaled iteration, written out
        v = v / (v * v).sum().sqrt()
        ref, v = float((v * (d * v)).sum()), d * v
    assert lam == ref and torch.equal(w[0], v)
    if scale == 1e21:
        from liftinv.activations import ReLU
        from liftinv.architectures import MLP
        from liftinv.problem import LiftedProblem

        constants = []
        for dtype in (torch.float32, DT):
            net = MLP([6, 8, 8, 6], [ReLU(), ReLU()], generator=_gen(3)).to(dtype)
            net.layers[1].weight = scale
            u = torch.rand(4, 6, dtype=dtype, generator=_gen(0))
            problem = LiftedProblem(net, net.feasible(u), free_vars=[1, 2], train_params=True, power_iters=20)
            constants.append(problem.lipschitz(Var(1)))
        assert constants[0] == pytest.approx(constants[1], rel=1e-5)


def test_disjoint_layers_is_a_first_fit_on_the_layers_of_each_group():
    """Parameters go, in order, to the first group none of whose blocks shares a layer with
    them: layers {1}, {2}, {2}, {3} give groups [P1, P2, P4], [P3]."""
    from liftinv.solvers import bcd

    class Layers:
        def param_layers(self, index):
            return {1: [1], 2: [2], 3: [2], 4: [3]}[index]

    params = [Params(i) for i in (1, 2, 3, 4)]
    assert bcd._disjoint_layers(Layers(), params) == [[Params(1), Params(2), Params(4)], [Params(3)]]


def test_isgm_non_finite_error_names_the_outer_iteration():
    problem = NaNGradient(chain(seed=13), Var(1), after=5)  # 2 inner sweeps per outer step
    with pytest.raises(NonFiniteError, match=r"Var\(1\) at iteration 3;"):
        run(ISGM(1.0, inner_steps=2), problem, max_iter=10)


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "make, error, message",
    [
        (lambda: HeavyBall(1.2), ValueError, r"beta must be in \[0, 1\), got 1.2"),
        (lambda: HeavyBall(-0.1), ValueError, "beta must be in"),
        (lambda: HeavyBall("0.5"), TypeError, "beta must be a real number, got str"),
        (lambda: Nesterov(1.0), ValueError, "beta must be in"),
        (lambda: Adam(lr=0.0), ValueError, "lr must be a positive finite number, got 0.0"),
        (lambda: Adam(lr=math.inf), ValueError, "lr must be"),
        (lambda: Adam(b1=1.0), ValueError, "b1 must be in"),
        (lambda: Adam(b2=-0.5), ValueError, "b2 must be in"),
        (lambda: Adam(eps=0.0), ValueError, "eps must be"),
        (lambda: BCD(step_scale=0.0), ValueError, r"step_scale must be in \(0, 2\), got 0.0"),
        (lambda: BCD(step_scale=2.0), ValueError, "step_scale must be in"),
        (lambda: BCD(step_scale=math.nan), ValueError, "step_scale must be in"),
        (lambda: BCD(var_sweeps=0), ValueError, "var_sweeps must be an integer >= 1, got 0"),
        (lambda: BCD(var_rule=Plain), TypeError, "var_rule must be a Rule, got type"),
        (lambda: BCD(param_rule=torch.optim.Adam), TypeError, "param_rule must be a Rule"),
        (lambda: BCD(schedule="topdown"), TypeError, "schedule must be a Schedule, got str"),
        (lambda: ISGM(0.0), ValueError, "eta must be positive, got 0.0"),
        (lambda: ISGM(-1.0), ValueError, "eta must be positive"),
        (lambda: ISGM(1.0, inner_steps=0), ValueError, "inner_steps must be an integer >= 1, got 0"),
        (lambda: ISGM(1.0, inner=Plain()), TypeError, "inner must be a BCD, got Plain"),
        (lambda: run(BCD(), two_blocks(), max_iter=-1), ValueError, "max_iter must be an integer >= 0, got -1"),
        (lambda: run(BCD(), two_blocks(), max_iter=2.5), ValueError, "max_iter must be"),
        (lambda: run(BCD(), two_blocks(), max_iter=3, rtol=-1.0), ValueError, "rtol must be a finite number >= 0, got -1.0"),
        (lambda: run(BCD(), two_blocks(), max_iter=3, rtol=math.nan), ValueError, "rtol must be"),
        (lambda: run(BCD(), two_blocks(), max_iter=3, callback=3), TypeError, "callback must be callable, got int"),
    ],
)
def test_invalid_hyper_parameters(make, error, message):
    with pytest.raises(error, match=message):
        make()


# ----------------------------------------------------------------------------- lifted problems
def _linear(n, m, g):
    lin = nn.Linear(n, m, dtype=DT)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(m, n, generator=g, dtype=DT) / math.sqrt(n))
        lin.bias.copy_(torch.randn(m, generator=g, dtype=DT))
    return lin


def _one_layer_least_squares(seed):
    from liftinv.activations import Identity
    from liftinv.layer import Layer
    from liftinv.network import LiftedNetwork
    from liftinv.problem import LiftedProblem

    g = _gen(seed)
    u, y = torch.randn(23, 4, generator=g, dtype=DT), torch.randn(23, 3, generator=g, dtype=DT)
    lin = _linear(4, 3, g)
    net = LiftedNetwork([Layer([0], [lin], Identity())])
    problem = LiftedProblem(net, [u, y], free_vars=(), train_params=True)
    design = torch.cat([u, torch.ones(23, 1, dtype=DT)], 1)
    sol = torch.linalg.lstsq(design, y).solution
    return problem, lin, sol[:4].T, sol[4]


@pytest.mark.parametrize("solver", [BCD(), ISGM(1e3, inner_steps=2)], ids=["bcd", "isgm"])
def test_one_layer_identity_is_least_squares(solver):
    problem, lin, w_star, b_star = _one_layer_least_squares(seed=14)
    assert problem.blocks() == [Params(0)]
    _, history = run(solver, problem, max_iter=120)
    torch.testing.assert_close(lin.weight.detach(), w_star, atol=1e-8, rtol=0)
    torch.testing.assert_close(lin.bias.detach(), b_star, atol=1e-8, rtol=0)
    assert len(history.gaps) == history.iterations + 1 and len(history.gaps[-1]) == 1


def test_two_layer_relu_energy_decreases_monotonically():
    from liftinv.activations import Identity, ReLU
    from liftinv.layer import Layer
    from liftinv.network import LiftedNetwork
    from liftinv.problem import LiftedProblem

    g = _gen(15)
    u, y = torch.randn(19, 5, generator=g, dtype=DT), torch.randn(19, 3, generator=g, dtype=DT)
    net = LiftedNetwork([Layer([0], [_linear(5, 7, g)], ReLU()), Layer([1], [_linear(7, 3, g)], Identity())])
    xs = net.feasible(u)
    xs[2] = y
    problem = LiftedProblem(net, xs, free_vars=(1,), train_params=True)
    assert problem.blocks() == [Var(1), Params(0), Params(1)]
    _, history = run(BCD(), problem, max_iter=30)
    e = torch.tensor(history.energy)
    assert (e[1:] <= e[:-1] + 1e-12 * e[0]).all()
    assert e[-1] < 0.5 * e[0]


@pytest.mark.parametrize("iters", [0, -2, 2.5, True])
def test_lifted_problem_refuses_power_iters_that_are_not_a_positive_integer(iters):
    """``power_iters=0`` (or negative) ran no power iteration: every Lipschitz constant was 0, so
    BCD stepped by ``step_scale`` whatever the curvature; 2.5 failed later in ``range``."""
    from liftinv.problem import LiftedProblem

    net, problem, u, y = _two_layer_relu(19)
    exact = float(torch.linalg.matrix_norm(net.layer(2).maps[0].weight.detach(), 2) ** 2)
    assert problem.lipschitz(Var(1)) >= exact * (1 - 1e-6)  # the oracle: |W_2|^2, with the default iterations
    with pytest.raises(ValueError, match=r"power_iters must be an integer >= 1, got "):
        LiftedProblem(net, problem.xs, free_vars=(1,), train_params=True, power_iters=iters)


def test_lifted_problem_takes_integer_variable_indices_only():
    """``free_vars=(1.5,)`` made a block Var(1.5) that failed in its first sweep ('list indices
    must be integers'), ``("1",)`` failed in sorted(); NumPy integers are indices like ints: the
    same blocks and the same sweep as with the Python ints."""
    import numpy as np

    from liftinv.problem import LiftedProblem

    for bad in [(1.5,), ("1",), (True,)]:
        net, problem, u, y = _two_layer_relu(20)
        with pytest.raises(TypeError, match=r"free_vars must hold variable indices \(integers\), got "):
            LiftedProblem(net, problem.xs, free_vars=bad, train_params=False)
    moved = []
    for index in (1, np.int64(1)):
        net, problem, u, y = _two_layer_relu(20)
        other = LiftedProblem(net, problem.xs, free_vars=(index,), train_params=False)
        assert other.blocks() == [Var(1)] and type(other.blocks()[0].index) is int
        BCD().step(other, BCD().init(other))
        moved.append(other.xs[1])
    assert torch.equal(*moved) and not torch.equal(moved[0], problem.xs[1])


def test_lifted_problem_refuses_a_cache_flag_that_is_not_a_bool():
    """``cache_preactivations="False"`` (or 0.0, None) was taken by truth value: the string kept
    the cache the caller meant to turn off. Lifted(...) already refused it; a bool still works."""
    from liftinv.problem import LiftedProblem

    net, problem, u, y = _two_layer_relu(21)
    for bad in ("False", 0.0, None):
        with pytest.raises(TypeError, match=r"cache_preactivations must be a bool, got "):
            LiftedProblem(net, problem.xs, free_vars=(1,), train_params=True, cache_preactivations=bad)
    assert not LiftedProblem(net, problem.xs, free_vars=(1,), train_params=True, cache_preactivations=False).cache_preactivations


def test_penalties_in_slices_of_the_batch_equal_the_unsliced_penalties(monkeypatch):
    import liftinv.problem

    net, problem, u, y = _two_layer_relu(16)
    xs = [problem.xs[i] for i in range(3)]
    xs[1] = xs[1] + 0.1 * torch.randn(xs[1].shape, generator=_gen(17), dtype=DT)  # nonzero penalties
    problem.set(Var(1), [xs[1]])
    monkeypatch.setattr(liftinv.problem, "PENALTY_SLICE", 2 * 7)  # two samples of the hidden layer
    torch.testing.assert_close(problem.penalties(), net.penalties(xs), rtol=1e-12, atol=0)
    assert problem.penalties()[0].abs().min() > 0


def _two_layer_relu(seed):
    from liftinv.activations import Identity, ReLU
    from liftinv.layer import Layer
    from liftinv.network import LiftedNetwork
    from liftinv.problem import LiftedProblem

    g = _gen(seed)
    u, y = torch.randn(11, 5, generator=g, dtype=DT), torch.randn(11, 3, generator=g, dtype=DT)
    first, second = _linear(5, 7, g), _linear(7, 3, g)
    net = LiftedNetwork([Layer([0], [first], ReLU()), Layer([1], [second], Identity())])
    problem = LiftedProblem(net, net.feasible(u), free_vars=(1,), train_params=True)
    problem.set(Var(2), [y])
    return net, problem, u, y


def _adam_first_step(p, grad, lr):
    return p - lr * grad / (grad.abs() + 1e-8)  # m and v bias-corrected to g and g^2


def test_interleaved_sweep_moves_each_layer_with_its_input_then_the_first_layer():
    r"""Chain u -> x_1 -> x_2 = y: groups {x_1, Theta_2} (Jacobi, both from the forward pass) and
    then {Theta_1} at the moved x_1; the oracle is autograd of the lifted energy."""
    from liftinv.penalty import BREGMAN

    net, problem, u, y = _two_layer_relu(seed=16)
    first, second = net.layer(1), net.layer(2)
    x1 = problem.xs[1].clone()
    s = 1 / problem.lipschitz(Var(1))
    lr = 0.01
    leaf = x1.clone().requires_grad_()
    top = 0.5 * ((second.maps[0](leaf) - y) ** 2).sum()
    gx, gw2, gb2 = torch.autograd.grad(top, [leaf, *second.maps[0].parameters()])
    a1 = first.maps[0](u).detach()
    x1_new = BREGMAN.prox_output(first.activation, a1, x1 - s * gx, s)
    expected2 = [_adam_first_step(p.detach(), g, lr) for p, g in zip(second.maps[0].parameters(), (gw2, gb2))]
    bottom = BREGMAN.value(first.activation, x1_new, first.maps[0](u)).sum()
    grads1 = torch.autograd.grad(bottom, list(first.maps[0].parameters()))
    expected1 = [_adam_first_step(p.detach(), g, lr) for p, g in zip(first.maps[0].parameters(), grads1)]

    solver = BCD(param_rule=Adam(lr), interleave=True)
    solver.step(problem, solver.init(problem))
    torch.testing.assert_close(problem.xs[1], x1_new, rtol=1e-12, atol=1e-12)
    for p, e in zip([*first.maps[0].parameters(), *second.maps[0].parameters()], expected1 + expected2):
        torch.testing.assert_close(p.detach(), e, rtol=1e-12, atol=1e-12)


def test_interleaved_shared_parameters_move_after_the_layers_they_feed():
    r"""Chain u -> x_1 -> x_2 -> x_3 = y with :math:`W` shared by layers 2 (output x_2) and 3
    (input x_2): :math:`W` waits for x_2 to move (with it, layer 2's residual would still be that
    of the forward pass, zero) and joins x_1's group, so its step is Adam's first step on the
    gradient of the energy at the moved x_2 and the forward x_1; the oracle is autograd."""
    from liftinv.activations import Identity, ReLU
    from liftinv.layer import Layer
    from liftinv.network import LiftedNetwork
    from liftinv.penalty import BREGMAN
    from liftinv.problem import LiftedProblem

    g = _gen(18)
    u, y = torch.randn(11, 5, generator=g, dtype=DT), torch.randn(11, 4, generator=g, dtype=DT)
    first, shared = _linear(5, 4, g), _linear(4, 4, g)
    layers = [Layer([0], [first], ReLU()), Layer([1], [shared], ReLU()), Layer([2], [shared], Identity())]
    net = LiftedNetwork(layers)
    problem = LiftedProblem(net, net.feasible(u), free_vars=(1, 2), train_params=True)
    problem.forward(u)
    problem.set(Var(3), [y])
    x1 = problem.xs[1].clone()
    lr = 0.01
    solver = BCD(param_rule=Adam(lr), interleave=True)
    state = solver.init(problem)
    original = problem.set
    order, seen = [], {}

    def recording(block, values):
        order.append(block)
        seen[block] = values[0].clone()
        original(block, values)

    problem.set = recording
    start = [p.detach().clone() for p in shared.parameters()]
    solver.step(problem, state)
    assert order == [Var(2), Var(1), Params(1), Params(0)]
    params = [p.clone().requires_grad_() for p in start]
    lin = lambda x: x @ params[0].T + params[1]  # noqa: E731
    x2 = seen[Var(2)]
    energy = BREGMAN.value(net.layer(2).activation, x2, lin(x1)).sum() + BREGMAN.value(net.layer(3).activation, y, lin(x2)).sum()
    grads = torch.autograd.grad(energy, params)
    for p, p0, gr in zip(shared.parameters(), start, grads):
        torch.testing.assert_close(p.detach(), _adam_first_step(p0, gr, lr), rtol=1e-12, atol=1e-12)


def test_interleaved_sweep_costs_one_forward_pass_of_the_chain():
    """After problem.forward, an interleaved sweep evaluates no pre-activation again; the
    sweep that moves the parameters after the variables evaluates the layers fed by x_1 again."""
    counts = {}
    for interleave in (True, False):
        net, problem, u, y = _two_layer_relu(seed=17)
        problem.forward(u)
        problem.set(Var(2), [y])
        problem.lipschitz(Var(1))
        calls = []
        for k in (1, 2):
            layer = net.layer(k)
            layer.preactivation = (lambda f, k: lambda *a, **kw: (calls.append(k), f(*a, **kw))[1])(layer.preactivation, k)
        solver = BCD(param_rule=Adam(0.01), interleave=interleave)
        solver.step(problem, solver.init(problem))
        counts[interleave] = calls
    assert counts == {True: [], False: [2]}


def test_interleave_needs_param_inputs():
    with pytest.raises(TypeError, match="interleave needs a problem with param_inputs and param_outputs, got Quadratic"):
        run(BCD(interleave=True), two_blocks(), max_iter=1)
    with pytest.raises(TypeError, match="interleave must be a bool, got 1"):
        BCD(interleave=1)
    with pytest.raises(TypeError, match="defer_params must be a bool, got 1"):
        BCD(defer_params=1)


def _exact_resnet_descent(monkeypatch=None) -> float:
    """Largest energy increase over 10 plain BCD sweeps (step_scale 1.9) on the exact-form ResNet
    from a perturbed top variable (two starts)."""
    from liftinv.architectures import ARCHITECTURES
    from liftinv.problem import LiftedProblem

    ex = ARCHITECTURES["resnet_conv_exact"](_gen(0))
    net, depth, g, worst = ex.network.double(), ex.network.depth, _gen(3), 0.0
    saved = [p.detach().clone() for p in net.parameters()]
    for _ in range(2):
        xs = net.feasible(ex.u.double(), ex.y)
        xs[-1] = net.layer(depth).activation.project_domain(xs[-1] + 0.1 * torch.randn(xs[-1].shape, generator=g, dtype=DT))
        problem = LiftedProblem(net, xs, ex.y, free_vars=range(1, depth), train_params=True)
        solver = BCD(Plain(), Plain(), step_scale=1.9)
        state, energies = solver.init(problem), [float(problem.energy())]
        for _ in range(10):
            state = solver.step(problem, state)
            energies.append(float(problem.energy()))
        worst = max(worst, max(b - a for a, b in zip(energies, energies[1:])))
        with torch.no_grad():
            for p, s in zip(net.parameters(), saved):
                p.copy_(s)
    return worst


def test_parameter_blocks_sharing_a_layer_move_in_separate_groups_and_the_energy_decreases(monkeypatch):
    """The exact ResNet's layer j reads the input map P and every earlier residual map W_i: one
    Jacobi group of all parameter blocks, each with its own step 1.9/L_b, raised the energy; in
    groups with disjoint layers every sweep decreases it."""
    from liftinv.architectures import ARCHITECTURES
    from liftinv.problem import LiftedProblem
    from liftinv.solvers import bcd

    ex = ARCHITECTURES["resnet_conv_exact"](_gen(0))
    problem = LiftedProblem(ex.network, ex.network.feasible(ex.u, ex.y), ex.y, free_vars=(), train_params=True)
    params = problem.blocks()
    groups = bcd._disjoint_layers(problem, params)
    assert [b for grp in groups for b in grp] == params and len(groups) > 1
    for grp in groups:
        layers = [k for b in grp for k in problem.param_layers(b.index)]
        assert len(layers) == len(set(layers))
    assert _exact_resnet_descent() <= 0
    monkeypatch.setattr(bcd, "_disjoint_layers", lambda problem, params: [params])  # one Jacobi group
    assert _exact_resnet_descent() > 1e-6


def _variable_problem(name, seed, invert, scale=1.0, power_iters=8):
    """The LiftedProblem of architecture ``name`` on its variables only (all but the output with
    ``invert``, the hidden ones otherwise), from its forward pass with every variable moved by
    ``scale`` times Gaussian noise (auxiliaries kept in the activations' domains)."""
    from liftinv.architectures import ARCHITECTURES
    from liftinv.problem import LiftedProblem

    ex = ARCHITECTURES[name](_gen(seed))
    net, g = ex.network, _gen(100 + seed)
    xs = [x + scale * torch.randn(x.shape, generator=g, dtype=x.dtype) for x in net.feasible(ex.u, ex.y)]
    xs[1:] = [net.layer(k).activation.project_domain(x) for k, x in enumerate(xs[1:], 1)]
    free = range(0 if invert else 1, net.depth)
    return LiftedProblem(net, xs, ex.y, free_vars=free, train_params=False, power_iters=power_iters)


def _recorded_groups(problem, solver, steps=1):
    """The Jacobi groups of ``steps`` steps of ``solver`` (the blocks of each ``grads`` call)."""
    seen, grads = [], problem.grads
    problem.grads = lambda blocks: seen.append(list(blocks)) or grads(blocks)
    state = solver.init(problem)
    for _ in range(steps):
        state = solver.step(problem, state)
    del problem.grads
    return seen


def _penalties_entered(net, i):
    """Oracle: the layers whose penalty variable ``i`` enters (its own, those that read it)."""
    return {k for k in range(1, net.depth + 1) if k == i or i in net.layer(k).inputs}


@pytest.mark.parametrize("schedule", [OddEven(), Simultaneous()], ids=["oddeven", "simultaneous"])
@pytest.mark.parametrize("invert", [False, True], ids=["train", "invert"])
@pytest.mark.parametrize("name", ["resnet", "resnet_tied", "resnet_exact", "resnet_conv_exact", "pnn",
                                  "unrolled_primal_dual"])
def test_variable_groups_of_a_sweep_share_no_layer_penalty(name, invert, schedule):
    """On networks whose layers read several variables, each Jacobi group of variables that BCD
    moves is a part, in order, of one group of the schedule, and no two of its blocks enter the
    same layer's penalty (they were: OddEven grouped u_0 and u_1 of the penalty-form ResNet,
    both in the penalty of u_1 = u_0 + V_1 z_1)."""
    problem = _variable_problem(name, 0, invert, scale=0.0)
    net, free = problem.network, [Var(i) for i in problem.free_vars]
    groups = _recorded_groups(problem, BCD(schedule=schedule))
    assert sorted(b.index for g in groups for b in g) == list(problem.free_vars)
    for g in groups:
        whole = next(w for w in schedule(free) if g[0] in w)
        assert g == [b for b in whole if b in g]
        for n, a in enumerate(g):
            for b in g[n + 1:]:
                assert not _penalties_entered(net, a.index) & _penalties_entered(net, b.index), (a, b)


def test_oddeven_splits_the_coupled_group_of_the_penalty_form_resnet_first_fit():
    """Variables x, u_0, z_1, u_1, z_2, u_2, output: OddEven's [u_0, u_1, u_2] has u_0, u_1 in the
    penalty of u_1 and u_1, u_2 in that of u_2; first fit gives [u_0, u_2], [u_1]; [z_1, z_2]
    (penalties {2, 3} and {4, 5}) stays whole."""
    problem = _variable_problem("resnet", 0, invert=False, scale=0.0)
    assert _recorded_groups(problem, BCD(schedule=OddEven())) == [[Var(1), Var(5)], [Var(3)], [Var(2), Var(4)]]


@pytest.mark.parametrize("name, invert", [("resnet", False), ("resnet_tied", True)])
def test_plain_oddeven_bcd_decreases_the_energy_on_a_penalty_form_resnet(name, invert):
    """Plain BCD with step_scale 1.9 and exact constants (200 power iterations on the variables'
    normal maps) decreases the energy at every sweep (descent lemma, groups of uncoupled blocks).
    With u_0 and u_1 in one Jacobi group it rose (seed 0 of the ResNet at sweep 9; the tied one,
    inverted, at sweep 2 for most seeds, then diverged)."""
    for seed in range(4):
        problem = _variable_problem(name, seed, invert, power_iters=50)
        solver = BCD(schedule=OddEven(), step_scale=1.9)
        state, energies = solver.init(problem), [float(problem.energy())]
        for _ in range(10):
            state = solver.step(problem, state)
            energies.append(float(problem.energy()))
        assert all(b <= a + 1e-12 * energies[0] for a, b in zip(energies, energies[1:])), (seed, energies)


@pytest.mark.parametrize("schedule", [OddEven(), TopDown(), BottomUp()], ids=["oddeven", "topdown", "bottomup"])
@pytest.mark.parametrize("name", ["mlp", "lifted_convnet"])
def test_schedules_on_chains_keep_their_groups_and_iterates(name, schedule):
    """On chains the schedules' groups share no layer: the same groups, and the iterates bit for
    bit those of BCD with the split turned off (``majorises_coupling``)."""
    runs = []
    for split in (True, False):
        problem = _variable_problem(name, 3, invert=True, scale=0.1)
        if not split:
            problem.majorises_coupling = True
        runs.append((_recorded_groups(problem, BCD(schedule=schedule, var_rule=Nesterov()), steps=3), problem.xs))
    (groups, xs), (whole, reference) = runs
    assert groups == whole == 3 * schedule([Var(i) for i in range(problem.network.depth)])
    assert all(torch.equal(a, b) for a, b in zip(xs, reference))


def test_joint_problem_keeps_the_simultaneous_group_whole():
    """JointProblem's constants majorise the coupling: BCD moves all its variables in one group,
    as the inversion's joint steps need."""
    from liftinv.inversion_bcd import JointProblem

    plain = _variable_problem("resnet_exact", 0, invert=True, scale=0.1)
    problem = JointProblem(plain.network, plain.xs, None, free_vars=plain.free_vars, train_params=False)
    assert _recorded_groups(problem, BCD(schedule=Simultaneous()), steps=2) == 2 * [[Var(i) for i in plain.free_vars]]
    assert len(_recorded_groups(plain, BCD(schedule=Simultaneous()))) > 1


def test_isgm_with_infinite_eta_is_bcd_on_parameter_blocks_sharing_a_layer():
    """``ISGM(inf)`` with one inner sweep is plain BCD (module docstring), also where parameter
    blocks share layers (the exact ResNet): its inner BCD splits them into the same Jacobi groups."""
    from liftinv.architectures import ARCHITECTURES
    from liftinv.problem import LiftedProblem

    values = []
    for solver in (BCD(), ISGM(math.inf)):
        ex = ARCHITECTURES["resnet_conv_exact"](_gen(0))
        net = ex.network
        xs = net.feasible(ex.u, ex.y)
        xs[-1] = xs[-1] + 0.1 * torch.randn(xs[-1].shape, generator=_gen(1), dtype=DT)
        problem = LiftedProblem(net, xs, ex.y, free_vars=range(1, net.depth), train_params=True)
        solver.step(problem, solver.init(problem))
        values.append([p.detach() for p in net.parameters()])
    assert all(torch.equal(p, q) for p, q in zip(*values))


def test_var_sweeps_are_passes_over_the_variables_before_the_parameters():
    """One step of BCD(var_sweeps=2) moves the variables as two steps of BCD() without parameter
    blocks do: two passes over the variables, and the parameters only after both."""
    from liftinv.architectures import ARCHITECTURES
    from liftinv.problem import LiftedProblem

    def problem(train_params: bool) -> LiftedProblem:
        ex = ARCHITECTURES["mlp"](_gen(40))
        net = ex.network
        xs = net.feasible(ex.u, ex.y)
        xs[-1] = xs[-1] + 0.1 * torch.randn(xs[-1].shape, generator=_gen(41), dtype=xs[-1].dtype)
        return LiftedProblem(net, xs, ex.y, free_vars=range(1, net.depth), train_params=train_params)

    twice = problem(True)
    BCD(var_sweeps=2).step(twice, BCD(var_sweeps=2).init(twice))
    reference = problem(False)
    for _ in range(2):
        BCD().step(reference, BCD().init(reference))
    for i in reference.free_vars:
        torch.testing.assert_close(twice.xs[i], reference.xs[i], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "make",
    [
        lambda n: Adam(lr=n.float64(0.01), b1=n.float32(0.5), b2=n.float64(0.25), eps=n.float64(1e-8)),
        lambda n: Nesterov(beta=n.float64(0.5)),
        lambda n: HeavyBall(beta=n.float32(0.5)),
        lambda n: BCD(step_scale=n.float64(1.5), var_sweeps=n.int64(2)),
        lambda n: ISGM(eta=n.float64(0.5), inner_steps=n.int32(2)),
        lambda n: Lifted(sweeps_per_batch=n.int64(2), power_iters=n.int16(3), lipschitz_every=n.int64(4)),
        lambda n: Backprop(lr=n.float64(0.01), momentum=n.float32(0.5)),
    ],
    ids=["adam", "nesterov", "heavy-ball", "bcd", "isgm", "lifted", "backprop"],
)
def test_numpy_numbers_in_methods_are_stored_as_python_numbers(make):
    """Adam(lr=np.float64(0.01)) kept the NumPy number, so its repr, the method text that a
    checkpoint records and a resume compares, differed from Adam(lr=0.01)'s and the resume was
    refused with a confusing diff. Oracle: the same method built from Python numbers (a stand-in
    module whose float64/int64... return Python numbers of the same value)."""
    import types

    import numpy as np

    python = types.SimpleNamespace(**{name: (float if "float" in name else int) for name in
                                      ("float16", "float32", "float64", "int16", "int32", "int64")})
    assert repr(make(np)) == repr(make(python))


@pytest.mark.parametrize("constant", [math.inf, math.nan])
def test_bcd_refuses_a_lipschitz_constant_that_is_not_finite(constant):
    """BCD took the step step_scale / L for L > 0, else step_scale: an Inf constant (a curvature
    beyond the dtype's largest number) gave the step 0, so the block never moved, and a NaN one
    the step step_scale, without a word. A float32 MLP whose second layer has penalty weight 1e38
    has such a parameter block: its curvature is 7.9e38 in float64 (the oracle), its float32
    constant NaN. Now NonFiniteError names the block and constant, and the problem keeps its
    values."""
    c, x0 = torch.ones(3, dtype=DT), torch.zeros(3, dtype=DT)
    problem = Linear(c, x0, 0.3)
    problem.lipschitz = lambda block: constant
    with pytest.raises(NonFiniteError, match=rf"non-finite Lipschitz constant {constant} in Var\(1\) at iteration 1"):
        BCD().step(problem, SolverState())
    with pytest.raises(NonFiniteError, match=rf"non-finite Lipschitz constant {constant} in Var\(1\) at iteration 1"):
        run(ISGM(1.0), problem, max_iter=1)  # the outer iteration, the constant kept
    assert torch.equal(problem.x, x0)
    if constant == math.inf:
        return
    from liftinv.activations import ReLU
    from liftinv.architectures import MLP
    from liftinv.problem import LiftedProblem

    lips = []
    for dtype in (DT, torch.float32):
        net = MLP([6, 8, 8, 6], [ReLU(), ReLU()], generator=_gen(3)).to(dtype)
        net.layers[1].weight = 1e38
        u = torch.rand(4, 6, dtype=dtype, generator=_gen(0))
        problem = LiftedProblem(net, net.feasible(u), free_vars=[1, 2], train_params=True, power_iters=20)
        lips.append(problem.lipschitz(Params(1)))
    assert torch.finfo(torch.float32).max < lips[0] < math.inf and math.isnan(lips[1])
    before = [p.detach().clone() for p in net.parameters()]
    with pytest.raises(NonFiniteError, match=r"non-finite Lipschitz constant nan in Params\(1\) at iteration 1"):
        run(BCD(), problem, max_iter=1)
    assert all(torch.equal(p, q) for p, q in zip(net.parameters(), before))
