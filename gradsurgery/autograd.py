"""From losses to ``.grad``: task gradients of the shared parameters, resolved, written back.

:func:`backward` replaces ``sum(losses).backward()`` in a training loop. It finds, by walking
the autograd graph (no computation), which parameters each task's loss reaches. Parameters
that only one task reaches get that task's gradient directly; parameters that two or more
tasks reach ("shared") get the resolver's direction. Each task's gradient is accumulated by
autograd straight into its row of the ``T x P`` task-gradient matrix (the shared
parameters' ``.grad`` temporarily point into it), so the matrix is the only extra copy.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from gradsurgery._validation import (
    TaskKey,
    build_resolver,
    normalize_primary,
    task_label,
    task_vector,
)
from gradsurgery.diagnostics import cosine_from_gram, norm_ratio_from_gram
from gradsurgery.resolve import run_resolver
from gradsurgery.resolvers.base import GramResolver, Resolver, gram_of_blocks

__all__ = ["BackwardResult", "backward"]

Granularity = Literal["global", "tensor"]


@dataclass(frozen=True)
class BackwardResult:
    """What :func:`backward` computed on the way, for logging; nothing here costs extra.

    Attributes:
        task_names: the tasks' names (``"0"``, ``"1"``, ... for a sequence of losses).
        gram: ``(B, T, T)`` float64 Gram matrices of the task gradients of the shared
            parameters, one per resolved block (``B = 1`` for global granularity, one per
            shared tensor for per-tensor granularity); ``None`` when no task gradients were
            formed (a loss weighting such as ``sum`` without ``diagnostics=True``, or no
            shared parameters).
        weights: ``(B, T)`` weights of the task gradients in the resolved direction (loss
            weights included), or ``None`` for resolvers that are not weightings.
        shared_parameters: how many scalar parameters were resolved (``P``).
    """

    task_names: tuple[str, ...]
    gram: Tensor | None
    weights: Tensor | None
    shared_parameters: int

    @property
    def cosine(self) -> Tensor | None:
        """``(T, T)`` pairwise cosine similarity of the whole shared task gradients."""
        return None if self.gram is None else cosine_from_gram(self.gram.sum(dim=0))

    @property
    def norm_ratio(self) -> Tensor | None:
        """``(T, T)`` ratio ``||g_i|| / ||g_j||`` of the whole shared task gradients."""
        return None if self.gram is None else norm_ratio_from_gram(self.gram.sum(dim=0))


def backward(
    losses: Mapping[str, Tensor] | Sequence[Tensor],
    params: Iterable[Tensor],
    *,
    resolver: str | Resolver,
    primary: TaskKey | None = None,
    weights: Any = None,
    granularity: Granularity = "global",
    diagnostics: bool = False,
) -> BackwardResult:
    r"""Back-propagate several task losses, resolving their gradients where they meet.

    Use it where a single-task loop calls ``loss.backward()``; the optimizer, scheduler,
    clipping and AMP stay yours::

        optimizer.zero_grad()
        gradsurgery.backward({"asr": loss_asr, "se": loss_se}, model.parameters(),
                             resolver="gr", primary="asr", weights={"asr": 0.7, "se": 0.3})
        optimizer.step()

    Args:
        losses: scalar loss tensors, as a mapping task name -> loss or a sequence.
        params: the parameters to compute gradients for (e.g. ``model.parameters()``);
            those not requiring grad are skipped, and tensors outside ``params`` are never
            touched.
        resolver: a registered name or a resolver instance (keep one instance across
            steps for stateful resolvers).
        primary: the primary task, by index or name.
        weights: non-negative loss weights, applied to the losses before any gradient is
            taken (:math:`c_i L_i`), as a sequence or a mapping by task name.
        granularity: ``"global"`` resolves the shared parameters as one flattened vector
            (as PCGrad's paper); ``"tensor"`` resolves each shared parameter tensor on its
            own (as GR's authors do), in one batched computation.
        diagnostics: make sure the result carries the Gram matrix of the task gradients.
            Loss weightings (``sum``, ``mean``) otherwise need one backward pass and no task
            gradients; with ``diagnostics=True`` they form them (``T`` backward passes) and
            their Gram, so that a baseline run can be monitored like the others.

    Returns:
        A :class:`BackwardResult` with the Gram matrices and weights the resolver used.

    Each parameter's ``.grad`` is accumulated, as ``loss.backward()`` does: the resolved
    direction is added to an existing ``.grad``. Parameters no task reaches are untouched.

    Cost: for a loss weighting, one backward pass. Otherwise one backward pass per task,
    each through the part of the graph that task reaches (with an SE front end feeding a
    recogniser: one pass through both, plus one through the front end), and the ``T x P``
    matrix of the shared parameters' task gradients.

    Raises:
        TypeError / ValueError: a loss that is not a scalar tensor, a non-finite loss (the
        task is named), a loss that reaches none of ``params``, bad ``primary``, ``weights``
        or ``granularity``, shared parameters of different dtypes or devices.
    """
    names, loss_list = _normalize_losses(losses)
    T = len(loss_list)
    label_names = names if names is not None else None
    task_resolver = build_resolver(resolver, {})
    if granularity not in ("global", "tensor"):
        raise ValueError(f"Invalid granularity: {granularity!r} (expected 'global' or 'tensor')")
    primary_index = normalize_primary(primary, names, T)
    loss_weights = task_vector(weights, "weights", names, T, nonnegative=True)
    loss_values = torch.stack(
        [loss.detach().reshape(()).to("cpu", torch.float64) for loss in loss_list]
    )
    for index in range(T):
        if not torch.isfinite(loss_values[index]):
            raise ValueError(
                f"Invalid losses: {task_label(index, label_names)} is {float(loss_values[index])}"
            )
    parameters = _normalize_params(params)
    reached = [_reached_parameters(loss, parameters) for loss in loss_list]
    for index, task_params in enumerate(reached):
        if not task_params:
            raise ValueError(
                f"Invalid losses: {task_label(index, label_names)} reaches none of params "
                "(is it detached, or computed from other parameters?)"
            )
    scaled = [
        loss if loss_weights is None else loss * float(loss_weights[index])
        for index, loss in enumerate(loss_list)
    ]
    display_names = tuple(names) if names is not None else tuple(str(i) for i in range(T))
    counts: dict[int, int] = {}
    for task_params in reached:
        for key in task_params:
            counts[key] = counts.get(key, 0) + 1
    shared = [p for p in parameters if counts.get(id(p), 0) >= 2]

    loss_only = isinstance(task_resolver, GramResolver) and not task_resolver.uses_gram
    if not shared or (loss_only and not diagnostics):
        return _backward_weighted_sum(
            task_resolver,
            scaled,
            reached,
            parameters,
            primary_index,
            loss_values,
            display_names,
            loss_weights,
        )

    _check_same_kind(shared)
    if granularity == "tensor":
        shared.sort(key=lambda p: p.numel())  # stable: equal sizes become runs of one batch
        block_sizes = [p.numel() for p in shared]
    else:
        block_sizes = [sum(p.numel() for p in shared)]
    G = _task_gradient_matrix(scaled, reached, shared)
    resolution = run_resolver(
        task_resolver,
        G,
        block_sizes,
        primary=primary_index,
        losses=loss_values,
        task_weights=None,
        names=label_names,
    )
    _accumulate_into_grad(shared, resolution.direction)
    gram = resolution.gram
    if gram is None and diagnostics:
        gram = gram_of_blocks(G, block_sizes)
    weights_out = resolution.weights
    if weights_out is not None and loss_weights is not None:
        weights_out = weights_out * loss_weights.to(weights_out.device)
    return BackwardResult(display_names, gram, weights_out, G.shape[1])


def _normalize_losses(
    losses: Mapping[str, Tensor] | Sequence[Tensor],
) -> tuple[list[str] | None, list[Tensor]]:
    names: list[str] | None = None
    if isinstance(losses, Mapping):
        names = list(losses)
        if not all(isinstance(name, str) for name in names):
            raise TypeError(f"Invalid losses: mapping keys must be task names (str), got {names}")
        loss_list = list(losses.values())
    elif isinstance(losses, Sequence) and not isinstance(losses, str):
        loss_list = list(losses)
    else:
        raise TypeError(
            f"Invalid losses: expected a mapping name -> loss or a sequence of losses, "
            f"got {type(losses).__name__}"
        )
    if not loss_list:
        raise ValueError("Invalid losses: no tasks (T = 0)")
    for index, loss in enumerate(loss_list):
        label = task_label(index, names)
        if not isinstance(loss, Tensor):
            raise TypeError(f"Invalid losses: {label} is a {type(loss).__name__}, not a tensor")
        if loss.numel() != 1:
            raise ValueError(
                f"Invalid losses: {label} has shape {tuple(loss.shape)}; expected a scalar"
            )
        if not loss.requires_grad:
            raise ValueError(f"Invalid losses: {label} does not require grad (was it detached?)")
    return names, loss_list


def _normalize_params(params: Iterable[Tensor]) -> list[Tensor]:
    if isinstance(params, Tensor):
        params = [params]
    result: list[Tensor] = []
    seen: set[int] = set()
    for index, param in enumerate(params):
        if not isinstance(param, Tensor):
            raise TypeError(
                f"Invalid params: item {index} is a {type(param).__name__}, not a tensor"
            )
        if not param.requires_grad or id(param) in seen:
            continue
        if not param.is_leaf:
            raise ValueError(f"Invalid params: item {index} is not a leaf tensor")
        seen.add(id(param))
        result.append(param)
    if not result:
        raise ValueError("Invalid params: no tensor that requires grad")
    return result


def _reached_parameters(loss: Tensor, parameters: list[Tensor]) -> dict[int, Tensor]:
    """The parameters ``loss`` depends on, found by walking its autograd graph."""
    wanted = {id(p): p for p in parameters}
    if loss.grad_fn is None:  # the loss is itself a leaf
        return {id(loss): loss} if id(loss) in wanted else {}
    found: dict[int, Tensor] = {}
    visited: set[Any] = set()
    stack: list[Any] = [loss.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in visited:
            continue
        visited.add(node)
        variable = getattr(node, "variable", None)
        if variable is not None and id(variable) in wanted:
            found[id(variable)] = wanted[id(variable)]
        stack.extend(child for child, _ in node.next_functions)
    return found


def _check_same_kind(shared: list[Tensor]) -> None:
    first = shared[0]
    for param in shared[1:]:
        if param.dtype != first.dtype or param.device != first.device:
            raise ValueError(
                "Invalid params: shared parameters must have one dtype and device; found "
                f"{first.dtype} on {first.device} and {param.dtype} on {param.device}"
            )


def _task_gradient_matrix(
    scaled: list[Tensor], reached: list[dict[int, Tensor]], shared: list[Tensor]
) -> Tensor:
    """Back-propagate each task once; shared gradients land in the rows of ``G``.

    While task ``i`` runs, every shared parameter's ``.grad`` is a view into row ``i``, so
    autograd accumulates in place there; parameters of that task alone accumulate into
    their own ``.grad`` as usual. The shared parameters' own ``.grad`` are restored after.
    """
    first = shared[0]
    total = sum(p.numel() for p in shared)
    G = torch.zeros(len(scaled), total, dtype=first.dtype, device=first.device)
    saved = [p.grad for p in shared]
    try:
        for task, loss in enumerate(scaled):
            offset = 0
            for param in shared:
                size = param.numel()
                param.grad = G[task, offset : offset + size].view_as(param)
                offset += size
            inputs = list(reached[task].values())
            torch.autograd.backward(loss, inputs=inputs, retain_graph=task < len(scaled) - 1)
    finally:
        for param, grad in zip(shared, saved):
            param.grad = grad
    return G


def _accumulate_into_grad(shared: list[Tensor], direction: Tensor) -> None:
    """Add the direction into ``.grad``; a parameter without one gets a view of it."""
    offset = 0
    for param in shared:
        size = param.numel()
        piece = direction[offset : offset + size].view_as(param)
        if param.grad is None:
            param.grad = piece
        else:
            param.grad.add_(piece)
        offset += size


def _backward_weighted_sum(
    resolver: Resolver,
    scaled: list[Tensor],
    reached: list[dict[int, Tensor]],
    parameters: list[Tensor],
    primary: int | None,
    loss_values: Tensor,
    names: tuple[str, ...],
    loss_weights: Tensor | None,
) -> BackwardResult:
    """One backward pass of :math:`\\sum_i w_i c_i L_i`, for loss weightings and unshared tasks."""
    T = len(scaled)
    if isinstance(resolver, GramResolver) and not resolver.uses_gram:
        weights = resolver.weights(
            torch.zeros(1, T, T, dtype=torch.float64), primary=primary, losses=loss_values
        )
    else:  # no shared parameters: every task's gradient goes where it belongs
        weights = torch.ones(1, T, dtype=torch.float64)
    total = sum(float(weights[0, i]) * scaled[i] for i in range(T))
    reached_ids = set().union(*reached)
    inputs = [p for p in parameters if id(p) in reached_ids]
    assert isinstance(total, Tensor)
    torch.autograd.backward(total, inputs=inputs)
    if loss_weights is not None:
        weights = weights * loss_weights
    return BackwardResult(names, None, weights, 0)
