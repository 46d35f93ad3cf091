"""Which parameters a loss depends on, found by walking its autograd graph (no computation).

The walk runs on every training step (the glue checks that each loss reaches ``params``),
so it is a plain loop: a leaf's gradient accumulator is recognised by its type, and each
node is visited once, in one walk over all the losses' graphs where the glue needs only
whether each loss reaches a parameter (:func:`losses_reaching`). That walk also tells
whether the losses reach any leaf that is not a parameter; where none, a loss weighting's
single backward pass needs no ``inputs=``.

A walk also refuses a graph through :func:`torch.utils.checkpoint.checkpoint` with
``use_reentrant=True`` (torch's default when ``use_reentrant`` is not given): such a
segment runs its forward without autograd, so the parameters inside it are not in the
graph. ``loss.backward()`` still reaches them (the segment's backward runs a backward pass
of its own, which accumulates into their ``.grad``), but the glue cannot: a backward pass
restricted to ``inputs=`` skips a segment with no input below it (its parameters get no
gradient), and one that runs it accumulates each task's gradient straight into their
``.grad`` (the plain sum, unresolved). A loss weighting's single pass without ``inputs=``
would run it as ``loss.backward()`` does, but the walk cannot see the leaves inside the
segment, so it cannot tell whether they are all parameters: it is refused there too, so
that every resolver takes the same models.

Under :class:`~torch.nn.parallel.DistributedDataParallel` built with
``find_unused_parameters=True`` or ``static_graph=True``, every output of the module passes
through one autograd node (DDP's ``_DDPSink``) whose output ``k`` is its input ``k``
unchanged: the walk follows from it only the input of the output it came through, so that
each head stays its own task's (walking all of its inputs would make every head reachable
from every loss).
"""

from __future__ import annotations

from collections.abc import Container
from typing import Any, NamedTuple

import torch
from torch import Tensor


def _accumulate_grad_type() -> type:
    """The type of autograd's node for a leaf (``AccumulateGrad``), read off a tiny graph
    (built with autograd on, whatever the importer's context)."""
    with torch.inference_mode(False), torch.enable_grad():
        leaf = torch.zeros((), requires_grad=True)
        node = (leaf * 1).grad_fn
    assert node is not None
    return type(node.next_functions[0][0])


_ACCUMULATE_GRAD: Any = _accumulate_grad_type()


def _reentrant_checkpoint_type() -> type | None:
    """The type of the autograd node of a reentrant checkpoint segment (the backward class
    autograd makes for ``torch.utils.checkpoint.CheckpointFunction``), or ``None``."""
    try:
        from torch.utils.checkpoint import CheckpointFunction
    except ImportError:  # pragma: no cover - a torch without it
        return None
    backward_type: type | None = getattr(CheckpointFunction, "_backward_cls", None)
    return backward_type


_REENTRANT_CHECKPOINT: Any = _reentrant_checkpoint_type()


def _ddp_sink_type() -> type | None:
    """The type of the autograd node through which DDP passes its module's outputs (the
    backward class of ``torch.nn.parallel.distributed._DDPSink``), or ``None``."""
    try:
        from torch.nn.parallel.distributed import _DDPSink
    except ImportError:  # pragma: no cover - a torch without it, or without distributed
        return None
    backward_type: type | None = getattr(_DDPSink, "_backward_cls", None)
    return backward_type


_DDP_SINK: Any = _ddp_sink_type()


class _Edges(NamedTuple):
    """A stand-in node whose only edges are the given ones: the walk continues there."""

    next_functions: tuple[tuple[Any, int], ...]


def _through_sink(sink: Any, output: int) -> _Edges:
    """The edges to follow from DDP's sink node, reached through its output ``output``:
    that output's own input, when every output is a tensor (``output`` k is then input
    k); otherwise, where the outputs cannot be matched to the inputs, all of them."""
    edges: tuple[tuple[Any, int], ...] = sink.next_functions
    outputs = getattr(sink, "_input_metadata", None)  # one entry per output of the sink
    if outputs is not None and len(outputs) == len(edges) and 0 <= output < len(edges):
        return _Edges((edges[output],))
    return _Edges(edges)


class ReentrantCheckpointError(ValueError):
    """The graph passes through a reentrant ``torch.utils.checkpoint`` segment, whose
    parameters a backward pass restricted to ``inputs=`` cannot reach.

    Attributes:
        task: the index of the first loss whose graph does so (0 for a single loss).
    """

    def __init__(self, task: int = 0) -> None:
        super().__init__(f"loss {task} passes through a reentrant checkpoint")
        self.task = task


def _walk(
    loss: Tensor,
    ids: Container[int],
    found: dict[int, Tensor] | None,
    seen: set[Any] | None = None,
    outside: set[int] | None = None,
    *,
    stop_at_first: bool = False,
) -> bool:
    """Walk ``loss``'s graph (each node once, leaves not expanded) for parameters whose
    ``id`` is in ``ids``: return at the first one met if ``stop_at_first``; otherwise walk
    the whole graph, collecting every parameter into ``found`` (if given) and the ids of
    the other leaves met into ``outside`` (if given). Returns whether any parameter was
    met. ``seen``, shared by several walks, makes each skip the nodes an earlier one
    visited."""
    root: Any = loss.grad_fn
    if type(root) is _REENTRANT_CHECKPOINT:
        raise ReentrantCheckpointError
    if type(root) is _DDP_SINK:  # a loss computed inside the module
        root = _through_sink(root, loss.output_nr)
    if root is None:  # the loss is itself a leaf
        if id(loss) not in ids:
            if outside is not None:
                outside.add(id(loss))
            return False
        if found is not None:
            found[id(loss)] = loss
        return True
    if seen is None:
        seen = set()
    elif root in seen:
        return False
    seen.add(root)
    accumulate_grad, reentrant_checkpoint, ddp_sink = (
        _ACCUMULATE_GRAD,
        _REENTRANT_CHECKPOINT,
        _DDP_SINK,
    )
    met = False
    stack: list[Any] = [root]
    while stack:
        for child, output in stack.pop().next_functions:
            if child is None or child in seen:
                continue
            seen.add(child)
            kind = type(child)
            if kind is not accumulate_grad:
                if kind is ddp_sink:
                    seen.discard(child)  # met again through its other outputs
                    child = _through_sink(child, output)
                elif kind is reentrant_checkpoint:
                    raise ReentrantCheckpointError
                stack.append(child)
                continue
            variable = child.variable
            if id(variable) in ids:
                if stop_at_first:
                    return True
                if found is not None:
                    found[id(variable)] = variable
                met = True
            elif outside is not None:
                outside.add(id(variable))
    return met


def reached_parameters(loss: Tensor, ids: Container[int]) -> dict[int, Tensor]:
    """Every parameter (one whose ``id`` is in ``ids``) ``loss`` depends on, by id.

    Raises:
        ReentrantCheckpointError: the graph passes through a reentrant checkpoint.
    """
    found: dict[int, Tensor] = {}
    _walk(loss, ids, found)
    return found


def reaches_any(loss: Tensor, ids: Container[int]) -> bool:
    """Whether ``loss`` depends on any of the parameters (the walk stops at the first, so
    it may end before a reentrant checkpoint below; see :func:`losses_reaching`).

    Raises:
        ReentrantCheckpointError: the walk met a reentrant checkpoint.
    """
    return _walk(loss, ids, None, stop_at_first=True)


class Reach(NamedTuple):
    """What one walk over several losses' graphs found (:func:`losses_reaching`)."""

    reaches: list[bool]
    """Whether each loss depends on one of the parameters."""
    only_parameters: bool
    """Whether every leaf the losses depend on is one of the parameters: then a backward
    pass of their sum with ``inputs=`` the parameters does what one without ``inputs=``
    does, and can skip the engine's restriction to them."""


def losses_reaching(losses: list[Tensor], ids: Container[int]) -> Reach:
    """Whether each loss depends on any of the parameters (those whose ``id`` is in
    ``ids``), whether the losses depend on any other leaf, and that none passes through a
    reentrant checkpoint, in one walk over the union of the losses' graphs, each node
    visited once.

    A loss's part of the walk skips the nodes an earlier loss's part visited, so a loss
    that met no parameter in its part (its graph joins an earlier one above every
    parameter it reaches: a head two losses share) is walked again on its own, stopping
    at the first parameter. Usually each loss has parameters of its own, and the one walk
    settles every question.

    Raises:
        ReentrantCheckpointError: with the index of the first loss whose graph passes
            through a reentrant checkpoint.
    """
    seen: set[Any] = set()
    outside: set[int] = set()
    reaches: list[bool] = []
    for index, loss in enumerate(losses):
        try:
            reaches.append(_walk(loss, ids, None, seen, outside))
        except ReentrantCheckpointError:
            raise ReentrantCheckpointError(index) from None
    for index, met in enumerate(reaches):
        if not met:  # no checkpoint below: the joint walk covered its whole graph
            reaches[index] = reaches_any(losses[index], ids)
    return Reach(reaches, not outside)
