"""Adam on the few numbers a loss-weighting resolver learns (one per task), on the host.

Uncertainty weighting trains ``T`` log-variances and FAMO ``T`` logits with Adam, one step
per training step. ``torch.optim.Adam`` spends most of its time on such a vector in its
own machinery (hooks, profiling scopes, kernel dispatch), several times the arithmetic;
this is the same update, written out in float64 NumPy.

The update is ``torch.optim.Adam``'s (Kingma & Ba, ICLR 2015, https://arxiv.org/abs/1412.6980;
L2 ``weight_decay`` added to the gradient, no AMSGrad):

.. math::

    g \\leftarrow g + \\lambda x, \\quad m \\leftarrow m + (1 - \\beta_1)(g - m), \\quad
    v \\leftarrow \\beta_2 v + (1 - \\beta_2) g^2, \\quad
    x \\leftarrow x - \\frac{\\eta}{1 - \\beta_1^t} \\,
    \\frac{m}{\\sqrt{v} / \\sqrt{1 - \\beta_2^t} + \\epsilon}.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = ["HostAdam"]


class HostAdam:
    """Adam on a float64 vector held on the host.

    Args:
        values: the starting vector (copied).
        lr: learning rate :math:`\\eta`.
        betas: :math:`(\\beta_1, \\beta_2)`.
        eps: :math:`\\epsilon`.
        weight_decay: L2 penalty :math:`\\lambda` added to the gradient.

    :attr:`values` is a tensor view of the vector: it changes in place with each
    :meth:`step`.
    """

    def __init__(
        self,
        values: Tensor,
        *,
        lr: float,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        self.lr = lr
        self.betas = betas
        self.eps = eps
        self.weight_decay = weight_decay
        self._x = values.detach().to("cpu", torch.float64).numpy().copy().reshape(-1)
        self._m = np.zeros_like(self._x)
        self._v = np.zeros_like(self._x)
        self._t = 0
        self.values = torch.from_numpy(self._x)

    def step(self, grad: np.ndarray) -> None:
        """One Adam update of :attr:`values` along ``grad`` (a float64 array of its shape)."""
        beta1, beta2 = self.betas
        if self.weight_decay != 0:
            grad = grad + self.weight_decay * self._x
        self._t += 1
        self._m += (1 - beta1) * (grad - self._m)
        self._v *= beta2
        self._v += (1 - beta2) * grad * grad
        step_size = self.lr / (1 - beta1**self._t)
        denominator = np.sqrt(self._v) / (1 - beta2**self._t) ** 0.5 + self.eps
        self._x += -step_size * (self._m / denominator)

    def state_dict(self) -> dict[str, Any]:
        """The moments and the step count (the vector itself is its owner's to save)."""
        return {
            "step": self._t,
            "exp_avg": torch.from_numpy(self._m.copy()),
            "exp_avg_sq": torch.from_numpy(self._v.copy()),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output, or a ``torch.optim.Adam`` state dict of one
        parameter (as checkpoints written before this class hold)."""
        if "state" in state_dict:  # torch.optim.Adam's own format
            states = state_dict["state"]
            state_dict = states[0] if states else {"step": 0}
        step = state_dict["step"]
        self._t = int(step.item() if isinstance(step, Tensor) else step)
        for name, target in (("exp_avg", self._m), ("exp_avg_sq", self._v)):
            if name in state_dict:
                target[:] = state_dict[name].detach().to("cpu", torch.float64).reshape(-1).numpy()
            else:
                target[:] = 0.0
