r"""Unrolled primal-dual reconstruction for :math:`y = Ax + \text{noise}`.

Condat-Vu iterations for :math:`\min_x \tfrac12\|Ax - y\|^2 + \iota_{[0,1]}(x) + \lambda\|Lx\|_1`,
unrolled with one learnable convolution :math:`L_k` per iteration:

.. math::
    x_{k+1} = \operatorname{clip}_{[0,1]}\big(x_k - \tau(A^*(Ax_k - y) + L_k^* u_k)\big), \qquad
    u_{k+1} = \operatorname{clip}_{[-\lambda,\lambda]}\big(u_k + s L_k(2x_{k+1} - x_k)\big).

Every update is a layer (affine map of earlier states, then a prox), so each gets a penalty and
an auxiliary variable; :math:`A` enters only through :math:`A` and :math:`A^*`.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from deepinv.models import Reconstructor
from torch import Tensor, nn

from liftinv.activations import Clip
from liftinv.affine import ConvAdjoint, GradientStep, MeasurementAdjoint, ScaledConv
from liftinv.architectures._common import check_linear_physics, normalised_conv, odd_int, positive_float, positive_int
from liftinv.layer import Layer
from liftinv.network import LiftedNetwork
from liftinv.validation import check_flag, reference_tensor, sample_shape
from operators.blur import Blur
from operators.checks import Stamp, check_tensor, opnorm, state_of, values_trusted
from operators.mri import MRI
from operators.radon import Radon
from operators.spec import check_spec, physics_spec

#: Relative tolerance on :math:`\|A\|^2` of a bound physics against the construction physics'
#: (rounding of another dtype and of the Lanczos estimate: about 1e-5 in float32).
NORM_RTOL = 1e-4


def _check_loaded_steps(net: "UnrolledPrimalDual", state_dict, prefix: str, *_) -> None:
    r"""Refuse, before anything is loaded, a state dict whose gradient steps' :math:`\tau` is not
    ``net.tau`` (to a relative :data:`NORM_RTOL`): the dual maps keep the :math:`\tau` and
    :math:`s` of ``net``'s construction, so the state of a network built for an operator of
    another norm would mix two step sizes."""
    for name, m in net.named_modules(prefix=prefix.rstrip(".")):
        tau = state_dict.get(f"{name}.tau") if isinstance(m, GradientStep) else None
        if isinstance(tau, Tensor) and tau.numel() == 1 and not math.isclose(float(tau), net.tau, rel_tol=NORM_RTOL):
            raise ValueError(f"state dict entry {name}.tau = {float(tau):.9g}, but this network's steps are "
                             f"tau = {net.tau:.9g} (1/||A||^2 of its physics): the state is of a network built for "
                             "an operator of another norm; build the network for that operator")


class UnrolledPrimalDual(Reconstructor):
    r"""Unrolled primal-dual network :math:`y \mapsto x_K`, a deepinv ``Reconstructor``.

    With :math:`u_0 = 0` and :math:`x_0 = A^* y` (or 0), ``n_iter`` = :math:`K` primal updates and
    :math:`K - 1` dual updates (the last dual update would not reach the output). The steps are
    :math:`\tau = 1/\|A\|^2` (stored in the default dtype by the ``GradientStep`` s) and
    :math:`s = \|A\|^2 / 2.02`, computed from ``physics`` at construction (by Lanczos,
    ``operators.checks.opnorm``) and kept: the operator the network applies must keep that norm
    (to a relative :data:`NORM_RTOL` on :math:`\|A\|^2`), whether another physics is bound or
    the bound one changes (``update_parameters``, an edit of its tensors, another dtype), which
    :meth:`bind` and :meth:`lifted_inputs` check (the norm is estimated again only when the
    physics was replaced, or one of its parameters and buffers changed in place or was replaced
    by one of other values, since the last check, in the network's dtype and on its device
    where the physics has none of its own; a physics that is no ``nn.Module`` is checked when
    bound only), and a loaded state dict must hold the network's :math:`\tau` (to
    :data:`NORM_RTOL`; ``load_state_dict`` refuses another before loading anything); the
    :math:`L_k` start with norm 1 (see ``conv_norm``), so the Condat-Vu condition
    :math:`1/\tau - s\|L_k\|^2 > \|A\|^2/2` holds at initialisation.

    The lifted network is :attr:`lifted`: variable 0 is :math:`x_0`, then
    :math:`x_1, u_1, x_2, u_2, \dots, u_{K-1}, x_K`. The layer of :math:`x_{k+1}` reads
    :math:`(x_k, u_k)` through ``GradientStep`` (:math:`x - \tau A^*Ax`) and
    ``ConvAdjoint(L_k, -tau)``, with data map :math:`\tau A^* y`; the layer of :math:`u_{k+1}`
    reads :math:`(x_{k+1}, x_k, u_k)` through :math:`2sL_k`, :math:`-sL_k` and the identity.
    Trainers use it as::

        u, y = net.lifted_inputs(y, physics)
        xs = net.lifted.feasible(u, y)      # xs[-1] == net(y, physics)

    Args:
        physics: a deepinv ``LinearPhysics`` (``A``, ``A_adjoint``) on images of ``img_size``.
        n_iter: number of iterations :math:`K \ge 2`.
        features: channels of :math:`L_k x` (dual variables).
        img_size: ``(C, H, W)`` of the images :math:`x`.
        threshold: :math:`\lambda > 0`.
        kernel_size: odd kernel size of the :math:`L_k`.
        adjoint_init: start from :math:`x_0 = A^* y` (else :math:`x_0 = 0`).
        generator: seeds the initialisation; ``None`` uses PyTorch's global generator.
    """

    def __init__(
        self,
        physics,
        n_iter: int,
        features: int,
        img_size: Sequence[int],
        *,
        threshold: float = 0.05,
        kernel_size: int = 3,
        adjoint_init: bool = True,
        generator: torch.Generator | None = None,
    ):
        super().__init__()
        check_linear_physics(physics)
        n_iter, features = positive_int("n_iter", n_iter), positive_int("features", features)
        if n_iter < 2:
            raise ValueError(f"n_iter must be at least 2, got {n_iter}")
        self.img_size = sample_shape("img_size", img_size)
        if len(self.img_size) != 3:
            raise ValueError(f"img_size must be (C, H, W), got {self.img_size}")
        threshold, kernel_size = positive_float("threshold", threshold), odd_int("kernel_size", kernel_size)
        self.adjoint_init = check_flag("adjoint_init", adjoint_init)
        try:
            norm2 = opnorm(physics, (1, *self.img_size)) ** 2
        except ValueError as err:  # the operator's check of an image of this size
            raise ValueError(f"img_size={self.img_size} does not fit physics: {err}") from err
        except RuntimeError as err:  # e.g. float64 functions given opnorm's default-dtype start vector
            raise TypeError(
                f"physics failed on a {torch.get_default_dtype()} image of size {self.img_size} ({err}); a physics "
                "without a dtype of its own (a deepinv LinearPhysics of plain functions) is applied in torch's "
                "default dtype while the network is built: build it under torch.set_default_dtype() of the "
                "physics' dtype, then convert the network (.to(dtype))"
            ) from err
        if not norm2 > 0:
            raise ValueError(f"physics has operator norm 0 on images of size {self.img_size}")
        steps = [GradientStep(physics, 1.0 / norm2) for _ in range(n_iter)]
        self.tau, self.s = float(steps[0].tau), norm2 / 2.02  # tau as the steps store it
        convs = [normalised_conv(self.img_size[0], features, kernel_size, generator) for _ in range(n_iter)]
        layers, x_prev, u_prev = [], 0, None
        for k, step in enumerate(steps):
            inputs, maps = [x_prev], [step]
            if u_prev is not None:
                inputs, maps = inputs + [u_prev], maps + [ConvAdjoint(convs[k], -self.tau)]
            layers.append(Layer(inputs, maps, Clip(0.0, 1.0), data_map=MeasurementAdjoint(step)))
            x_new = len(layers)
            if k == n_iter - 1:
                break
            maps = [ScaledConv(convs[k], 2 * self.s), ScaledConv(convs[k], -self.s)]
            inputs = [x_new, x_prev]
            if u_prev is not None:
                inputs, maps = inputs + [u_prev], maps + [nn.Identity()]
            layers.append(Layer(inputs, maps, Clip(-threshold, threshold)))
            x_prev, u_prev = x_new, len(layers)
        self.lifted = LiftedNetwork(layers, input_shape=self.img_size)
        self._norm2, self._checked = norm2, Stamp(state_of(physics), keep=True)
        self.register_load_state_dict_pre_hook(_check_loaded_steps)

    def check_norm(self, physics) -> None:
        """Raise unless ``physics`` has the norm the steps were computed for (see the class
        docstring); nothing to do when it is the physics last checked, unchanged."""
        state = state_of(physics)
        if self._checked.matches(state):
            return
        if self._checked.same_values(state):  # tensors replaced by equal ones (deepinv's update_parameters)
            self._checked = Stamp(state, keep=True)
            return
        # a physics of plain functions has no dtype or device: it computes in the network's
        norm2 = opnorm(physics, (1, *self.img_size), like=reference_tensor(self.lifted)) ** 2
        if not math.isclose(norm2, self._norm2, rel_tol=NORM_RTOL):
            raise ValueError(
                f"physics has operator norm ||A||^2 = {norm2:.9g} on images of size {self.img_size}, but the network's "
                f"steps tau = 1/||A||^2 and s = ||A||^2/2.02 were computed for ||A||^2 = {self._norm2:.9g}: build the "
                "network for this operator"
            )
        self._checked = Stamp(state, keep=True)

    @property
    def physics(self):
        """The physics the gradient steps use now."""
        return self.lifted.layer(1).maps[0].physics

    def bind(self, physics) -> None:
        r"""Use ``physics`` in every gradient step from now on. The steps keep their :math:`\tau`
        and :math:`s`, computed for the construction physics, so a ``Radon``, ``Blur`` or ``MRI``
        must have the spec of the operator bound now (its dtype and device may differ), and every
        operator must have the norm of the construction physics (see the class docstring).

        Raises:
            TypeError: ``physics`` has no callable ``A`` and ``A_adjoint``.
            ValueError: ``physics`` has another spec than the bound operator, or another norm
                than the construction physics.
        """
        check_linear_physics(physics)
        bound = self.physics
        if physics is not bound and all(isinstance(p, (Radon, Blur, MRI)) for p in (bound, physics)):
            expected, actual = physics_spec(bound), physics_spec(physics)
            actual["dtype"] = expected["dtype"]  # a copy in another dtype is the same operator
            check_spec(expected, actual, context="physics must have the spec of the operator the network is bound to:")
        self.check_norm(physics)
        for m in self.lifted.modules():
            if isinstance(m, GradientStep):
                m.bind(physics)

    def lifted_inputs(self, y: Tensor, physics=None) -> tuple[Tensor, Tensor]:
        """Bind ``physics`` if given, and return the network input :math:`x_0` and the
        measurements for ``self.lifted.feasible(x0, y)``.

        Raises:
            ValueError: the physics (given or bound) has another norm than the construction
                physics (see the class docstring).
        """
        check_tensor(y, "y")
        if physics is not None:
            self.bind(physics)
        else:
            self.check_norm(self.physics)
        with values_trusted():  # y was scanned for NaN/Inf just above
            x0 = self.physics.A_adjoint(y)
        return (x0 if self.adjoint_init else torch.zeros_like(x0)), y

    def forward(self, y: Tensor, physics=None) -> Tensor:
        r"""Reconstruction :math:`x_K` from measurements ``y`` (``physics`` as in :meth:`lifted_inputs`)."""
        return self.lifted(*self.lifted_inputs(y, physics))
