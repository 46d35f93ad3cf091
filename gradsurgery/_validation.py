"""Checks shared by the front door and the autograd glue: each names the bad argument."""

from __future__ import annotations

import math
import operator
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, SupportsIndex

import numpy as np
import torch
from torch import Tensor

from gradsurgery.registry import get_resolver
from gradsurgery.resolvers.base import Resolver

TaskKey = SupportsIndex | str
"""A task, by index (any integer: ``int``, NumPy's, a one-element integer tensor) or name."""


def task_label(index: int, names: Sequence[str] | None) -> str:
    """How an error message names task ``index``."""
    return f"task {names[index]!r}" if names is not None else f"task {index}"


def build_resolver(
    method: str | Resolver, options: Mapping[str, Any], argument: str = "method"
) -> Resolver:
    """A resolver from a registered name plus options, or an instance used as it is;
    errors name ``argument``, the caller's name for ``method``."""
    if isinstance(method, Resolver):
        if options:
            raise TypeError(
                f"options {sorted(options)} were given with a resolver instance; "
                "pass them to its constructor (or to get_resolver) instead"
            )
        return method
    if not isinstance(method, str):
        raise TypeError(
            f"Invalid {argument}: {method!r} (expected a registered name or a Resolver instance)"
        )
    if argument == "method":
        return get_resolver(method, **options)
    try:
        return get_resolver(method, **options)
    except ValueError as error:
        raise ValueError(f"Invalid {argument}: {error}") from None


def normalize_primary(primary: TaskKey | None, names: Sequence[str] | None, T: int) -> int | None:
    """The primary task's index in ``range(T)`` from an index (negative allowed; any
    integer, such as NumPy's or a one-element integer tensor) or a name."""
    if primary is None:
        return None
    if isinstance(primary, (bool, np.bool_)) or (
        isinstance(primary, Tensor) and primary.dtype == torch.bool
    ):
        raise TypeError(f"Invalid primary: {primary!r} (expected a task index or name)")
    if isinstance(primary, str):
        if names is None:
            raise ValueError(
                f"Invalid primary: {primary!r} is a name, but the tasks have no names; "
                "pass a mapping of task name -> gradient/loss, or an index"
            )
        if primary not in names:
            raise ValueError(f"Invalid primary: {primary!r} is not a task; tasks: {list(names)}")
        return list(names).index(primary)
    try:
        index = operator.index(primary)
    except TypeError:
        raise TypeError(f"Invalid primary: {primary!r} (expected a task index or name)") from None
    if not -T <= index < T:
        raise ValueError(f"Invalid primary: {index} is out of range for {T} task(s)")
    return index % T


def task_vector(
    values: Any,
    argument: str,
    names: Sequence[str] | None,
    T: int,
    *,
    nonnegative: bool = False,
) -> Tensor | None:
    """A ``(T,)`` float64 CPU tensor of per-task numbers (``losses`` or ``weights``), checked."""
    if values is None:
        return None
    expected = f"expected {T} real numbers"
    if isinstance(values, Mapping):
        if names is None:
            raise TypeError(
                f"Invalid {argument}: a mapping needs named tasks; pass a sequence of {T} values"
            )
        if set(values) != set(names):
            raise ValueError(
                f"Invalid {argument}: keys {sorted(values)} do not match the tasks {list(names)}"
            )
        values = [values[name] for name in names]
    if isinstance(values, Tensor):
        if values.is_complex():
            raise TypeError(f"Invalid {argument}: complex values ({values.dtype}); {expected}")
        vector = values.detach()
    elif isinstance(values, np.ndarray):
        if np.iscomplexobj(values):
            raise TypeError(f"Invalid {argument}: complex values ({values.dtype}); {expected}")
        try:
            vector = torch.as_tensor(values, dtype=torch.float64)
        except (TypeError, ValueError) as error:
            raise TypeError(f"Invalid {argument}: expected {T} numbers ({error})") from None
    elif isinstance(values, Sequence) and not isinstance(values, str):
        items = []
        for index, value in enumerate(values):
            item = _real_number(value, argument, index, expected)
            try:
                items.append(torch.as_tensor(item, dtype=torch.float64).cpu())
            except OverflowError:
                raise ValueError(
                    f"Invalid {argument}: item {index} is beyond float64's range; {expected}"
                ) from None
            except (TypeError, ValueError, RuntimeError) as error:
                raise TypeError(f"Invalid {argument}: expected {T} numbers ({error})") from None
        vector = torch.stack(items) if items else torch.zeros(0, dtype=torch.float64)
    else:
        raise TypeError(f"Invalid {argument}: expected a sequence or tensor of {T} numbers")
    if vector.dim() > 1:
        raise ValueError(
            f"Invalid {argument}: shape {tuple(vector.shape)}; {expected}, one per task"
        )
    vector = vector.to("cpu", torch.float64).reshape(-1)
    if vector.shape[0] != T:
        raise ValueError(f"Invalid {argument}: got {vector.shape[0]} values for {T} task(s)")
    for index in range(T):
        value = float(vector[index])
        if not math.isfinite(value):
            raise ValueError(f"Invalid {argument}: {task_label(index, names)} has {value}")
        if nonnegative and value < 0:
            raise ValueError(
                f"Invalid {argument}: {task_label(index, names)} has {value} (expected >= 0)"
            )
    return vector


def _real_number(value: Any, argument: str, index: int, expected: str) -> Any:
    """Item ``index`` of a sequence of per-task numbers, a one-element real tensor made a
    0-d one; anything else is left to the conversion that follows."""
    if isinstance(value, (complex, np.complexfloating)) or (
        isinstance(value, Tensor) and value.is_complex()
    ):
        raise TypeError(f"Invalid {argument}: item {index} is complex ({value!r}); {expected}")
    if isinstance(value, (Tensor, np.ndarray)):
        if math.prod(value.shape) != 1:
            kind = "a tensor" if isinstance(value, Tensor) else "an array"
            raise TypeError(
                f"Invalid {argument}: item {index} is {kind} of shape {tuple(value.shape)}, "
                f"not one number; {expected}"
            )
        return value.detach().reshape(()) if isinstance(value, Tensor) else value.reshape(())
    if isinstance(value, (Sequence, Mapping)) and not isinstance(value, str):
        raise TypeError(
            f"Invalid {argument}: item {index} is a {type(value).__name__}, not one number; "
            f"{expected}"
        )
    return value


def first_nonfinite_task(G: Tensor) -> int | None:
    """The index of the first row of ``G`` with a NaN or infinite entry, if any."""
    bad = ~torch.isfinite(G).all(dim=1)
    indices = torch.nonzero(bad).flatten()
    return int(indices[0]) if indices.numel() else None


def normalize_losses(
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
        if not isinstance(loss, Tensor):
            raise TypeError(
                f"Invalid losses: {task_label(index, names)} is a {type(loss).__name__}, "
                "not a tensor"
            )
        if loss.numel() != 1:
            raise ValueError(
                f"Invalid losses: {task_label(index, names)} has shape {tuple(loss.shape)}; "
                "expected a scalar"
            )
        if loss.is_complex():
            raise TypeError(
                f"Invalid losses: {task_label(index, names)} is complex ({loss.dtype}); "
                "expected a real scalar"
            )
        if not loss.requires_grad:
            raise ValueError(
                f"Invalid losses: {task_label(index, names)} does not require grad "
                "(was it detached?)"
            )
    return names, loss_list


def all_finite_values(values: Tensor) -> bool:
    """Whether the few loss values are all finite, read as Python floats: faster than
    tensor reductions for a handful of elements, and this runs on every step."""
    return all_finite_floats(values.tolist())


def all_finite_floats(values: Sequence[float]) -> bool:
    """Whether every value is finite: a finite sum proves it (an infinity or a NaN makes
    the sum non-finite); only a non-finite sum, which finite values may also give by
    overflowing, is looked into value by value."""
    return math.isfinite(sum(values)) or all(map(math.isfinite, values))


def raise_if_nonfinite_losses(
    values: Tensor, names: Sequence[str] | None, averaged: bool = False
) -> None:
    if all_finite_values(values):
        return
    for index in range(values.shape[0]):
        if not torch.isfinite(values[index]):
            where = " (on at least one rank)" if averaged else ""
            raise ValueError(
                f"Invalid losses: {task_label(index, names)} is {float(values[index])}{where}"
            )


def normalize_params(params: Iterable[Tensor], *, keep_frozen: bool = False) -> list[Tensor]:
    """The tensors of ``params`` that require grad, each once, in order (all leaves); with
    ``keep_frozen``, those that do not as well (at least one must)."""
    return list(parameters_by_id(params, keep_frozen=keep_frozen).values())


def parameters_by_id(params: Iterable[Tensor], *, keep_frozen: bool = False) -> dict[int, Tensor]:
    """:func:`normalize_params` as a mapping ``id -> tensor`` in the same order, which is
    also the set of ids a graph walk looks parameters up in."""
    if isinstance(params, Tensor):
        params = [params]
    elif not isinstance(params, Iterable):
        raise TypeError(
            "Invalid params: expected tensors (an iterable such as model.parameters(), or a "
            f"module), got {type(params).__name__}"
        )
    result: dict[int, Tensor] = {}
    trainable = False
    for index, param in enumerate(params):
        if not isinstance(param, Tensor):
            raise TypeError(
                f"Invalid params: item {index} is a {type(param).__name__}, not a tensor"
            )
        key = id(param)
        if key in result or not (param.requires_grad or keep_frozen):
            continue
        if not param.is_leaf:
            raise ValueError(f"Invalid params: item {index} is not a leaf tensor")
        result[key] = param
        trainable = trainable or param.requires_grad
    if not trainable:
        raise ValueError("Invalid params: no tensor that requires grad")
    return result
