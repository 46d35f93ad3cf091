"""The front door: ``resolve(grads, ...)`` normalises and validates input, then dispatches."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from gradsurgery._validation import (
    TaskKey,
    build_resolver,
    first_nonfinite_task,
    normalize_primary,
    task_label,
    task_vector,
)
from gradsurgery.resolvers.base import (
    GramResolver,
    NonFiniteDirectionError,
    NonFiniteGramError,
    Resolution,
    Resolver,
    all_finite,
)

__all__ = ["resolve"]

GradientsLike = Tensor | Sequence[Tensor] | Mapping[str, Tensor]
"""A ``(T, P)`` tensor, a sequence of ``T`` 1-D tensors, or a mapping name -> 1-D tensor."""


def resolve(
    grads: GradientsLike,
    *,
    method: str | Resolver = "gr",
    primary: TaskKey | None = None,
    losses: Any = None,
    weights: Any = None,
    out: Tensor | None = None,
    **options: Any,
) -> Tensor:
    r"""Combine the gradients of ``T`` tasks into one update direction.

    Args:
        grads: the task gradients with respect to the same ``P`` parameters: a ``(T, P)``
            tensor (one row per task), a sequence of ``T`` 1-D tensors of length ``P``, or a
            mapping task name -> 1-D tensor (then ``primary``, ``losses`` and ``weights``
            may be given by name). float16, bfloat16 (both resolved in float32), float32
            or float64; on one device; finite.
        method: a registered name (see :func:`gradsurgery.available`) or a resolver
            instance. Build stateful resolvers (GradNorm, seeded PCGrad) once with
            :func:`gradsurgery.get_resolver` and pass the instance each step, so that their
            state carries over.
        primary: the primary task, by index or name; ``None`` for methods that treat tasks
            alike (primary/auxiliary methods such as GR then take task 0).
        losses: the ``T`` current loss values (real numbers), for loss-aware methods
            (GradNorm).
        weights: ``T`` non-negative loss weights :math:`c`; the resolver sees the
            gradients of the weighted losses, :math:`c_i g_i`.
        out: a ``(P,)`` tensor of ``grads``' dtype and device to write :math:`d` into (and
            return), as torch's ``out=``: dense, and outside ``torch.inference_mode``
            only a tensor made outside it; the memory it spans, from its first element to
            its last, must not overlap that of ``grads``, and its elements must not share
            memory with each other. In a loop over large matrices, one buffer saves
            allocating the result each call: above the C allocator's mmap threshold
            (32 MiB with glibc) every new tensor's pages are faulted in afresh, which on
            the CPU costs more than the cheap methods' own passes over ``grads`` with two
            to four tasks (``benchmarks/kernel.py``). The values are those of a new
            result, bit for bit. After an error its content is unspecified.
        **options: hyper-parameters of the method, when ``method`` is a name.

    Returns:
        The ``(P,)`` direction :math:`d`, in the dtype and on the device of ``grads``
        (``out`` itself when given). Write it into ``.grad`` (or use
        :func:`gradsurgery.backward`) and step any optimizer.

    Raises:
        TypeError: ``grads`` of the wrong type, dtype or layout (sparse); an option the
            method lacks; ``out`` that is not a dense tensor or of another dtype.
        ValueError: wrong rank or mismatched lengths, ``T = 0``, devices that differ,
            ``primary`` out of range or unknown, non-finite gradients or losses (the task
            is named), an unknown method (the known ones are listed), bad hyper-parameters;
            finite gradients whose Gram matrix or direction overflows their dtype (scale
            the losses or the weights down); ``out`` of the wrong shape or device,
            requiring grad, an inference tensor outside inference mode, or overlapping
            ``grads``' memory or its own.

    Example:
        >>> import torch, gradsurgery
        >>> G = torch.tensor([[1.0, 0.0], [-1.0, 1.0]])
        >>> gradsurgery.resolve(G, method="sum")
        tensor([0., 1.])
        >>> gradsurgery.resolve({"asr": G[0], "se": G[1]}, method="gr", primary="asr")
        tensor([1.7071, 1.0000])
    """
    if "resolver" in options:  # gradsurgery.backward's name for it
        raise TypeError(
            "Invalid argument resolver=: resolve() takes the method as method= (a registered "
            "name or a resolver instance)"
        )
    G, names = _as_matrix(grads)
    T = G.shape[0]
    resolver = build_resolver(method, options)
    primary_index = normalize_primary(primary, names, T)
    loss_vector = task_vector(losses, "losses", names, T)
    weight_vector = task_vector(weights, "weights", names, T, nonnegative=True)
    if out is not None:
        _check_out(out, G)
    resolution = run_resolver(
        resolver,
        G,
        (G.shape[1],),
        primary=primary_index,
        losses=loss_vector,
        task_weights=weight_vector,
        names=names,
        out=out,
        full_gram=False,
    )
    return resolution.direction


def _check_out(out: Any, G: Tensor) -> None:
    if not isinstance(out, Tensor):
        raise TypeError(f"Invalid out: expected a tensor, got {type(out).__name__}")
    _raise_if_not_strided(out, "out")
    if out.is_inference() and not torch.is_inference_mode_enabled():
        raise ValueError(
            "Invalid out: an inference tensor (made under torch.inference_mode) cannot be "
            "written outside it"
        )
    if out.shape != (G.shape[1],):
        raise ValueError(f"Invalid out: shape {tuple(out.shape)}; expected ({G.shape[1]},)")
    if out.dtype != G.dtype:
        raise TypeError(f"Invalid out: {out.dtype}; the task gradients are {G.dtype}")
    if out.device != G.device:
        raise ValueError(f"Invalid out: on {out.device}; the task gradients are on {G.device}")
    if out.requires_grad:
        raise ValueError("Invalid out: it requires grad (pass a tensor outside autograd)")
    if out.shape[0] > 1 and out.stride(0) == 0:
        raise ValueError("Invalid out: its elements share memory (an expanded tensor)")
    if _spans_overlap(out, G):
        raise ValueError("Invalid out: its memory span overlaps that of grads")


def _raise_if_not_strided(tensor: Tensor, argument: str) -> None:
    if tensor.layout != torch.strided:
        raise TypeError(
            f"Invalid {argument}: layout {tensor.layout} is not supported (expected a dense "
            "tensor; convert it with .to_dense())"
        )


def _spans_overlap(a: Tensor, b: Tensor) -> bool:
    """Whether the memory ``a`` and ``b`` span overlap: the bytes from each one's first
    element to its last, whatever storage object holds them (two tensors made from one
    NumPy array have two)."""
    if a.numel() == 0 or b.numel() == 0 or a.device != b.device:
        return False
    (a_start, a_end), (b_start, b_end) = _span(a), _span(b)
    return a_start < b_end and b_start < a_end


def _span(tensor: Tensor) -> tuple[int, int]:
    last = sum((size - 1) * stride for size, stride in zip(tensor.shape, tensor.stride()))
    start = tensor.data_ptr()
    return start, start + (last + 1) * tensor.element_size()


def run_resolver(
    resolver: Resolver,
    G: Tensor,
    block_sizes: Sequence[int],
    *,
    primary: int | None,
    losses: Tensor | None,
    task_weights: Tensor | None,
    names: Sequence[str] | None,
    what: str = "Invalid grads",
    out: Tensor | None = None,
    full_gram: bool = True,
) -> Resolution:
    """Run ``resolver`` on a validated matrix, turning non-finite input into a clear error
    (which begins with ``what``), and a non-finite direction from finite input into one
    that says to scale the losses down.

    Finiteness is checked where it is cheap. For Gram resolvers, the input on the
    ``T x T`` Gram (an infinite or NaN entry of ``G`` makes its diagonal non-finite), and
    the direction by a bound on it from the weights and the Gram's diagonal, with a pass
    over the ``(P,)`` direction only where the bound fails
    (:class:`~gradsurgery.resolvers.base.GramResolver`). For stateless loss weightings
    (no Gram: the sum, the mean), on the ``(P,)`` result. For other resolvers, stateful
    loss weightings included, on ``G`` itself (before they run, so that non-finite input
    changes no state) and on the result. Only on failure is ``G`` scanned row by row to
    name the task.

    ``out``, a checked ``(P,)`` tensor or ``None``: the direction is written into it (a
    :class:`~gradsurgery.resolvers.base.GramResolver` forms it there; other resolvers'
    direction is copied in).

    ``full_gram``: whether the resolution must carry the full Gram matrices (see
    :meth:`~gradsurgery.resolvers.base.GramResolver.resolve_blocks`).
    """
    if resolver.needs_losses and losses is None:
        raise ValueError(f"{type(resolver).__name__} needs losses=: the {G.shape[0]} loss values")
    gram_checked = isinstance(resolver, GramResolver) and resolver.uses_gram
    if not isinstance(resolver, GramResolver) or (not gram_checked and _keeps_state(resolver)):
        raise_if_nonfinite_rows(G, names, what)  # before it runs, so that its state is kept
    into: dict[str, Any] = {}  # GramResolver's own arguments, given only where needed
    if isinstance(resolver, GramResolver):  # it forms the direction in out (others: below)
        if out is not None:
            into["out"] = out
        if not full_gram:
            into["full_gram"] = False
    try:
        resolution = resolver.resolve_blocks(
            G, block_sizes, primary=primary, losses=losses, task_weights=task_weights, **into
        )
    except NonFiniteGramError:
        raise_if_nonfinite_rows(G, names, what)
        if task_weights is not None:
            raise ValueError(
                "the task gradients are finite but the Gram matrix of the weighted gradients "
                "c_i g_i overflows float64; scale the losses or the weights down"
            ) from None
        raise ValueError(
            "the task gradients are finite but their Gram matrix overflows "
            f"{G.dtype}; scale the losses down"
        ) from None
    except NonFiniteDirectionError:  # raised only once G's Gram, hence G, proved finite
        raise _nonfinite_direction(resolver, G) from None
    if not gram_checked and not all_finite(resolution.direction):
        raise_if_nonfinite_rows(G, names, what)
        raise _nonfinite_direction(resolver, G)
    if out is not None and resolution.direction is not out:
        out.copy_(resolution.direction)
        resolution = dataclasses.replace(resolution, direction=out)
    return resolution


def _keeps_state(resolver: Resolver) -> bool:
    """Whether ``resolver`` keeps state across calls (it overrides ``state_dict``)."""
    return type(resolver).state_dict is not Resolver.state_dict


def _nonfinite_direction(resolver: Resolver, G: Tensor) -> ValueError:
    return ValueError(
        f"{type(resolver).__name__} gave a non-finite direction from finite task gradients "
        f"(overflow in {G.dtype}?); scale the losses down"
    )


def raise_if_nonfinite_rows(G: Tensor, names: Sequence[str] | None, what: str) -> None:
    """Raise a ``ValueError`` that begins with ``what`` and names the first task whose row
    of ``G`` has a NaN or infinite entry; return if there is none."""
    if all_finite(G):
        return
    bad = first_nonfinite_task(G)
    if bad is not None:
        raise ValueError(f"{what}: {task_label(bad, names)} has non-finite values (NaN or inf)")


def _as_matrix(grads: GradientsLike) -> tuple[Tensor, list[str] | None]:
    """``grads`` as a ``(T, P)`` tensor (without a copy when it already is one), and names."""
    names: list[str] | None = None
    if isinstance(grads, Tensor):
        _raise_if_not_strided(grads, "grads")
        if grads.dim() != 2:
            raise ValueError(
                f"Invalid grads: expected a 2-D (T, P) tensor, got shape {tuple(grads.shape)}"
                + ("; for one task use grads.unsqueeze(0)" if grads.dim() == 1 else "")
            )
        G = grads.detach()
    elif isinstance(grads, Mapping):
        names = list(grads)
        if not all(isinstance(name, str) for name in names):
            raise TypeError(f"Invalid grads: mapping keys must be task names (str), got {names}")
        G = _stack_rows(list(grads.values()), names)
    elif isinstance(grads, Sequence) and not isinstance(grads, str):
        G = _stack_rows(list(grads), None)
    else:
        raise TypeError(
            "Invalid grads: expected a (T, P) tensor, a sequence of 1-D tensors or a mapping "
            f"name -> 1-D tensor, got {type(grads).__name__}"
        )
    if G.shape[0] == 0:
        raise ValueError("Invalid grads: no tasks (T = 0)")
    if G.dtype not in _SUPPORTED_DTYPES:
        raise TypeError(
            f"Invalid grads: {G.dtype} is not supported (expected float16, bfloat16, float32 "
            "or float64; cast the gradients to one of them)"
        )
    return G, names


_SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _stack_rows(rows: list[Any], names: list[str] | None) -> Tensor:
    if not rows:
        raise ValueError("Invalid grads: no tasks (T = 0)")
    for index, row in enumerate(rows):
        label = task_label(index, names)
        if not isinstance(row, Tensor):
            raise TypeError(f"Invalid grads: {label} is a {type(row).__name__}, not a tensor")
        _raise_if_not_strided(row, f"grads ({label})")
        if row.dim() != 1:
            raise ValueError(
                f"Invalid grads: {label} has shape {tuple(row.shape)}; expected a 1-D tensor "
                "(flatten it, or use gradsurgery.backward for parameter tensors)"
            )
        first = rows[0]
        if row.shape != first.shape:
            raise ValueError(
                f"Invalid grads: {label} has length {row.shape[0]}, "
                f"{task_label(0, names)} has {first.shape[0]}"
            )
        if row.dtype != first.dtype:
            raise TypeError(
                f"Invalid grads: {label} is {row.dtype}, {task_label(0, names)} is {first.dtype}"
            )
        if row.device != first.device:
            raise ValueError(
                f"Invalid grads: {label} is on {row.device}, "
                f"{task_label(0, names)} on {first.device}"
            )
    return torch.stack([row.detach() for row in rows])
