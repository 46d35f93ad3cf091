"""Uncertainty weighting (UW): task weights from learned homoscedastic uncertainties."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from gradsurgery.resolvers._adam import HostAdam
from gradsurgery.resolvers._losses import checked_losses
from gradsurgery.resolvers._options import real_option
from gradsurgery.resolvers._tasks import raise_if_other_tasks
from gradsurgery.resolvers.base import GramResolver

__all__ = ["UncertaintyWeighting"]


class UncertaintyWeighting(GramResolver):
    r"""Uncertainty weighting (Kendall, Gal, Cipolla, CVPR 2018, https://arxiv.org/abs/1705.07115).

    Each task has a learned log-variance :math:`s_i = \log \sigma_i^2`, and the model
    minimises

    .. math::

        \mathcal{L} = \sum_i \frac{L_i}{2 e^{s_i}} + \frac{s_i}{2},
        \qquad\text{so}\qquad d = \sum_i \frac{1}{2 e^{s_i}}\, g_i .

    The log-variances are trained on the same objective by their own Adam optimiser, one
    step per call, from the losses this resolver receives:
    :math:`\partial \mathcal{L} / \partial s_i = \frac12 - \frac{L_i}{2 e^{s_i}}`, which
    drives :math:`e^{s_i}` toward :math:`L_i`: a task with a large loss gets a small weight.
    Each call returns the weights of the current :math:`s` and then updates :math:`s`, i.e.
    the model and :math:`s` take simultaneous gradient steps on :math:`\mathcal{L}`.

    Args:
        lr: learning rate of the log-variances' Adam optimiser (betas 0.9, 0.999). The paper
            trains :math:`s` with the model's optimiser: use the model's learning rate.
        initial_log_variance: the starting :math:`s_i` (default 0, i.e. :math:`\sigma = 1`
            and weights 1/2; LibMTL starts at -0.5).

    ``losses`` are required and must be non-negative (:math:`\mathcal{L}` is unbounded below
    in :math:`s_i` when :math:`L_i < 0`: shift such losses first). ``primary`` is ignored:
    every task is weighted alike. Cost: one backward pass of :math:`\sum_i w_i L_i` through
    :func:`gradsurgery.backward` (no task gradients are formed), :math:`O(T)` for the
    weights. State: the log-variances and their Adam moments (:meth:`state_dict`), restored
    exactly; a call with another number of tasks is refused (``load_state_dict({})``
    starts over).

    Example:
        >>> import torch, gradsurgery
        >>> resolver = gradsurgery.get_resolver("uw", lr=0.1)
        >>> G = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
        >>> gradsurgery.resolve(G, method=resolver, losses=[4.0, 0.25])  # s = 0: weights 1/2
        tensor([0.5000, 0.5000])
        >>> resolver.log_variances  # Adam's first step: lr * sign(1/2 - L/2)
        tensor([ 0.1000, -0.1000], dtype=torch.float64)
    """

    promises = frozenset({"scale_equivariant", "permutation_invariant"})
    needs_losses = True
    uses_gram = False

    def __init__(self, lr: float = 1e-3, initial_log_variance: float = 0.0) -> None:
        self.lr = real_option("lr", lr, minimum=0, above_minimum=True)
        self.initial_log_variance = real_option(
            "initial_log_variance", initial_log_variance, minimum=-100, maximum=100
        )
        self.log_variances: Tensor | None = None
        self._adam: HostAdam | None = None

    def _options(self) -> dict[str, Any]:
        return {"lr": self.lr, "initial_log_variance": self.initial_log_variance}

    def _start(self, log_variances: Tensor, optimizer: dict[str, Any] | None = None) -> None:
        """Learn ``log_variances`` from here, with Adam's state ``optimizer`` if given
        (checked before anything is assigned: a bad one leaves the resolver as it was)."""
        adam = HostAdam(log_variances, lr=self.lr)
        if optimizer is not None:
            adam.load_state_dict(optimizer)
        self._adam = adam
        self.log_variances = adam.values  # a view: each Adam step updates it

    def weights(self, gram: Tensor, *, primary: int | None, losses: Tensor | None) -> Tensor:
        assert losses is not None  # the front door checks needs_losses
        T = gram.shape[-1]
        values = checked_losses(
            losses,
            "UncertaintyWeighting needs losses >= 0 (shift the losses by a constant first)",
            strictly_positive=False,
        )
        if self.log_variances is None:
            self._start(torch.full((T,), self.initial_log_variance, dtype=torch.float64))
        assert self.log_variances is not None and self._adam is not None
        raise_if_other_tasks(self, self.log_variances.shape[0], T)
        precision = np.exp(-self.log_variances.numpy())
        weights = 0.5 * precision
        # d/ds_i of L_i / (2 e^{s_i}) + s_i / 2.
        self._adam.step(0.5 - 0.5 * values.numpy() * precision)
        return torch.from_numpy(weights).to(gram.device).expand(gram.shape[:-1]).clone()

    def state_dict(self) -> dict[str, Any]:
        if self.log_variances is None or self._adam is None:
            return {}
        return {"log_variances": self.log_variances.clone(), "optimizer": self._adam.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if not state_dict:
            self.log_variances = self._adam = None
            return
        if set(state_dict) != {"log_variances", "optimizer"}:
            raise ValueError(
                "UncertaintyWeighting.load_state_dict: expected keys ['log_variances', "
                f"'optimizer'], got {sorted(state_dict)}"
            )
        values = state_dict["log_variances"].detach().to("cpu", torch.float64).clone()
        self._start(values, state_dict["optimizer"])
