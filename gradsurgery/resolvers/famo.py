"""FAMO: fast adaptive multitask optimisation, loss weights that equalise log-loss decrease."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from gradsurgery.resolvers._adam import HostAdam
from gradsurgery.resolvers._options import real_option
from gradsurgery.resolvers._tasks import raise_if_other_tasks
from gradsurgery.resolvers.base import GramResolver

__all__ = ["FAMO"]


class FAMO(GramResolver):
    r"""FAMO (Liu, Feng, Stone, Liu, NeurIPS 2023, https://arxiv.org/abs/2306.03792).

    Task logits :math:`\xi \in \mathbb{R}^T` (zero at the start),
    :math:`z = \operatorname{softmax}(\xi)`, and with :math:`L_i^*` a lower bound of task
    :math:`i`'s loss, the model descends
    :math:`\sum_i z_i \log(L_i - L_i^*) / c` with :math:`c = \sum_j z_j / (L_j - L_j^*)` held
    constant, i.e.

    .. math::

        d = \sum_i w_i g_i, \qquad
        w_i = \frac{z_i / (L_i - L_i^*)}{\sum_j z_j / (L_j - L_j^*)}
            = \operatorname{softmax}\bigl(\xi - \log(L - L^*)\bigr)_i ,

    weights that sum to 1. After the model step, with :math:`L_i'` the losses at the new
    parameters, the logits take one Adam step (learning rate ``lr``, L2 weight decay
    ``gamma``, as ``torch.optim.Adam``) along

    .. math::

        \nabla_\xi = J_{\operatorname{softmax}}(\xi)^\top \delta, \qquad
        \delta_i = \log(L_i - L_i^*) - \log(L_i' - L_i^*),

    which moves weight toward the tasks whose log-loss fell least.

    **How the "after step" losses arrive.** Either call :meth:`update` with the losses
    re-evaluated on the same batch after ``optimizer.step()`` (the paper's protocol: one extra
    forward pass), or do nothing: the next call's ``losses`` (the next batch's, which the
    glue passes automatically) then serve as :math:`L'` for the previous step before the new
    weights are computed. An explicit :meth:`update` is used once and is not repeated by the
    next call.

    Args:
        lr: learning rate of the logits' Adam optimiser (paper default 0.025).
        gamma: the logits' weight decay :math:`\gamma` (0.01 in the official ``famo.py``;
            LibMTL uses 0.001).
        min_losses: the lower bounds :math:`L^*`, one per task (default 0 for every task);
            every loss must stay above its bound.

    ``losses`` are required. ``primary`` is ignored: every task is treated alike.
    Cost: one backward pass of :math:`\sum_i w_i L_i` through :func:`gradsurgery.backward`
    (no task gradients are formed; :math:`O(1)` in :math:`T` backward work), :math:`O(T)`
    for the weights, plus one forward pass if :meth:`update` is used. State: the logits,
    their Adam moments and the losses awaiting their "after step" values (:meth:`state_dict`),
    restored exactly.

    .. note::
        The official code adds :math:`10^{-8}` inside every logarithm and lets a loss below
        its bound produce NaN. Here the weights are computed as a softmax in log space (no
        overflow for a loss close to its bound), and a loss at or below its bound is an error
        naming the task. The official ``FAMO`` class also carries ``max_norm=1.0``, a clip of
        the model's gradient norm; that belongs to the user's optimizer loop, not here.

    Example:
        >>> import torch, gradsurgery
        >>> resolver = gradsurgery.get_resolver("famo")
        >>> G = torch.eye(2)
        >>> gradsurgery.resolve(G, method=resolver, losses=[1.0, 3.0])  # z = (1/2, 1/2)
        tensor([0.7500, 0.2500])
        >>> resolver.update([0.5, 2.9])  # task 0 fell more: weight moves to task 1
        >>> resolver.logits
        tensor([-0.0250,  0.0250], dtype=torch.float64)
    """

    promises = frozenset({"scale_equivariant", "permutation_invariant"})
    needs_losses = True
    uses_gram = False

    def __init__(
        self, lr: float = 0.025, gamma: float = 0.01, min_losses: Sequence[float] | None = None
    ) -> None:
        lr = real_option("lr", lr, minimum=0, above_minimum=True, note="paper 0.025")
        gamma = real_option("gamma", gamma, minimum=0)
        bounds: Tensor | None = None
        if min_losses is not None:
            bounds = _bounds(min_losses)
            if bounds.numel() == 0 or not bool(torch.isfinite(bounds).all()):
                raise ValueError(
                    f"Invalid min_losses: {min_losses!r} (expected finite numbers, one per task)"
                )
        self.lr = float(lr)
        self.gamma = float(gamma)
        self.min_losses = bounds
        self.logits: Tensor | None = None
        self._adam: HostAdam | None = None
        self._pending: Tensor | None = None  # log(L - L*) of the last step, awaiting L'

    def _options(self) -> dict[str, Any]:
        bounds = None if self.min_losses is None else self.min_losses.tolist()
        return {"lr": self.lr, "gamma": self.gamma, "min_losses": bounds}

    def _log_gaps(self, losses: Tensor) -> Tensor:
        """:math:`\\log(L - L^*)`, checked: every loss must be finite and exceed its bound
        (an infinite one would make the logits NaN for good)."""
        values = losses.detach().to("cpu", torch.float64).reshape(-1)
        T = values.shape[0]
        if self.min_losses is not None and self.min_losses.shape[0] != T:
            raise ValueError(
                f"Invalid losses: {T} values, but FAMO's min_losses has {self.min_losses.shape[0]}"
            )
        gaps = values if self.min_losses is None else values - self.min_losses
        bad = torch.nonzero(~((gaps > 0) & torch.isfinite(values))).flatten()
        if bad.numel():
            index = int(bad[0])
            if not math.isfinite(float(values[index])):
                raise ValueError(
                    f"Invalid losses: task {index} is {float(values[index])} (expected a "
                    "finite loss)"
                )
            bound = 0.0 if self.min_losses is None else float(self.min_losses[index])
            raise ValueError(
                f"Invalid losses: task {index} is {float(values[index])}, not above its lower "
                f"bound {bound}; FAMO takes log(loss - min_loss): set min_losses below every "
                "loss the task can reach"
            )
        return torch.log(gaps)

    def _start(self, logits: Tensor, optimizer: dict[str, Any] | None = None) -> None:
        """Learn ``logits`` from here, with Adam's state ``optimizer`` if given (checked
        before anything is assigned: a bad one leaves the resolver as it was)."""
        adam = HostAdam(logits, lr=self.lr, weight_decay=self.gamma)
        if optimizer is not None:
            adam.load_state_dict(optimizer)
        self._adam = adam
        self.logits = adam.values  # a view: each Adam step updates it

    def _step(self, new_log_gaps: Tensor) -> None:
        assert self.logits is not None and self._adam is not None
        assert self._pending is not None
        delta = self._pending - new_log_gaps
        z = torch.softmax(self.logits, dim=0)
        gradient = z * (delta - torch.dot(z, delta))  # the softmax's Jacobian^T delta
        self._adam.step(gradient.numpy())
        self._pending = None

    def update(self, losses: Sequence[float] | Tensor) -> None:
        """Update the logits from the losses measured after the model step.

        Args:
            losses: the ``T`` losses :math:`L'` at the new parameters, on the batch of the
                last call (re-evaluated after ``optimizer.step()``).

        Raises:
            RuntimeError: no step awaits its update (none was taken since the last update).
            ValueError: wrong number of losses, a non-finite loss, or a loss not above its
                bound (the logits are then as they were).
        """
        if self._pending is None:
            raise RuntimeError(
                "FAMO.update: no step awaits an update; call it once after each resolved step"
            )
        new_log_gaps = self._log_gaps(torch.as_tensor(losses, dtype=torch.float64))
        if new_log_gaps.shape != self._pending.shape:
            raise ValueError(
                f"Invalid losses: got {new_log_gaps.shape[0]} values for "
                f"{self._pending.shape[0]} task(s)"
            )
        self._step(new_log_gaps)

    def weights(self, gram: Tensor, *, primary: int | None, losses: Tensor | None) -> Tensor:
        assert losses is not None  # the front door checks needs_losses
        T = gram.shape[-1]
        log_gaps = self._log_gaps(losses)
        if self.logits is None:
            self._start(torch.zeros(T, dtype=torch.float64))
        assert self.logits is not None
        raise_if_other_tasks(self, self.logits.shape[0], T)
        if self._pending is not None:
            self._step(log_gaps)  # this call's losses are the previous step's "after" losses
        weights = torch.softmax(self.logits - log_gaps, dim=0)
        self._pending = log_gaps
        return weights.to(gram.device).expand(gram.shape[:-1]).clone()

    def state_dict(self) -> dict[str, Any]:
        if self.logits is None or self._adam is None:
            return {}
        return {
            "logits": self.logits.clone(),
            "optimizer": self._adam.state_dict(),
            "pending": None if self._pending is None else self._pending.clone(),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if not state_dict:
            self.logits = self._adam = self._pending = None
            return
        if set(state_dict) != {"logits", "optimizer", "pending"}:
            raise ValueError(
                "FAMO.load_state_dict: expected keys ['logits', 'optimizer', 'pending'], "
                f"got {sorted(state_dict)}"
            )
        pending = state_dict["pending"]
        self._start(
            state_dict["logits"].detach().to("cpu", torch.float64).clone(), state_dict["optimizer"]
        )
        self._pending = None if pending is None else pending.clone()


def _bounds(min_losses: object) -> Tensor:
    """``min_losses`` as a ``(T,)`` float64 CPU tensor: real numbers (a sequence, an array
    or a tensor of them, or one number), never booleans, each within float64's range."""
    values: list[object]
    if isinstance(min_losses, Tensor):
        values = min_losses.detach().cpu().reshape(-1).tolist()
    elif isinstance(min_losses, numbers.Real):
        values = [min_losses]
    elif isinstance(min_losses, (str, bytes)) or not hasattr(min_losses, "__iter__"):
        raise TypeError(f"Invalid min_losses: {min_losses!r} (expected a sequence of numbers)")
    else:
        values = list(np.asarray(min_losses, dtype=object).reshape(-1))
    if not all(isinstance(x, numbers.Real) and not isinstance(x, (bool, np.bool_)) for x in values):
        raise TypeError(f"Invalid min_losses: {min_losses!r} (expected a sequence of numbers)")
    try:
        return torch.tensor([float(x) for x in values], dtype=torch.float64)  # type: ignore[arg-type]
    except OverflowError:  # an int beyond float64's range
        raise ValueError(
            f"Invalid min_losses: {min_losses!r} (expected finite numbers, one per task)"
        ) from None
