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

from gradsurgery.resolvers._options import integer_option

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
        parameter (as checkpoints written before this class hold). Everything is checked
        before anything is assigned.

        Raises:
            TypeError: a ``step`` that is not a whole number.
            ValueError: no ``step``, a negative one, or a moment that is not a tensor of
                the vector's size.
        """
        if "state" in state_dict:  # torch.optim.Adam's own format
            states = state_dict["state"]
            state_dict = states[0] if states else {"step": 0}
        if "step" not in state_dict:
            raise ValueError(f"Invalid Adam state: no 'step' in {sorted(state_dict)}")
        step = state_dict["step"]
        step = step.item() if isinstance(step, Tensor) and step.numel() == 1 else step
        if isinstance(step, float) and step.is_integer():  # torch.optim.Adam's float step
            step = int(step)
        t = integer_option("Adam state 'step'", step, minimum=0)
        moments = []
        for name in ("exp_avg", "exp_avg_sq"):
            moment = state_dict.get(name)
            if moment is None:
                moments.append(np.zeros_like(self._m))
                continue
            if not isinstance(moment, Tensor) or moment.numel() != self._m.size:
                shape = tuple(moment.shape) if isinstance(moment, Tensor) else type(moment)
                raise ValueError(
                    f"Invalid Adam state {name!r}: {shape} (expected {self._m.size} values)"
                )
            moments.append(moment.detach().to("cpu", torch.float64).reshape(-1).numpy())
        self._t = t
        self._m[:], self._v[:] = moments
