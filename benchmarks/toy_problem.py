"""The 2-D two-task toy problem of CAGrad, Nash-MTL, FAMO and Aligned-MTL.

For :math:`x = (x_1, x_2)` and :math:`\\varepsilon = 5 \\cdot 10^{-6}`:

.. math::

    h_1 &= \\log\\max(|0.5(-x_1 - 7) - \\tanh(-x_2)|, \\varepsilon) + 6 \\\\
    h_2 &= \\log\\max(|0.5(-x_1 + 3) + \\tanh(-x_2) + 2|, \\varepsilon) + 6 \\\\
    q_1 &= ((x_1 - 7)^2 + 0.1 (x_2 + 8)^2) / 10 - 20 \\\\
    q_2 &= ((x_1 + 7)^2 + 0.1 (x_2 + 8)^2) / 10 - 20 \\\\
    c_1 &= \\max(\\tanh(x_2 / 2), 0), \\quad c_2 = \\max(\\tanh(-x_2 / 2), 0) \\\\
    f_1 &= c_1 h_1 + c_2 q_1, \\quad f_2 = c_1 h_2 + c_2 q_2

For :math:`x_2 > 0` each loss has a narrow log-valley; for :math:`x_2 < 0` they are
quadratics. The Pareto set is :math:`x_1 \\in [-7, 7]` near :math:`x_2 \\approx -8.4`;
:math:`f_1` is minimised near :math:`(7, -8.43)` and :math:`f_2` near :math:`(-7, -8.43)`.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["NASH_MTL_STARTS", "toy_losses"]

NASH_MTL_STARTS: tuple[tuple[float, float], ...] = (
    (-8.5, 7.5),
    (0.0, 0.0),
    (9.0, 9.0),
    (-7.5, -0.5),
    (9.0, -1.0),
)
"""The five starting points of the Nash-MTL protocol."""

_EPS = 5e-6


def toy_losses(x: Tensor, scale: float = 1.0) -> tuple[Tensor, Tensor]:
    """The two losses at ``x`` (shape ``(..., 2)``); ``f_1`` is multiplied by ``scale``."""
    x1, x2 = x[..., 0], x[..., 1]
    h1 = torch.log(torch.clamp(torch.abs(0.5 * (-x1 - 7) - torch.tanh(-x2)), min=_EPS)) + 6
    h2 = torch.log(torch.clamp(torch.abs(0.5 * (-x1 + 3) + torch.tanh(-x2) + 2), min=_EPS)) + 6
    q1 = ((x1 - 7) ** 2 + 0.1 * (x2 + 8) ** 2) / 10 - 20
    q2 = ((x1 + 7) ** 2 + 0.1 * (x2 + 8) ** 2) / 10 - 20
    c1 = torch.clamp(torch.tanh(x2 / 2), min=0)
    c2 = torch.clamp(torch.tanh(-x2 / 2), min=0)
    f1 = c1 * h1 + c2 * q1
    f2 = c1 * h2 + c2 * q2
    return scale * f1, f2
