"""Dynamic weight average (DWA): weight tasks by how slowly their epoch losses fall."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from gradsurgery.resolvers._losses import checked_losses
from gradsurgery.resolvers._options import integer_option, real_option
from gradsurgery.resolvers._tasks import raise_if_other_tasks
from gradsurgery.resolvers.base import GramResolver

__all__ = ["DynamicWeightAverage"]


class DynamicWeightAverage(GramResolver):
    r"""Dynamic weight average (Liu, Johns, Davison, CVPR 2019, https://arxiv.org/abs/1803.10704).

    With :math:`\bar L_i(e)` task :math:`i`'s loss averaged over epoch :math:`e`, the
    weights used throughout epoch :math:`e` are

    .. math::

        r_i = \frac{\bar L_i(e-1)}{\bar L_i(e-2)}, \qquad
        w_i = T \operatorname{softmax}(r / \tau)_i, \qquad d = \sum_i w_i g_i,

    and :math:`w_i = 1` during the first two epochs. A task whose loss fell less over the
    last epoch (larger :math:`r_i`) gets more weight; the weights sum to :math:`T`.

    **Epochs.** Every call adds its ``losses`` to the current epoch's average. An epoch ends
    when :meth:`end_epoch` is called (typically at the end of each pass over the data), or,
    with ``epoch_length=n``, automatically after every ``n`` calls.

    Args:
        temperature: the softmax temperature :math:`\tau` (paper default 2; larger is
            closer to equal weights).
        epoch_length: if given, the number of calls per epoch; ``None`` (default): epochs
            end only when :meth:`end_epoch` is called.

    ``losses`` are required and must be non-negative (a ratio of averages of losses of mixed
    signs means nothing). A task with :math:`\bar L_i(e-2) = 0` gets :math:`r_i = 1`.
    ``primary`` is ignored. Cost: one backward pass of :math:`\sum_i w_i L_i` through
    :func:`gradsurgery.backward` (no task gradients are formed), :math:`O(T)` per call.
    State: the running sums of the current epoch and the last two epoch averages
    (:meth:`state_dict`), restored exactly.

    .. note::
        The authors' code (lorenmt/mtan) computes :math:`e^{r_i/\tau} / \sum_j e^{r_j/\tau}`
        directly, which overflows to NaN for large ratios; here the softmax subtracts its
        maximum first and the ratios are capped, so the weights stay finite.

    Example:
        >>> import torch, gradsurgery
        >>> resolver = gradsurgery.get_resolver("dwa", epoch_length=1)
        >>> G = torch.eye(2)
        >>> for losses in ([1.0, 1.0], [1.0, 0.5]):  # epochs 0 and 1: weights 1
        ...     _ = gradsurgery.resolve(G, method=resolver, losses=losses)
        >>> gradsurgery.resolve(G, method=resolver, losses=[1.0, 1.0])  # r = (1, 0.5)
        tensor([1.1244, 0.8756])
    """

    promises = frozenset({"scale_equivariant", "permutation_invariant"})
    needs_losses = True
    uses_gram = False

    def __init__(self, temperature: float = 2.0, epoch_length: int | None = None) -> None:
        self.temperature = real_option(
            "temperature", temperature, minimum=0, above_minimum=True, note="paper 2"
        )
        self.epoch_length = integer_option("epoch_length", epoch_length, minimum=1, optional=True)
        self._reset()

    def _reset(self) -> None:
        self._loss_sum: Tensor | None = None
        self._calls = 0
        self._history: list[Tensor] = []  # the last two epoch averages, oldest first

    def _options(self) -> dict[str, Any]:
        return {"temperature": self.temperature, "epoch_length": self.epoch_length}

    @property
    def epochs_completed(self) -> int:
        """How many epochs have ended, as far as the weights are concerned (capped at 2)."""
        return len(self._history)

    def current_weights(self, num_tasks: int) -> Tensor:
        """The ``(T,)`` float64 weights used for the current epoch."""
        self._check_tasks(num_tasks)
        if len(self._history) < 2:
            return torch.ones(num_tasks, dtype=torch.float64)
        older, newer = self._history
        ratios = torch.where(older > 0, newer / torch.where(older > 0, older, 1.0), 1.0)
        ratios = ratios.clamp(max=1e300)
        return num_tasks * torch.softmax(ratios / self.temperature, dim=0)

    def _check_tasks(self, num_tasks: int) -> None:
        """That the running sums and every epoch average held are of ``num_tasks`` tasks."""
        held = [] if self._loss_sum is None else [self._loss_sum]
        for losses in [*held, *self._history]:
            raise_if_other_tasks(self, losses.shape[0], num_tasks)

    def end_epoch(self) -> None:
        """Close the current epoch: its average loss becomes :math:`\\bar L(e-1)`.

        Raises:
            RuntimeError: no losses were received since the last epoch ended.
        """
        if self._loss_sum is None or self._calls == 0:
            raise RuntimeError(
                "DynamicWeightAverage.end_epoch: no losses were received in this epoch"
            )
        average = self._loss_sum / self._calls
        self._history = [*self._history, average][-2:]
        self._loss_sum = None
        self._calls = 0

    def weights(self, gram: Tensor, *, primary: int | None, losses: Tensor | None) -> Tensor:
        assert losses is not None  # the front door checks needs_losses
        T = gram.shape[-1]
        values = checked_losses(
            losses,
            "DynamicWeightAverage needs losses >= 0 (shift the losses by a constant first)",
            strictly_positive=False,
        )
        weights = self.current_weights(T)  # (checks that T is the tasks' number so far)
        self._loss_sum = values.clone() if self._loss_sum is None else self._loss_sum + values
        self._calls += 1
        if self.epoch_length is not None and self._calls >= self.epoch_length:
            self.end_epoch()
        return weights.to(gram.device).expand(gram.shape[:-1]).clone()

    def state_dict(self) -> dict[str, Any]:
        if self._loss_sum is None and not self._history:
            return {}
        return {
            "loss_sum": None if self._loss_sum is None else self._loss_sum.clone(),
            "calls": self._calls,
            "history": [average.clone() for average in self._history],
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict and set(state_dict) != {"loss_sum", "calls", "history"}:
            raise ValueError(
                "DynamicWeightAverage.load_state_dict: expected keys ['calls', 'history', "
                f"'loss_sum'], got {sorted(state_dict)}"
            )
        if not state_dict:
            self._reset()
            return
        calls = integer_option(
            "DynamicWeightAverage state_dict['calls']", state_dict["calls"], minimum=0
        )
        loss_sum = state_dict["loss_sum"]
        history = [average.clone() for average in state_dict["history"]]
        if len(history) > 2:
            raise ValueError(
                "Invalid DynamicWeightAverage state_dict['history']: "
                f"{len(history)} epoch averages (it holds the last two at most)"
            )
        self._reset()
        self._loss_sum = None if loss_sum is None else loss_sum.clone()
        self._calls = calls
        self._history = history
