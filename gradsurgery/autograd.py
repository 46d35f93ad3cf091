r"""From losses to ``.grad``: task gradients of the shared parameters, resolved, written back.

:func:`~gradsurgery.backward` replaces ``sum(losses).backward()`` in a training loop;
:class:`Accumulator` does the same over a gradient-accumulation window. They find, by
walking the autograd graph (no computation), which parameters each task's loss reaches.
Parameters that only one task reaches get that task's gradient directly (of its weighted
loss :math:`c_i L_i` with ``weights=``; a loss weighting, which back-propagates
:math:`\sum_i w_i c_i L_i` once, scales it by its weight :math:`w_i` too; a resolver that
trains on log-losses, such as DB-MTL, has every task back-propagated as
:math:`c_i \log L_i`); parameters that two or more tasks reach ("shared") get the
resolver's direction. Each task's gradient is
accumulated by autograd straight into its row of the ``T x P`` task-gradient matrix (the
shared parameters' ``.grad`` temporarily point into it), so the matrix is the only extra
copy.

Under ``torch.distributed`` the task gradients are instead taken with
:func:`torch.autograd.grad` (so that DDP's gradient hooks never fire), averaged over the
ranks by :mod:`gradsurgery.distributed`, and only then resolved.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Container, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager, ExitStack, nullcontext
from dataclasses import dataclass, field
from functools import lru_cache, wraps
from typing import Any, Literal, ParamSpec, TypeVar

import torch
from torch import Tensor, nn

from gradsurgery import distributed
from gradsurgery._graph import ReentrantCheckpointError, losses_reaching, reached_parameters
from gradsurgery._validation import (
    TaskKey,
    all_finite_floats,
    all_finite_values,
    build_resolver,
    normalize_losses,
    normalize_params,
    normalize_primary,
    parameters_by_id,
    raise_if_nonfinite_losses,
    task_label,
    task_vector,
)
from gradsurgery._weighting import (
    coefficients,
    is_loss_weighting,
    is_plain_sum,
    stack_losses,
    weighted_total,
)
from gradsurgery.diagnostics import cosine_from_gram, norm_ratio_from_gram
from gradsurgery.resolve import raise_if_nonfinite_rows, run_resolver
from gradsurgery.resolvers.base import GramResolver, Resolver, all_finite, gram_of_blocks

__all__ = ["Accumulator", "BackwardResult", "backward"]

Granularity = Literal["global", "tensor"]
ResolutionMode = Literal["window", "micro_batch"]

_NONFINITE_TASK_GRADIENTS = "Non-finite task gradients"

_P = ParamSpec("_P")
_R = TypeVar("_R")


_AUTOCAST_DEVICES = ("cpu", "cuda")
"""The device types whose :func:`torch.autocast` the glue turns off while it runs."""


def _as_loss_backward_runs(function: Callable[_P, _R]) -> Callable[_P, _R]:
    """``function`` run as ``loss.backward()`` runs whatever the caller's context: with
    autograd on, outside :func:`torch.inference_mode`, and with :func:`torch.autocast` off.

    Under :func:`torch.no_grad` or :func:`torch.inference_mode`, the little graph the glue
    builds on the losses (their weighted sum, the loss weights and a ``scaler``'s scale)
    would have no ``grad_fn``.
    Inside an autocast region, the glue's own arithmetic (the Gram's products, the
    weighted sum of the task gradients) would be cast to half precision, where
    ``loss.backward()``'s is not: the task gradients are resolved in their own dtype.
    """

    @wraps(function)
    def as_loss_backward_runs(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        autocast = [device for device in _AUTOCAST_DEVICES if torch.is_autocast_enabled(device)]
        inference = torch.is_inference_mode_enabled()
        if torch.is_grad_enabled() and not autocast and not inference:
            return function(*args, **kwargs)
        with ExitStack() as stack:
            if inference:
                stack.enter_context(torch.inference_mode(False))
            stack.enter_context(torch.enable_grad())
            for device in autocast:
                stack.enter_context(torch.autocast(device, enabled=False))
            return function(*args, **kwargs)

    return as_loss_backward_runs


@dataclass(frozen=True, eq=False)
class BackwardResult:
    r"""What :func:`backward` computed on the way, for logging; nothing here costs extra.
    Compared by identity (its fields are tensors).

    Attributes:
        task_names: the tasks' names (``"0"``, ``"1"``, ... for a sequence of losses).
        gram: ``(B, T, T)`` float64 Gram matrices of the task gradients of the shared
            parameters, one per resolved block (``B = 1`` for global granularity, one per
            shared tensor for per-tensor granularity); ``None`` when no task gradients were
            formed (a loss weighting such as ``sum`` without ``diagnostics=True``, no
            shared parameters, or a non-finite step left to the scaler), or when the
            resolver reads no Gram matrix (``db_mtl``, ``graddrop``) and
            ``diagnostics=True`` was not given.
        weights: ``(B, T)`` weights of the task gradients in the resolved direction (loss
            weights included: :math:`d = \sum_i w_i g_i` with :math:`g_i` the gradient of
            the unweighted loss), or ``None`` for resolvers that are not weightings.
        shared_parameters: how many scalar parameters were resolved (``P``); 0 for a loss
            weighting without ``diagnostics=True``, which forms no task gradients.
        finite: ``False`` when the step had non-finite losses or task gradients and a
            ``scaler`` was given: it was not resolved, and the shared parameters received
            the plain sum, which ``GradScaler.step`` skips where it is non-finite (as after
            an overflow; a non-finite loss with finite gradients, such as an infinite
            constant added to it, gives a finite sum, which it steps on). For a loss
            weighting without ``diagnostics=True``, which forms no task gradients, it
            tells whether the losses were finite.
        blocks: the shared parameters of each block, in the order of ``gram``'s first
            dimension (for per-parameter-group diagnostics).
        loss_weights: the ``(T,)`` float64 loss weights :math:`c` of the call, or ``None``
            when none were given. ``gram`` is that of the gradients of the weighted losses,
            :math:`c_i g_i`, as the resolver saw them (see :attr:`gram_weights`).
    """

    task_names: tuple[str, ...]
    gram: Tensor | None
    weights: Tensor | None
    shared_parameters: int
    finite: bool = True
    blocks: tuple[tuple[Tensor, ...], ...] = field(default=(), repr=False)
    loss_weights: Tensor | None = field(default=None, repr=False)

    @property
    def gram_weights(self) -> Tensor | None:
        """``(B, T)`` weights of the gradients ``gram`` describes (those of the weighted
        losses, :math:`c_i g_i`): :math:`w_i / c_i`, and 0 for a task of loss weight 0
        (whose gradient there is zero); ``weights`` itself without loss weights."""
        if self.weights is None or self.loss_weights is None:
            return self.weights
        c = self.loss_weights.to(self.weights.device, self.weights.dtype)
        return torch.where(c > 0, self.weights / torch.where(c > 0, c, 1.0), 0.0)

    @property
    def cosine(self) -> Tensor | None:
        """``(T, T)`` pairwise cosine similarity of the whole shared task gradients (of
        the weighted losses, :math:`c_i g_i`, as :attr:`gram`: 0 for a task of loss
        weight 0)."""
        return None if self.gram is None else cosine_from_gram(self.gram.sum(dim=0))

    @property
    def norm_ratio(self) -> Tensor | None:
        """``(T, T)`` ratio ``||c_i g_i|| / ||c_j g_j||`` of the whole shared task
        gradients of the weighted losses, as :attr:`gram` (``||g_i|| / ||g_j||`` without
        loss weights)."""
        return None if self.gram is None else norm_ratio_from_gram(self.gram.sum(dim=0))


@_as_loss_backward_runs
def backward(
    losses: Mapping[str, Tensor] | Sequence[Tensor],
    params: Iterable[Tensor] | nn.Module,
    *,
    resolver: str | Resolver,
    primary: TaskKey | None = None,
    weights: Any = None,
    granularity: Granularity = "global",
    diagnostics: bool = False,
    scaler: torch.amp.GradScaler | None = None,
    process_group: distributed.ProcessGroup | None = None,
    sync: bool = True,
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
        params: the parameters to compute gradients for (e.g. ``model.parameters()``), or
            a module (its parameters; a :class:`~torch.nn.parallel.DistributedDataParallel`
            module also gives its process group). Those not requiring grad are skipped,
            and tensors outside ``params`` are never touched.
        resolver: a registered name or a resolver instance (keep one instance across
            steps for stateful resolvers).
        primary: the primary task, by index or name.
        weights: non-negative loss weights, applied to the losses before any gradient is
            taken (:math:`c_i L_i`), as a sequence or a mapping by task name.
        granularity: ``"global"`` resolves the shared parameters as one flattened vector
            (as PCGrad's paper); ``"tensor"`` resolves each shared parameter tensor on its
            own (as GR's authors do), in one batched computation.
        diagnostics: make sure the result carries the Gram matrix of the task gradients.
            Loss weightings (``sum``, ``mean``, ``uw``, ...) otherwise need one backward
            pass and no task gradients; with ``diagnostics=True`` they also form the
            shared parameters' task gradients (``T`` more backward passes, which write no
            ``.grad``) and their Gram, so that a baseline run can be monitored like the
            others. It changes no ``.grad`` and no resolver state: the update is still the
            weighted sum's single pass.
        scaler: the :class:`torch.amp.GradScaler` of a mixed-precision loop. The losses
            are scaled by it, the task gradients are unscaled before resolution (so every
            resolver sees true gradients) and the direction is scaled back into ``.grad``,
            where ``scaler.step(optimizer)`` unscales it as usual. A step with non-finite
            losses or task gradients is not resolved and does not raise: the shared
            parameters get the plain sum, non-finite after an overflow, and the scaler
            skips the step (see :attr:`BackwardResult.finite` for finite gradients of a
            non-finite loss); the resolver's state is left as it was. A loss weighting
            (``uw``, ``dwa``, ``famo``, ``rlw``, ...) takes its weights, and its own step,
            from finite loss values before its single backward pass (with
            ``diagnostics=True`` too), so on a step whose gradients then overflow, which
            the scaler skips, its state has still moved.
        process_group: the ``torch.distributed`` group to average over (default: the
            default group, or a DDP module's own group).
        sync: when ``torch.distributed`` is initialised, average the task gradients over
            ``process_group`` before resolving (see :mod:`gradsurgery.distributed`);
            ``False`` keeps every rank's gradients local.

    Returns:
        A :class:`BackwardResult` with the Gram matrices and weights the resolver used.

    Each parameter's ``.grad`` is accumulated, as ``loss.backward()`` does: the resolved
    direction is added to an existing ``.grad``. Parameters no task reaches are untouched.
    Sparse gradients (``nn.Embedding(sparse=True)``) work: a shared parameter's task
    gradients are rows of a dense matrix, so its resolved ``.grad`` is dense, and an
    existing sparse ``.grad`` becomes dense when the direction is added to it (as autograd
    does when it adds a dense gradient); optimizers that take only sparse gradients, such
    as :class:`torch.optim.SparseAdam`, cannot step them. A loss weighting's single
    backward pass keeps autograd's layout. Dense gradients are laid out as autograd lays
    them out, with the parameter's strides (``channels_last``, a transposed weight).

    Where task gradients are formed, hooks on a shared parameter run in each task's
    pass, on that task's gradient, as for ``T`` separate ``loss.backward()`` calls; the
    resolved direction is written after them (a loss weighting's single pass runs them
    once, as ``loss.backward()`` does; with ``diagnostics=True`` its task passes run
    gradient hooks too, but no ``register_post_accumulate_grad_hook``, as they accumulate
    nothing). So a hook registered with
    ``register_post_accumulate_grad_hook`` (an optimizer stepping inside the backward
    pass) would see task gradients, never the resolved ``.grad`` (and under
    ``torch.distributed`` it does not run at all): step the optimizer after
    :func:`backward` instead.

    For gradient accumulation with resolution over the whole window, see
    :class:`Accumulator`; calling :func:`backward` on each micro-batch resolves each one.

    Cost: for a loss weighting, one backward pass; its task gradients are never formed,
    so, as with ``loss.backward()``, non-finite gradients from finite losses reach
    ``.grad`` unchecked (``diagnostics=True`` forms and checks them). Otherwise one
    backward pass per task, each through the part of the graph that task reaches (with an
    SE front end feeding a recogniser: one pass through both, plus one through the front
    end), and the ``T x P`` matrix of the shared parameters' task gradients. Distributed:
    one all-reduce of that matrix and one of the task-specific gradients, plus three tiny
    collectives.

    Raises:
        TypeError: a loss or parameter that is not a tensor, a mapping without task names,
            a complex parameter that two tasks share, ``diagnostics`` or ``sync`` not a
            ``bool``, a ``scaler`` that is not a ``GradScaler``.
        ValueError: a loss that is not a scalar, a non-finite loss (the task is named; not
            with a ``scaler``), a loss that is not positive for a resolver that trains on
            :math:`\\log L_i` (DB-MTL), a loss that reaches none of ``params``, a loss computed
            through :func:`torch.utils.checkpoint.checkpoint` with ``use_reentrant=True``
            (torch's default; its parameters are outside the autograd graph, so pass
            ``use_reentrant=False``), bad ``primary``,
            ``weights`` or ``granularity``, shared parameters of different dtypes or
            devices, finite task gradients whose Gram matrix or resolved direction
            overflows their dtype (scale the losses down).
        gradsurgery.distributed.DistributedMismatchError: ranks whose tasks reach
            different parameters (raised on every rank).

    After an error the shared parameters' ``.grad`` are as they were, but parameters that
    one task alone reaches may already hold that task's gradient (autograd writes it while
    the task's pass runs, before non-finite task gradients are found): zero the gradients
    before the next step.
    """
    built = build_resolver(resolver, {}, "resolver")
    if is_loss_weighting(built) and not diagnostics and not distributed.is_initialized():
        # (Accumulator checks its own options)
        _check_options(granularity, "micro_batch", scaler, sync, diagnostics)
        return _backward_loss_weighting(losses, params, built, primary, weights, scaler)
    accumulator = Accumulator(
        params,
        resolver=built,
        primary=primary,
        weights=weights,
        granularity=granularity,
        resolution="micro_batch",
        diagnostics=diagnostics,
        scaler=scaler,
        process_group=process_group,
        sync=sync,
    )
    result = accumulator.backward(losses)
    assert result is not None
    return result


def _backward_loss_weighting(
    losses: Mapping[str, Tensor] | Sequence[Tensor],
    params: Iterable[Tensor] | nn.Module,
    resolver: GramResolver,
    primary: TaskKey | None,
    weights: Any,
    scaler: torch.amp.GradScaler | None,
) -> BackwardResult:
    """:func:`backward` for a loss weighting on one process: one backward pass of
    :math:`\\sum_i w_i c_i L_i`, with the checks of :class:`Accumulator` and none of its
    window (it runs on every step of such a method, so it is kept lean)."""
    names, loss_list = normalize_losses(losses)
    T = len(loss_list)
    by_id = parameters_by_id(params.parameters() if isinstance(params, nn.Module) else params)
    parameters = list(by_id.values())
    primary_index = normalize_primary(primary, names, T)
    loss_weights = task_vector(weights, "weights", names, T, nonnegative=True)
    stacked = stack_losses(loss_list)
    loss_floats = stacked.tolist()  # one read of the values (not differentiated)
    finite = all_finite_floats(loss_floats)
    if not finite and (scaler is None or not scaler.is_enabled()):
        raise_if_nonfinite_losses(torch.tensor(loss_floats, dtype=torch.float64), names)
    only_parameters = _check_reach(loss_list, by_id, names)
    weighting = resolver if finite else None
    task_weights = coefficients(weighting, primary_index, loss_floats, loss_weights)
    total = weighted_total(stacked, task_weights, is_plain_sum(weighting, loss_weights))
    if scaler is not None:
        total = scaler.scale(total)
    _backward_into(total, parameters, only_parameters)
    return BackwardResult(
        _display_names(names, T), None, task_weights, 0, finite=finite, loss_weights=loss_weights
    )


class Accumulator:
    r"""Task gradients accumulated over micro-batches, resolved once per window.

    Gradient accumulation sums the gradients of several micro-batches before one optimizer
    step. Resolution is non-linear, so resolving each micro-batch and summing (what GR's
    authors' trainer does) differs from resolving the summed task gradients of the window.
    The window is the sound choice, since it resolves the gradients the optimizer actually
    steps on, and it is the default::

        accumulator = gradsurgery.Accumulator(model.parameters(), resolver="gr", primary="asr")
        for index, batch in enumerate(loader):
            accumulator.backward(model.losses(batch))  # task gradients summed, no resolution
            if (index + 1) % 4 == 0:
                result = accumulator.resolve()  # resolve the window, write .grad
                optimizer.step()
                optimizer.zero_grad()

    Args:
        params, resolver, primary, weights, granularity, diagnostics, scaler, process_group, sync:
            as for :func:`backward`; fixed for the accumulator's life. Which of
            ``params`` require grad is read at each call, as ``torch.optim`` does: one
            frozen when the accumulator is built gets its gradients once unfrozen.
        resolution: ``"window"`` (default) holds the ``T x P`` task-gradient matrix of the
            shared parameters across the window and resolves it in :meth:`resolve`;
            under ``torch.distributed`` it is averaged once per window, like DDP's
            ``no_sync()`` accumulation. ``"micro_batch"`` resolves in every
            :meth:`backward` call (the reference trainer's choice; one all-reduce per
            micro-batch under ``torch.distributed``).

    Under ``torch.distributed``, the ranks meet in every :meth:`backward` call with
    ``"micro_batch"``, and with a loss weighting (whose weights come from the loss values
    averaged over the ranks) in either mode: every rank must then make the same number of
    :meth:`backward` calls per window, or the ranks block until the process group's
    timeout. A resolver of task gradients with ``"window"``, on tasks that share
    parameters, meets them only in :meth:`resolve`.

    In both modes the resolved direction is ADDED to ``.grad``, and the loss values handed
    to loss-aware resolvers of task gradients are the mean over the window's
    micro-batches. Parameters of one task accumulate their gradient as ``loss.backward()``
    would. A loss weighting (``sum``, ``mean``, ``uw``, ...) has no task gradients to
    hold: it back-propagates each micro-batch with the weights of that micro-batch, in
    either mode, and with ``diagnostics=True`` as without (the shared parameters' task
    gradients are then summed over the window for the Gram alone, and the result carries
    the last micro-batch's weights). With a ``scaler``, keep its scale fixed within a
    window (call ``scaler.update()`` only after ``scaler.step``), as usual.

    An error in :meth:`backward` after the checks of its arguments (a backward pass that
    fails, an interruption, non-finite task gradients with ``diagnostics=True``) drops
    the window, which would hold part of that micro-batch: :attr:`pending` is 0 again.
    Parameters of one task, and those of a loss weighting, may already hold the window's
    gradients: zero the gradients before the next window, as after an error in
    :func:`backward`. A stateful loss weighting (``uw``, ``dwa``, ``famo``) has taken
    that micro-batch's step where its weights were computed before the error (they come
    before its backward pass; non-finite task gradients found with ``diagnostics=True``
    stop the call before them).
    """

    def __init__(
        self,
        params: Iterable[Tensor] | nn.Module,
        *,
        resolver: str | Resolver,
        primary: TaskKey | None = None,
        weights: Any = None,
        granularity: Granularity = "global",
        resolution: ResolutionMode = "window",
        diagnostics: bool = False,
        scaler: torch.amp.GradScaler | None = None,
        process_group: distributed.ProcessGroup | None = None,
        sync: bool = True,
    ) -> None:
        _check_options(granularity, resolution, scaler, sync, diagnostics)
        if isinstance(params, nn.Module):
            if process_group is None and isinstance(params, nn.parallel.DistributedDataParallel):
                process_group = params.process_group
            params = params.parameters()
        self.resolver = build_resolver(resolver, {}, "resolver")
        self.primary = primary
        self.weights = weights
        self.granularity: Granularity = granularity
        self.resolution: ResolutionMode = resolution
        self.diagnostics = diagnostics
        self.scaler = scaler
        self.process_group = process_group
        self.sync = sync
        self._parameters = normalize_params(params, keep_frozen=True)
        self._position = {id(p): index for index, p in enumerate(self._parameters)}
        self._window: _Window | None = None
        self._last: BackwardResult | None = None

    @property
    def pending(self) -> int:
        """How many micro-batches wait in the current window (0 after :meth:`resolve`)."""
        return 0 if self._window is None else self._window.count

    @_as_loss_backward_runs
    def backward(self, losses: Mapping[str, Tensor] | Sequence[Tensor]) -> BackwardResult | None:
        """Back-propagate one micro-batch's task losses.

        Returns:
            With ``resolution="micro_batch"``, the micro-batch's :class:`BackwardResult`;
            with ``"window"``, ``None`` (the window is resolved by :meth:`resolve`).
        """
        self._add(losses)
        if self.resolution == "micro_batch":
            return self._resolve()
        return None

    @_as_loss_backward_runs
    def resolve(self) -> BackwardResult:
        """Resolve the window's task gradients into ``.grad`` and start a new window.

        With ``resolution="micro_batch"`` every micro-batch is already resolved; this
        returns the last one's result.

        Raises:
            RuntimeError: no micro-batch since the last :meth:`resolve`.
            ValueError: non-finite task gradients or losses in the window (without a
                ``scaler``); the window is dropped, and ``.grad`` is left as
                :func:`backward` leaves it after an error.
        """
        if self.resolution == "micro_batch":
            if self._last is None:
                raise RuntimeError("Accumulator.resolve: no micro-batch yet; call backward()")
            return self._last
        if self._window is None:
            raise RuntimeError(
                "Accumulator.resolve: the window is empty; call backward() on a micro-batch first"
            )
        return self._resolve()

    # -- internals ---------------------------------------------------------------------

    @property
    def _distributed(self) -> bool:
        """Whether task gradients are averaged over ranks."""
        return self.sync and distributed.world_size(self.process_group) > 1

    @property
    def _checks_shared_gradients_early(self) -> bool:
        """Whether a loss weighting's diagnostic task gradients are checked as each
        micro-batch forms them (before its ``.grad`` is written), not at resolution: on one
        process (otherwise only the averaged ones count) and without a ``scaler`` (which
        takes non-finite steps)."""
        return not (distributed.is_initialized() or self._leaves_nonfinite_to_scaler)

    @property
    def _leaves_nonfinite_to_scaler(self) -> bool:
        return self.scaler is not None and self.scaler.is_enabled()

    def _same_draws(self, device: torch.device) -> AbstractContextManager[None]:
        """Random draws agree across ranks inside this context (see distributed)."""
        if self._distributed:
            return distributed.shared_random_state(self.process_group, device)
        return nullcontext()

    def _scale(self) -> float | None:
        if self.scaler is None or not self.scaler.is_enabled():
            return None
        return float(self.scaler.get_scale())

    def _add(self, losses: Mapping[str, Tensor] | Sequence[Tensor]) -> None:
        names, loss_list = normalize_losses(losses)
        T = len(loss_list)
        window = self._window
        if window is not None and (names != window.names or T != window.T):
            raise ValueError(
                f"Invalid losses: the tasks changed within the accumulation window "
                f"(from {window.display_names} to {names or T} tasks)"
            )
        primary_index = normalize_primary(self.primary, names, T)
        loss_weights = task_vector(self.weights, "weights", names, T, nonnegative=True)
        loss_floats = [loss.detach().item() for loss in loss_list]
        loss_values = torch.tensor(loss_floats, dtype=torch.float64)
        if not (self._leaves_nonfinite_to_scaler or self._distributed):
            raise_if_nonfinite_losses(loss_values, names)
        if self.resolver.trains_on_log_losses and not self._distributed:
            _raise_if_not_positive(loss_floats, names, self.resolver)
        capture = distributed.is_initialized()
        loss_only = is_loss_weighting(self.resolver)
        # A loss weighting without diagnostics needs no task gradients, so not which
        # parameters each task reaches: only that each reaches one (one joint walk).
        fast = loss_only and not self.diagnostics and not capture
        reached: list[dict[int, Tensor]] | None = None
        only_parameters = False
        if fast:
            only_parameters = _check_reach(loss_list, self._position, names)
        else:
            reached = _reached_by_task(loss_list, self._position, names)
        if reached is None:
            shared: list[Tensor] = []
            weights_only = True
        else:
            counts: dict[int, int] = {}
            for task_params in reached:
                for key in task_params:
                    counts[key] = counts.get(key, 0) + 1
            shared = [p for p in self._parameters if counts.get(id(p), 0) >= 2]
            # a loss weighting's .grad is always its weighted sum's; diagnostics only add
            # the shared task gradients (G) for the Gram
            weights_only = not shared or loss_only

        if window is None:
            window = _Window(
                names=names,
                display_names=_display_names(names, T),
                T=T,
                primary=primary_index,
                loss_weights=loss_weights,
                weights_only=weights_only,
                loss_sum=[0.0] * T,
                not_positive=[False] * T,
            )
            if shared and (not weights_only or self.diagnostics):
                _check_same_kind(shared)
                if self.granularity == "tensor":
                    # stable: equal sizes become runs of one batch
                    shared.sort(key=lambda p: p.numel())
                    window.block_sizes = [p.numel() for p in shared]
                else:
                    window.block_sizes = [sum(p.numel() for p in shared)]
                window.shared = shared
                first = shared[0]
                window.G = torch.zeros(
                    T, sum(window.block_sizes), dtype=first.dtype, device=first.device
                )
            self._window = window
        elif weights_only != window.weights_only or (
            window.G is not None and {id(p) for p in shared} != {id(p) for p in window.shared}
        ):
            raise ValueError(
                "Invalid losses: the tasks reach different shared parameters than earlier in "
                "the accumulation window; resolve() the window first"
            )
        window.loss_sum = [total + value for total, value in zip(window.loss_sum, loss_floats)]
        if self.resolver.trains_on_log_losses and self._distributed:  # (one process: raised)
            window.not_positive = [
                seen or _not_positive(value)
                for seen, value in zip(window.not_positive, loss_floats)
            ]
        window.count += 1
        try:  # the backward passes, into the window and .grad
            if weights_only:
                if window.G is not None:  # a loss weighting with diagnostics
                    assert reached is not None
                    scaled = self._scaled(window, loss_list)
                    self._shared_task_gradients(window, scaled, reached)
                self._backward_weighted_sum(
                    window, self._trained(loss_list), reached, loss_values, capture, only_parameters
                )
            else:
                assert reached is not None
                _task_gradients(window, self._scaled(window, loss_list), reached, capture)
        except BaseException:  # the window holds part of this micro-batch: drop it
            self._window = None
            raise

    def _scaled(self, window: _Window, losses: list[Tensor]) -> list[Tensor]:
        """The losses times their loss weights :math:`c_i`, scaled by the ``scaler``; for a
        resolver that trains on log-losses, :math:`c_i \\log L_i` (scaled)."""
        losses = self._trained(losses)
        loss_weights = window.loss_weights
        scaled = [
            loss if loss_weights is None else loss * float(loss_weights[index])
            for index, loss in enumerate(losses)
        ]
        if self.scaler is not None:
            scaled = [self.scaler.scale(loss) for loss in scaled]
        return scaled

    def _trained(self, losses: list[Tensor]) -> list[Tensor]:
        """What each task back-propagates: its loss, or its logarithm for a resolver that
        trains on log-losses."""
        if self.resolver.trains_on_log_losses:
            return [torch.log(loss) for loss in losses]
        return losses

    def _agree(self, window: _Window, values: Tensor, fingerprint: list[int]) -> Tensor:
        """The loss values averaged over the ranks (:func:`distributed.agree`). For a
        resolver that trains on log-losses, the ranks also learn whether any of them had a
        loss that is not positive in the window, and every rank raises if one did (a
        negative loss's logarithm is NaN, but its gradient is finite)."""
        device = self._parameters[0].device
        group = self.process_group
        if not self.resolver.trains_on_log_losses:
            return distributed.agree(values, fingerprint, group, device)
        flags = torch.tensor(window.not_positive, dtype=torch.float64)
        agreed = distributed.agree(torch.cat([values, flags]), fingerprint, group, device)
        for index, flag in enumerate(agreed[window.T :].tolist()):
            if flag > 0:
                label = f"{task_label(index, window.names)} is not positive on at least one rank"
                raise _not_positive_error(label, self.resolver)
        return agreed[: window.T]

    def _shared_task_gradients(
        self, window: _Window, scaled: list[Tensor], reached: list[dict[int, Tensor]]
    ) -> None:
        """Add each task's gradient of the shared parameters to its row of ``G``, writing no
        ``.grad`` (a loss weighting's diagnostics: its weighted sum's pass follows, on the
        graphs these passes keep). Where :attr:`_checks_shared_gradients_early`,
        non-finite task gradients raise here, before any ``.grad`` is written."""
        G = window.G
        assert G is not None
        offsets = window.offsets()
        for task, loss in enumerate(scaled):
            inputs = [param for param in window.shared if id(param) in reached[task]]
            if not inputs:
                continue
            grads = torch.autograd.grad(loss, inputs, retain_graph=True)
            for param, grad in zip(inputs, grads):
                offset = offsets[id(param)]
                _laid_out_like(G[task, offset : offset + param.numel()], param).add_(grad)
        if self._checks_shared_gradients_early:
            raise_if_nonfinite_rows(G, window.names, _NONFINITE_TASK_GRADIENTS)

    def _backward_weighted_sum(
        self,
        window: _Window,
        losses: list[Tensor],
        reached: list[dict[int, Tensor]] | None,
        loss_values: Tensor,
        capture: bool,
        only_parameters: bool,
    ) -> None:
        """One backward pass of :math:`\\sum_i w_i c_i L_i`, for loss weightings and unshared
        tasks (scaled by the ``scaler``, if any). ``only_parameters``: the joint walk of a
        loss weighting (``reached`` None) found no leaf outside the accumulator's
        parameters (always False otherwise)."""
        device = self._parameters[0].device
        if self._distributed:
            fingerprint = [len(losses), distributed.names_hash(window.names), 1, 0, 0, 0, 0]
            loss_values = self._agree(window, loss_values, fingerprint)
            if not self._leaves_nonfinite_to_scaler:  # now averaged over the ranks
                raise_if_nonfinite_losses(loss_values, window.names, averaged=True)
        finite = all_finite_values(loss_values)
        weighting = self.resolver if is_loss_weighting(self.resolver) and finite else None
        with self._same_draws(device):  # (no shared parameters: plain weights)
            weights = coefficients(weighting, window.primary, loss_values, window.loss_weights)
        window.finite = window.finite and finite
        total = weighted_total(stack_losses(losses), weights)
        if self.scaler is not None:
            total = self.scaler.scale(total)
        if reached is None:  # every parameter: those the sum does not reach keep their .grad
            # (less those frozen since the accumulator was built: the walk skips them too)
            inputs = [p for p in self._parameters if p.requires_grad]
        else:
            reached_ids = set().union(*reached)
            inputs = [p for p in self._parameters if id(p) in reached_ids]
        if capture:
            grads = torch.autograd.grad(total, inputs)
            for param, grad in zip(inputs, grads):
                window.add_plain(param, grad)
        else:
            _backward_into(total, inputs, only_parameters)
        window.last_weights = weights

    def _resolve(self) -> BackwardResult:
        window = self._window
        assert window is not None
        self._window = None
        try:
            result = self._resolve_window(window)
        finally:
            window.G = None  # free the matrix even when resolution raised
        self._last = result
        return result

    def _resolve_window(self, window: _Window) -> BackwardResult:
        group = self.process_group
        losses = window.mean_losses() if self._distributed else None
        plain = window.plain_in_order(self._position)
        if losses is not None:
            shared_positions = [self._position[id(p)] for p in window.shared]
            plain_positions = [self._position[id(p)] for p, _ in plain]
            fingerprint = [
                window.T,
                distributed.names_hash(window.names),
                int(window.weights_only),
                len(shared_positions),
                _layout_hash(shared_positions),
                len(plain_positions),
                _layout_hash(plain_positions),
            ]
            losses = self._agree(window, losses, fingerprint)
            tensors = [] if window.G is None else [window.G]
            distributed.all_reduce_mean_(tensors + [grad for _, grad in plain], group)
        if window.weights_only:
            gram = self._gram_of_window(window)  # (checked before any .grad is written)
            for param, grad in plain:
                _add_into_grad(param, grad)
            return self._weighting_result(window, gram)
        for param, grad in plain:
            _add_into_grad(param, grad)
        G = window.G
        assert G is not None
        if losses is None:
            losses = window.mean_losses()
        scale = self._scale()
        finite = bool(torch.isfinite(losses).all())
        if scale is not None:
            G.div_(scale)
            finite = finite and all_finite(G)
        if not (finite or self._leaves_nonfinite_to_scaler):
            raise_if_nonfinite_losses(losses, window.names, self._distributed)
        blocks = _blocks(window.shared, window.block_sizes)
        if not finite:  # left to the scaler: it sees the non-finite sum and skips the step
            assert scale is not None
            _accumulate_into_grad(window.shared, G.sum(dim=0) * scale)
            return BackwardResult(
                window.display_names,
                None,
                None,
                G.shape[1],
                finite=False,
                blocks=blocks,
                loss_weights=window.loss_weights,
            )
        if self.resolver.trains_on_log_losses:  # (their values checked in _add or _agree)
            losses = torch.ones_like(losses)  # G's rows are already the gradients of log L_i
        with self._same_draws(G.device):
            resolution = run_resolver(
                self.resolver,
                G,
                window.block_sizes,
                primary=window.primary,
                losses=losses,
                task_weights=None,
                names=window.names,
                what=_NONFINITE_TASK_GRADIENTS,
            )
        direction = resolution.direction if scale is None else resolution.direction * scale
        _accumulate_into_grad(window.shared, direction)
        gram = resolution.gram
        if gram is None and self.diagnostics:
            gram = gram_of_blocks(G, window.block_sizes)
        weights_out = resolution.weights
        if weights_out is not None and window.loss_weights is not None:
            weights_out = weights_out * window.loss_weights.to(weights_out.device)
        return BackwardResult(
            window.display_names,
            gram,
            weights_out,
            G.shape[1],
            blocks=blocks,
            loss_weights=window.loss_weights,
        )

    def _gram_of_window(self, window: _Window) -> Tensor | None:
        """The Gram of a loss weighting's window (``G`` unscaled, checked unless each
        micro-batch was), or ``None`` without diagnostics, or when a ``scaler`` is left a
        non-finite step."""
        G = window.G
        if G is None:
            return None
        scale = self._scale()
        if scale is not None:
            G.div_(scale)
        if not self._checks_shared_gradients_early and not all_finite(G):
            if self._leaves_nonfinite_to_scaler:
                window.finite = False
                return None
            raise_if_nonfinite_rows(G, window.names, _NONFINITE_TASK_GRADIENTS)
        return gram_of_blocks(G, window.block_sizes)

    def _weighting_result(self, window: _Window, gram: Tensor | None) -> BackwardResult:
        """The result of a window back-propagated as weighted sums: its last weights (one
        row per block of ``gram``, on its device, when there is one)."""
        weights = window.last_weights
        if gram is not None and weights is not None:
            weights = weights.to(gram.device).expand(gram.shape[0], -1).clone()
        return BackwardResult(
            window.display_names,
            gram,
            weights,
            0 if window.G is None else window.G.shape[1],
            finite=window.finite,
            blocks=() if window.G is None else _blocks(window.shared, window.block_sizes),
            loss_weights=window.loss_weights,
        )


@dataclass
class _Window:
    """The state of one accumulation window."""

    names: list[str] | None
    display_names: tuple[str, ...]
    T: int
    primary: int | None
    loss_weights: Tensor | None
    weights_only: bool
    loss_sum: list[float]
    not_positive: list[bool] = field(default_factory=list)
    """Per task, whether a micro-batch's loss was not positive, for the ranks to agree on
    (resolvers that train on log-losses, under ``torch.distributed``)."""
    count: int = 0
    finite: bool = True
    shared: list[Tensor] = field(default_factory=list)
    block_sizes: list[int] = field(default_factory=list)
    G: Tensor | None = None
    plain: dict[int, tuple[Tensor, Tensor]] = field(default_factory=dict)
    last_weights: Tensor | None = None
    _offsets: dict[int, int] | None = None
    _held_memory: set[int] = field(default_factory=set)

    def mean_losses(self) -> Tensor:
        """The ``(T,)`` float64 mean of the window's loss values."""
        return torch.tensor(self.loss_sum, dtype=torch.float64) / self.count

    def offsets(self) -> dict[int, int]:
        """Column offset of each shared parameter in ``G``."""
        if self._offsets is None:
            self._offsets = {}
            offset = 0
            for param in self.shared:
                self._offsets[id(param)] = offset
                offset += param.numel()
        return self._offsets

    def add_plain(self, param: Tensor, grad: Tensor) -> None:
        """Hold the gradient of a parameter that is not resolved (one task's own).

        Autograd may hand a gradient back expanded (a parameter reached only through a
        ``sum``: stride 0), or hand one tensor to two parameters (``a1 + a2``: the same
        gradient for both, or views of one buffer); it is copied before anything is added
        into it or it becomes a ``.grad``, as ``loss.backward()``'s own accumulation does, so
        that no two parameters' gradients share memory. A sparse gradient
        (``nn.Embedding(sparse=True)``) is held dense, as the collectives that average the
        held gradients take dense tensors."""
        if grad.layout != torch.strided:
            grad = grad.to_dense()
        held = self.plain.get(id(param))
        if held is None:
            memory = grad.untyped_storage().data_ptr()
            if not grad.is_contiguous() or memory in self._held_memory:
                grad = grad.clone()
            self._held_memory.add(grad.untyped_storage().data_ptr())
            self.plain[id(param)] = (param, grad)
        else:
            held[1].add_(grad)

    def plain_in_order(self, position: dict[int, int]) -> list[tuple[Tensor, Tensor]]:
        """The held gradients in the order of ``params`` (identical on every rank)."""
        return sorted(self.plain.values(), key=lambda item: position[id(item[0])])


def _task_gradients(
    window: _Window, scaled: list[Tensor], reached: list[dict[int, Tensor]], capture: bool
) -> None:
    """Back-propagate each task once; shared gradients are added to the rows of ``G``.

    Without ``capture``, while task ``i`` runs every shared parameter's ``.grad`` is a view
    into row ``i``, so autograd accumulates in place there; parameters of that task alone
    accumulate into their own ``.grad`` as usual; the shared parameters' own ``.grad`` are
    restored after. With ``capture`` (under ``torch.distributed``), the gradients are
    taken with :func:`torch.autograd.grad`, which runs no gradient hooks (DDP's included),
    and added to ``G`` and to the window's held gradients.
    """
    G = window.G
    assert G is not None
    shared = window.shared
    last = len(scaled) - 1
    if capture:
        offsets = window.offsets()
        for task, loss in enumerate(scaled):
            inputs = list(reached[task].values())
            grads = torch.autograd.grad(loss, inputs, retain_graph=task < last)
            for param, grad in zip(inputs, grads):
                offset = offsets.get(id(param))
                if offset is None:
                    window.add_plain(param, grad)
                else:
                    _laid_out_like(G[task, offset : offset + param.numel()], param).add_(grad)
        return
    saved = [p.grad for p in shared]
    try:
        for task, loss in enumerate(scaled):
            offset = 0
            for param in shared:
                size = param.numel()
                param.grad = _laid_out_like(G[task, offset : offset + size], param)
                offset += size
            inputs = list(reached[task].values())
            torch.autograd.backward(loss, inputs=inputs, retain_graph=task < last)
    finally:
        for param, old in zip(shared, saved):
            param.grad = old


def _backward_into(total: Tensor, inputs: list[Tensor], only_inputs: bool) -> None:
    """``total``'s backward pass, accumulating into the ``.grad`` of ``inputs`` and of
    nothing else. Where the graph walk showed that ``total`` reaches no other leaf
    (``only_inputs``), ``inputs=`` is left out: the same gradients, without the engine's
    extra pass over the graph that marks the nodes leading to ``inputs``."""
    torch.autograd.backward(total, inputs=None if only_inputs else inputs)


def _not_positive(value: float) -> bool:
    """A loss that a resolver training on log-losses cannot take: zero or negative (NaN and
    :math:`-\\infty` pass: non-finite losses are checked, or left to a ``scaler``,
    elsewhere)."""
    return -math.inf < value <= 0


def _not_positive_error(label: str, resolver: Resolver) -> ValueError:
    return ValueError(
        f"Invalid losses: {label}; {type(resolver).__name__} trains every task on log L_i, so "
        "every loss must be > 0 (shift it by a constant)"
    )


def _raise_if_not_positive(
    values: Sequence[float], names: Sequence[str] | None, resolver: Resolver
) -> None:
    """Raise a ``ValueError`` naming the first task whose loss :func:`_not_positive`."""
    for index, value in enumerate(values):
        if _not_positive(value):
            raise _not_positive_error(f"{task_label(index, names)} is {value}", resolver)


def _check_options(
    granularity: Any, resolution: Any, scaler: Any, sync: Any, diagnostics: Any
) -> None:
    if not isinstance(diagnostics, bool):
        raise TypeError(f"Invalid diagnostics: {diagnostics!r} (expected True or False)")
    if granularity not in ("global", "tensor"):
        raise ValueError(f"Invalid granularity: {granularity!r} (expected 'global' or 'tensor')")
    if resolution not in ("window", "micro_batch"):
        raise ValueError(f"Invalid resolution: {resolution!r} (expected 'window' or 'micro_batch')")
    if scaler is not None and not isinstance(scaler, torch.amp.GradScaler):
        raise TypeError(f"Invalid scaler: {scaler!r} (expected a torch.amp.GradScaler or None)")
    if not isinstance(sync, bool):
        raise TypeError(f"Invalid sync: {sync!r} (expected True or False)")


def _check_reach(losses: list[Tensor], ids: Container[int], names: Sequence[str] | None) -> bool:
    """That each loss reaches one of the parameters, and that none passes through a
    reentrant checkpoint (one walk over all the losses' graphs). Returns whether every
    leaf the losses reach is one of the parameters."""
    try:
        reach = losses_reaching(losses, ids)
    except ReentrantCheckpointError as error:
        raise _through_checkpoint(error.task, names) from None
    _raise_if_unreached(reach.reaches, names)
    return reach.only_parameters


def _reached_by_task(
    losses: list[Tensor], ids: Container[int], names: Sequence[str] | None
) -> list[dict[int, Tensor]]:
    """The parameters each loss reaches, by id; each loss must reach one, and none may pass
    through a reentrant checkpoint."""
    reached = []
    for index, loss in enumerate(losses):
        try:
            reached.append(reached_parameters(loss, ids))
        except ReentrantCheckpointError:
            raise _through_checkpoint(index, names) from None
    _raise_if_unreached([bool(task_params) for task_params in reached], names)
    return reached


def _through_checkpoint(index: int, names: Sequence[str] | None) -> ValueError:
    return ValueError(
        f"Invalid losses: {task_label(index, names)} passes through torch.utils.checkpoint "
        "with use_reentrant=True (torch's default when use_reentrant is not given): the "
        "parameters inside such a segment are not in the autograd graph, so their task "
        "gradients cannot be resolved (they would get no gradient, or the plain sum). "
        "Pass use_reentrant=False to checkpoint"
    )


def _raise_if_unreached(reaches: Sequence[bool], names: Sequence[str] | None) -> None:
    for index, reaches_one in enumerate(reaches):
        if not reaches_one:
            raise ValueError(
                f"Invalid losses: {task_label(index, names)} reaches none of params "
                "(is it detached, or computed from other parameters?)"
            )


def _display_names(names: Sequence[str] | None, T: int) -> tuple[str, ...]:
    return tuple(names) if names is not None else _index_names(T)


@lru_cache(maxsize=64)
def _index_names(T: int) -> tuple[str, ...]:
    return tuple(map(str, range(T)))


def _check_same_kind(shared: list[Tensor]) -> None:
    first = shared[0]
    for param in shared:
        if param.is_complex():
            raise TypeError(
                f"Invalid params: a shared parameter of shape {tuple(param.shape)} is "
                f"{param.dtype}; the resolvers take real gradients (hold it as a real tensor "
                "with a last dimension of 2, and use torch.view_as_complex in the forward)"
            )
    for param in shared[1:]:
        if param.dtype != first.dtype or param.device != first.device:
            raise ValueError(
                "Invalid params: shared parameters must have one dtype and device; found "
                f"{first.dtype} on {first.device} and {param.dtype} on {param.device}"
            )


def _blocks(shared: list[Tensor], block_sizes: list[int]) -> tuple[tuple[Tensor, ...], ...]:
    if len(block_sizes) == 1:
        return (tuple(shared),)
    return tuple((param,) for param in shared)


def _layout_hash(positions: list[int]) -> int:
    """A small hash of parameter positions, below :math:`2^{20}` (for rank agreement)."""
    value = 0
    for position in positions:
        value = (value * 1_000_003 + position + 1) % 1_048_573
    return value


def _add_into_grad(param: Tensor, grad: Tensor) -> None:
    """Add ``grad`` into ``param.grad`` as autograd's accumulation does: in place, except
    that a dense gradient added to a sparse ``.grad`` makes it dense (a new tensor)."""
    existing = param.grad
    if existing is None:
        param.grad = grad
    elif existing.layout != torch.strided and grad.layout == torch.strided:
        param.grad = grad + existing
    else:
        existing.add_(grad)


def _accumulate_into_grad(shared: list[Tensor], direction: Tensor) -> None:
    """Add the direction into ``.grad``; a parameter without one gets a view of it."""
    offset = 0
    for param in shared:
        size = param.numel()
        _add_into_grad(param, _laid_out_like(direction[offset : offset + size], param))
        offset += size


def _laid_out_like(flat: Tensor, param: Tensor) -> Tensor:
    """The ``param.numel()`` contiguous elements ``flat`` as a tensor of ``param``'s shape,
    laid out in memory as autograd lays out ``param``'s gradient: with ``param``'s strides
    where it is dense and non-overlapping (``channels_last``, a transposed weight), else
    row-major. Every view of a parameter's columns of ``G`` or of the direction goes
    through here, so the columns follow the gradient's memory order, and a ``.grad`` that
    is such a view keeps autograd's layout contract (no warning, no strided optimizer
    step)."""
    if param.is_contiguous():
        return flat.view_as(param)
    layout = torch.empty_like(param, device="meta")  # autograd's choice of strides
    return flat.as_strided(param.shape, layout.stride())
