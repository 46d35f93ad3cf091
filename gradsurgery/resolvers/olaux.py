"""OL-AUX: learn auxiliary-loss weights online from their gradients' alignment with the main one."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from gradsurgery.resolvers._options import integer_option, real_option
from gradsurgery.resolvers._tasks import raise_if_other_tasks
from gradsurgery.resolvers.base import GramResolver

__all__ = ["OLAux"]


class OLAux(GramResolver):
    r"""OL-AUX, online learning of auxiliary-loss weights (Lin et al., NeurIPS 2019).

    The update is the gradient of :math:`L_p + \sum_{k \ne p} w_k L_k`: with :math:`g_p` the
    main gradient and :math:`g_k` the auxiliary ones,

    .. math::

        d = g_p + \sum_{k \ne p} w_k\, g_k .

    After a model step :math:`\theta \leftarrow \theta - \alpha d`, the main loss changes by
    :math:`-\alpha\, g_p \cdot d` to first order, so
    :math:`\partial L_p(\theta_{t+1}) / \partial w_k \approx -\alpha\, g_p \cdot g_k`. OL-AUX
    sums this over a horizon of :math:`N` steps and takes one SGD step on the weights:

    .. math::

        w_k \leftarrow w_k + \beta \alpha \sum_{t=1}^{N} g_{p,t} \cdot g_{k,t},

    so an auxiliary whose gradient keeps helping the main task gains weight, and one that
    keeps conflicting with it loses weight. Here :math:`g_k` are the gradients the resolver
    receives (of the losses times any loss weights given to :func:`gradsurgery.backward`), and
    the dot products are over everything resolved (summed over blocks with per-tensor
    granularity: one set of weights per step).

    Reference: Lin, Baweja, Kantor, Held, "Adaptive Auxiliary Task Weighting for
    Reinforcement Learning", NeurIPS 2019,
    https://papers.nips.cc/paper/2019/hash/0e900ad84f63618452210ab8baae0218-Abstract.html.

    Args:
        lr: the weights' SGD learning rate :math:`\beta` (default 5, the authors' setting
            as reported by tzjtatata/multitask_ug's OL-AUX configuration).
        model_lr: the model's learning rate :math:`\alpha` in the first-order estimate
            (default ``1e-3``; set it to your optimizer's).
        horizon: :math:`N`, the number of steps between weight updates (default 5).
        nonnegative: clip the weights at zero after each update (default ``False``, as the
            paper; ``True`` never turns an auxiliary loss into one that is maximised).
        initial_weight: the auxiliary weights' starting value (default 1).

    ``primary``: the index of the main task (its weight stays 1); ``None`` means task 0.
    Cost: ``T`` backward passes, :math:`O(TP)` for the Gram's diagonal and primary row (the
    whole Gram, :math:`O(T^2 P)`, where the autograd glue reports it), :math:`O(TP)` for the
    sum. State: the weights, the dot products summed over the
    current horizon and the step count (:meth:`state_dict`), restored exactly; a call with
    another number of tasks is refused (``load_state_dict({})`` starts over).

    .. note::
        The reference balancer (tzjtatata/multitask_ug, ``lightning/balancer/olaux.py``)
        takes the gradients of log-losses with respect to the shared representation and
        updates every :math:`N + 1` steps (its countdown runs from :math:`N` to 0 inclusive).
        Here the losses are used as given (weight the losses or take their logs before
        :func:`gradsurgery.backward` to change that), the gradients are those resolved, and
        the weights change exactly every ``horizon`` steps.

    Example:
        >>> import torch, gradsurgery
        >>> resolver = gradsurgery.get_resolver("olaux", lr=1.0, model_lr=0.1, horizon=1)
        >>> G = torch.tensor([[1.0, 0.0], [-1.0, 1.0]])  # main, conflicting auxiliary
        >>> gradsurgery.resolve(G, method=resolver)  # weights start at 1
        tensor([0., 1.])
        >>> resolver.task_weights  # 1 + 1.0 * 0.1 * (g_main . g_aux) = 1 - 0.1
        tensor([1.0000, 0.9000], dtype=torch.float64)
    """

    reads_primary_only = True

    def __init__(
        self,
        lr: float = 5.0,
        model_lr: float = 1e-3,
        horizon: int = 5,
        nonnegative: bool = False,
        initial_weight: float = 1.0,
    ) -> None:
        self.lr = real_option("lr", lr, minimum=0)
        self.model_lr = real_option("model_lr", model_lr, minimum=0, above_minimum=True)
        self.horizon = integer_option("horizon", horizon, minimum=1)
        if not isinstance(nonnegative, bool):
            raise TypeError(f"Invalid nonnegative: {nonnegative!r} (expected True or False)")
        self.nonnegative = nonnegative
        self.initial_weight = real_option("initial_weight", initial_weight)
        if nonnegative and self.initial_weight < 0:
            raise ValueError(
                f"Invalid initial_weight: {initial_weight!r} (expected >= 0 with nonnegative)"
            )
        self.task_weights: Tensor | None = None
        self._dot_sum: Tensor | None = None
        self._steps = 0

    def _options(self) -> dict[str, Any]:
        return {
            "lr": self.lr,
            "model_lr": self.model_lr,
            "horizon": self.horizon,
            "nonnegative": self.nonnegative,
            "initial_weight": self.initial_weight,
        }

    def weights(self, gram: Tensor, *, primary: int | None, losses: Tensor | None) -> Tensor:
        T = gram.shape[-1]
        p = 0 if primary is None else primary
        if self.task_weights is None:
            self.task_weights = torch.full((T,), self.initial_weight, dtype=torch.float64)
            self._dot_sum = torch.zeros(T, dtype=torch.float64)
            self._steps = 0
        raise_if_other_tasks(self, self.task_weights.shape[0], T)
        assert self._dot_sum is not None
        current = self.task_weights.clone()
        current[p] = 1.0
        # The main gradient's dot product with every task's, over all blocks.
        self._dot_sum += gram[..., p, :].sum(dim=0).to("cpu")
        self._steps += 1
        if self._steps >= self.horizon:  # (a state saved with a longer horizon is past it)
            updated = self.task_weights + self.lr * self.model_lr * self._dot_sum
            if self.nonnegative:
                updated = updated.clamp(min=0.0)
            updated[p] = 1.0
            self.task_weights = updated
            self._dot_sum = torch.zeros_like(self._dot_sum)
            self._steps = 0
        return current.to(gram.device).expand(gram.shape[:-1]).clone()

    def state_dict(self) -> dict[str, Any]:
        if self.task_weights is None or self._dot_sum is None:
            return {}
        return {
            "task_weights": self.task_weights.clone(),
            "dot_sum": self._dot_sum.clone(),
            "steps": self._steps,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if not state_dict:
            self.task_weights = self._dot_sum = None
            self._steps = 0
            return
        expected = {"task_weights", "dot_sum", "steps"}
        if set(state_dict) != expected:
            raise ValueError(
                f"OLAux.load_state_dict: expected keys {sorted(expected)}, got {sorted(state_dict)}"
            )
        steps = integer_option("OLAux state_dict['steps']", state_dict["steps"], minimum=0)
        self.task_weights = state_dict["task_weights"].clone()
        self._dot_sum = state_dict["dot_sum"].clone()
        self._steps = steps
