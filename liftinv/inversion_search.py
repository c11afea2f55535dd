r"""Choice of the regularisation weight by the discrepancy principle (used by
:func:`liftinv.invert` and the gradient baseline).

Per sample, find :math:`\alpha` with :math:`d(u_\alpha) = \tau\delta`, where :math:`u_\alpha` is the
(warm-started) solution for the weight :math:`\alpha` and :math:`d` the discrepancy. The problems
of the samples of a batch are independent, so all samples are searched at once, each with its
own bracket.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import torch
from torch import Tensor

from operators.checks import scaled_norm

_TINY, _HUGE = 1e-300, 1e300
#: Relative change of the discrepancy below which a factor-10 step of the weight counts as stalled.
STALL = 0.02


def search_alpha(solve: Callable[[Tensor], Tensor], delta: Tensor, alpha0: Tensor, *, tau: float, rtol: float,
                 max_search: int, unsettled: Callable[[], bool] = lambda: False,
                 max_alpha: float = torch.finfo(torch.float64).max) -> Tensor:
    r"""Discrepancy principle: per sample, :math:`\alpha` with :math:`d(u_\alpha) = \tau\delta`.

    ``solve(alpha)`` solves for the weights ``alpha`` (shape ``(B,)``, warm-started from the
    previous solve) and returns the discrepancy :math:`d` per sample. Starting from ``alpha0``,
    :math:`\alpha` is multiplied (divided) by 10 until the target is bracketed, then refined by
    regula falsi on :math:`\log d` against :math:`\log\alpha`, the new point kept in the middle 80 %
    of the bracket (in :math:`\log\alpha`); a sample is done when
    :math:`|d - \tau\delta| \le \text{rtol}\,\tau\delta`. A target out of reach (dividing
    :math:`\alpha` by 10 changes :math:`d` by less than ``STALL`` relatively, e.g. a solver that cannot
    fit the data more closely within its budget) stops the search for that sample at the larger
    weight, which fits as well; symmetrically when multiplying by 10 does not raise :math:`d`. Such
    a plateau counts only once an earlier step in the same direction changed :math:`d` by more
    than ``STALL`` (the search came down, or up, a slope onto it): a :math:`d` flat from the first
    step is the other end of the curve, where the regulariser decides the solution (e.g. an
    ``L1`` weight above :math:`\|J^*f\|_\infty`: the input 0 for every such weight), and the target
    lies on, not off, the way. A step up that would take :math:`\alpha` above ``max_alpha`` (the
    largest number of the dtype the weights are applied in) is not taken: the target is out of
    reach upward (on such a flat curve, a noise level claimed far too large), the search stops for
    that sample at its last weight and a ``RuntimeWarning`` names it. Stops
    when every sample is done or after ``max_search`` solves. :math:`\delta = 0` gives
    :math:`\alpha = 0`. Runs in float64.

    ``unsettled()`` tells, after each solve, whether it stopped at its iteration or time limit
    rather than at its tolerance. Then :math:`d` is that of an unconverged iterate, and a
    discrepancy above the target may only mean the solver has not fitted the data yet: such a
    sample is solved once more at the same weight (warm-started, the solve goes on from where it
    stopped) before its weight is lowered. Without this, time-limited solves of deep lifted
    problems drove the weights down by orders of magnitude, to solutions that overfit the noise.
    And when every sample is done after such a solve, the remaining solves go on at the same
    weights (the caller keeps, among solves that fit, the last of the largest weight), rather
    than return an iterate that stopped at its limit; unless every sample has :math:`\delta = 0`:
    its weight 0 is given, not searched (there is nothing to fit), so one solve at
    :math:`\alpha = 0`, as for an explicit weight 0, is the whole search.

    Returns:
        The weights of the last solve.
    """
    delta = delta.double()
    target = tau * delta
    zero = delta == 0
    alpha = torch.where(zero, torch.zeros_like(delta), alpha0.to(delta))
    lo, hi = torch.zeros_like(delta), torch.full_like(delta, math.inf)
    d_lo, d_hi = torch.zeros_like(delta), torch.zeros_like(delta)
    frozen, repeat, sloped = torch.zeros_like(zero), torch.zeros_like(zero), torch.zeros_like(zero)
    capped = torch.zeros_like(zero)  # stopped below max_alpha with d under the target
    for k in range(max_search):
        d = solve(alpha).to(delta)
        done = zero | frozen | ((d - target).abs() <= rtol * target)
        settled = not unsettled()
        if (bool(done.all()) and (settled or bool(zero.all()))) or k == max_search - 1:
            break
        above = ~done & (d > target)
        repeat = torch.zeros_like(zero) if settled else above & ~repeat  # once per weight
        high = above & ~repeat  # alpha too large
        low = ~done & ~above
        down, up = high & (lo == 0) & torch.isfinite(hi), low & torch.isinf(hi) & (lo > 0)  # before a bracket
        flat_down, flat_up = d >= (1 - STALL) * d_hi, d <= (1 + STALL) * d_lo
        stalled_down, stalled_up = down & flat_down & sloped, up & flat_up & sloped
        sloped = sloped | (down & ~flat_down) | (up & ~flat_up)
        restore = hi.clone()
        frozen = frozen | stalled_down | stalled_up
        high, low = high & ~stalled_down, low & ~stalled_up
        hi, d_hi = torch.where(high, alpha, hi), torch.where(high, d, d_hi)
        lo, d_lo = torch.where(low, alpha, lo), torch.where(low, d, d_lo)
        log_lo, log_hi = lo.clamp_min(_TINY).log(), hi.clamp_max(_HUGE).log()
        slope = (d_hi.clamp_min(_TINY).log() - d_lo.clamp_min(_TINY).log()) / (log_hi - log_lo)
        step = (target.clamp_min(_TINY).log() - d_lo.clamp_min(_TINY).log()) / slope
        frac = torch.where(torch.isfinite(step) & (slope > 0), step / (log_hi - log_lo), torch.full_like(step, 0.5))
        inner = (log_lo + frac.clamp(0.1, 0.9) * (log_hi - log_lo)).exp()
        outer = torch.where(torch.isfinite(hi), hi / 10, lo * 10)
        bracketed = (lo > 0) & torch.isfinite(hi)
        new = torch.where(done | stalled_up | repeat, alpha, torch.where(bracketed, inner, outer))
        new = torch.where(stalled_down, restore, new)
        over = new > max_alpha  # only a step up (lo * 10) leaves the range
        capped, frozen = capped | over, frozen | over
        alpha = torch.where(over, alpha, new)
    if bool(capped.any()):
        index = capped.nonzero().flatten().tolist()
        warnings.warn(f"discrepancy principle: the target tau * delta is out of reach for sample(s) {index}: their "
                      f"discrepancy stays below it (d = {d[capped].tolist()}, tau * delta = {target[capped].tolist()}) "
                      f"up to the largest weight the dtype holds, alpha = {alpha[capped].tolist()}; the noise level "
                      "is likely too large", RuntimeWarning, stacklevel=2)
    return alpha


def lipschitz_estimate(forward: Callable[[Tensor], Tensor], like: Tensor, iters: int = 15) -> float:
    r""":math:`\|J_N(v)\|_2` of ``forward`` at a random input :math:`v` uniform in :math:`[0, 1]` (a
    typical image) of the shape of ``like``, by power iteration on :math:`J^\top J` (autograd JVP
    and VJP, fixed seed): an estimate of the Lipschitz constant of the network. Norms are taken
    after an exact scaling by a power of two (:func:`~operators.checks.scaled_norm`): in float32
    the squares of :math:`J^\top J w` overflowed for networks with Lipschitz constants of about
    4e9 and more, and underflowed for about 3e-10 and less (the estimate came out NaN)."""
    g = torch.Generator(device=like.device).manual_seed(0)
    v = torch.rand(like.shape, dtype=like.dtype, device=like.device, generator=g)
    w = torch.randn(v.shape, dtype=v.dtype, device=v.device, generator=g)
    _, pullback = torch.func.vjp(forward, v)
    lam = 0.0
    for _ in range(iters):
        w = w / scaled_norm(w).clamp_min(_TINY)
        with warnings.catch_warnings():  # torch's forward-mode AD scripts a helper on first use
            warnings.filterwarnings("ignore", message="`torch.jit.script` is deprecated", category=FutureWarning)
            _, jw = torch.func.jvp(forward, (v,), (w,))
        w = pullback(jw)[0].detach()
        lam = float(scaled_norm(w))
    return lam**0.5
