"""GradNorm: learn task weights that balance gradient norms by training rate."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from gradsurgery.resolvers._losses import checked_losses
from gradsurgery.resolvers._options import integer_option, real_option
from gradsurgery.resolvers._tasks import raise_if_other_tasks
from gradsurgery.resolvers.base import GramResolver

__all__ = ["GradNorm"]


class GradNorm(GramResolver):
    r"""GradNorm (Chen et al., ICML 2018, https://arxiv.org/abs/1711.02257).

    Learnable task weights :math:`w_i`, renormalised so that :math:`\sum_i w_i = T`. Each
    step returns :math:`d = \sum_i w_i g_i` with the current weights, then updates them.
    With :math:`G_i = w_i \|g_i\|` the weighted gradient norms,
    :math:`\tilde L_i = L_i(t) / L_i(0)` the loss ratios and
    :math:`r_i = \tilde L_i / \operatorname{mean}_j \tilde L_j` the relative inverse training
    rates, the weights descend

    .. math::

        L_{\text{grad}} = \sum_i \left| G_i - \overline{G}\, r_i^{\alpha} \right|,

    with the target :math:`\overline{G}\, r_i^{\alpha}` held constant, so that
    :math:`\partial L_{\text{grad}} / \partial w_i = \operatorname{sign}(G_i - \overline{G}
    r_i^\alpha)\, \|g_i\|`. Tasks that train slower (larger :math:`r_i`) get larger weights.

    Args:
        alpha: asymmetry :math:`\alpha` (paper default 1.5; larger pulls harder toward
            equal training rates).
        lr: learning rate of the weights' own Adam optimiser (betas 0.9, 0.999). The paper
            trains the weights by gradient descent beside the model; Adam makes the step
            independent of the gradients' scale.
        min_weight: floor of each weight before renormalisation, to keep it positive.

    ``losses`` are required (the loss ratios need them) and must be non-negative (a
    negative ratio has no power :math:`\alpha`); :math:`L_i(0)` is the first loss seen.
    ``primary`` is ignored: GradNorm balances all tasks alike. The paper computes
    :math:`\|g_i\|` on the last shared layer; here it is the norm over whatever parameters
    are resolved (with per-tensor granularity, over all of them together: one weight
    update per step, the same weights for every tensor).

    Cost: ``T`` backward passes, :math:`O(TP)` for the norms and the sum. State: weights,
    initial losses and Adam moments (:meth:`state_dict`), restored exactly; a call with
    another number of tasks is refused (``load_state_dict({})`` starts over).

    Example:
        >>> import torch, gradsurgery
        >>> resolver = gradsurgery.get_resolver("gradnorm")
        >>> G = torch.tensor([[1.0, 0.0], [0.0, 10.0]])
        >>> gradsurgery.resolve(G, method=resolver, losses=torch.tensor([1.0, 1.0]))
        tensor([ 1., 10.])
        >>> resolver.task_weights  # the small-gradient task gains weight
        tensor([1.0250, 0.9750], dtype=torch.float64)
    """

    needs_losses = True

    def __init__(self, alpha: float = 1.5, lr: float = 0.025, min_weight: float = 1e-3) -> None:
        self.alpha = real_option("alpha", alpha, minimum=0)
        self.lr = real_option("lr", lr, minimum=0, above_minimum=True)
        self.min_weight = real_option(
            "min_weight", min_weight, minimum=0, maximum=1, above_minimum=True, below_maximum=True
        )
        self.task_weights: Tensor | None = None
        self.initial_losses: Tensor | None = None
        self._exp_avg: Tensor | None = None
        self._exp_avg_sq: Tensor | None = None
        self._step = 0

    def _options(self) -> dict[str, Any]:
        return {"alpha": self.alpha, "lr": self.lr, "min_weight": self.min_weight}

    def weights(self, gram: Tensor, *, primary: int | None, losses: Tensor | None) -> Tensor:
        assert losses is not None  # the front door checks needs_losses
        T = gram.shape[-1]
        losses = checked_losses(
            losses,
            "GradNorm needs losses >= 0 (its training rates are the ratios L_i(t) / L_i(0); "
            "shift the losses by a constant first)",
            strictly_positive=False,
        )
        if self.task_weights is None:
            self._reset(T, losses)
        assert self.task_weights is not None
        raise_if_other_tasks(self, self.task_weights.shape[0], T)
        current = self.task_weights.to(gram.device).clone()
        norms = torch.sqrt(torch.diagonal(gram.sum(dim=0), dim1=-2, dim2=-1).clamp(min=0))
        self._update(norms, losses)
        return current.expand(gram.shape[:-1]).clone()

    def _reset(self, T: int, losses: Tensor) -> None:
        self.task_weights = torch.ones(T, dtype=torch.float64)
        self.initial_losses = losses.detach().to("cpu", torch.float64).clone()
        self._exp_avg = torch.zeros(T, dtype=torch.float64)
        self._exp_avg_sq = torch.zeros(T, dtype=torch.float64)
        self._step = 0

    def _update(self, norms: Tensor, losses: Tensor) -> None:
        assert self.task_weights is not None and self.initial_losses is not None
        assert self._exp_avg is not None and self._exp_avg_sq is not None
        T = norms.shape[0]
        norms = norms.to("cpu")
        initial = self.initial_losses
        ratios = torch.where(initial > 0, losses.to("cpu") / initial.clamp(min=1e-300), 1.0)
        mean_ratio = ratios.mean()
        relative = ratios / mean_ratio if mean_ratio > 0 else torch.ones_like(ratios)
        weighted_norms = self.task_weights * norms
        target = weighted_norms.mean() * relative.pow(self.alpha)
        gradient = torch.sign(weighted_norms - target) * norms
        # Adam on the weights, then floor and renormalise to sum T.
        self._step += 1
        beta1, beta2 = 0.9, 0.999
        self._exp_avg.mul_(beta1).add_(gradient, alpha=1 - beta1)
        self._exp_avg_sq.mul_(beta2).addcmul_(gradient, gradient, value=1 - beta2)
        corrected_avg = self._exp_avg / (1 - beta1**self._step)
        corrected_sq = self._exp_avg_sq / (1 - beta2**self._step)
        step = self.lr * corrected_avg / (corrected_sq.sqrt() + 1e-8)
        updated = (self.task_weights - step).clamp(min=self.min_weight)
        self.task_weights = updated * (T / updated.sum())

    def state_dict(self) -> dict[str, Any]:
        if self.task_weights is None:
            return {}
        return {
            "task_weights": self.task_weights.clone(),
            "initial_losses": self.initial_losses.clone()
            if self.initial_losses is not None
            else None,
            "exp_avg": self._exp_avg.clone() if self._exp_avg is not None else None,
            "exp_avg_sq": self._exp_avg_sq.clone() if self._exp_avg_sq is not None else None,
            "step": self._step,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if not state_dict:
            self.task_weights = self.initial_losses = self._exp_avg = self._exp_avg_sq = None
            self._step = 0
            return
        expected = {"task_weights", "initial_losses", "exp_avg", "exp_avg_sq", "step"}
        if set(state_dict) != expected:
            raise ValueError(
                f"GradNorm.load_state_dict: expected keys {sorted(expected)}, "
                f"got {sorted(state_dict)}"
            )
        step = integer_option("GradNorm state_dict['step']", state_dict["step"], minimum=0)
        tensors = {}
        for key in ("task_weights", "initial_losses", "exp_avg", "exp_avg_sq"):
            value = state_dict[key]
            if not isinstance(value, Tensor) or value.shape != state_dict["task_weights"].shape:
                raise ValueError(
                    f"Invalid GradNorm state_dict[{key!r}]: expected a tensor of the shape of "
                    "'task_weights' (one value per task)"
                )
            tensors[key] = value.clone()
        self.task_weights = tensors["task_weights"]
        self.initial_losses = tensors["initial_losses"]
        self._exp_avg = tensors["exp_avg"]
        self._exp_avg_sq = tensors["exp_avg_sq"]
        self._step = step
