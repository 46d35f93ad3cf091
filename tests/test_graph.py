"""The autograd-graph walk that finds which parameters a loss reaches."""

from __future__ import annotations

import pytest
import torch
from torch.utils.checkpoint import checkpoint

from gradsurgery._graph import (
    _ACCUMULATE_GRAD,
    ReentrantCheckpointError,
    _accumulate_grad_type,
    losses_reaching,
    reached_parameters,
    reaches_any,
)


def leaves(n: int) -> list[torch.Tensor]:
    return [torch.full((2,), float(i + 1), requires_grad=True) for i in range(n)]


def ids(*tensors: torch.Tensor) -> dict[int, torch.Tensor]:
    return {id(t): t for t in tensors}


def test_every_parameter_below_the_loss_is_found_once_in_walk_order():
    a, b, c, outside = leaves(4)
    shared = a * b  # reached twice below: a diamond
    loss = (shared.sum() + (shared * c).sum()) * outside.sum()
    found = reached_parameters(loss, ids(a, b, c))
    assert set(found) == {id(a), id(b), id(c)}
    assert all(found[key] is tensor for key, tensor in ids(a, b, c).items())


def test_parameters_outside_ids_are_not_reached():
    a, b = leaves(2)
    loss = (a * 2).sum()
    assert not reaches_any(loss, ids(b))
    assert reached_parameters(loss, ids(b)) == {}
    assert reaches_any(loss, ids(a, b))


def test_a_leaf_loss_reaches_itself_only():
    (a,) = leaves(1)
    scalar = torch.tensor(1.0, requires_grad=True)
    assert reaches_any(scalar, ids(scalar))
    assert reached_parameters(scalar, ids(scalar, a)) == {id(scalar): scalar}
    assert not reaches_any(scalar, ids(a))


def test_a_parameter_deep_below_non_parameter_leaves_is_found():
    a, buffer = leaves(2)
    x = a
    for _ in range(50):
        x = torch.tanh(x + buffer)  # the buffer leaf is met first at every level
    assert reaches_any(x.sum(), ids(a))
    assert list(reached_parameters(x.sum(), ids(a))) == [id(a)]


def test_a_parameter_used_under_no_grad_is_not_reached():
    a, b = leaves(2)
    with torch.no_grad():
        frozen = b * 1
    loss = (a * frozen).sum()
    assert not reaches_any(loss, ids(b))
    assert list(reached_parameters(loss, ids(a, b))) == [id(a)]


@pytest.mark.parametrize("op", [torch.stack, torch.cat])
def test_every_input_of_a_many_input_node_is_followed(op):
    tensors = leaves(5)
    loss = op(tensors).sum()
    assert set(reached_parameters(loss, ids(*tensors[::2]))) == set(ids(*tensors[::2]))
    assert not reaches_any(loss, ids(*leaves(1)))


@pytest.mark.parametrize("context", [torch.no_grad, torch.inference_mode])
def test_the_leaf_node_type_is_found_under_any_autograd_context(context):
    with context():
        assert _accumulate_grad_type() is _ACCUMULATE_GRAD


def checkpointed(x: torch.Tensor, inner: torch.Tensor, reentrant: bool) -> torch.Tensor:
    """``tanh(x * inner)`` through ``torch.utils.checkpoint``."""
    return checkpoint(lambda h: torch.tanh(h * inner), x, use_reentrant=reentrant)


def test_a_reentrant_checkpoint_is_refused_by_every_walk():
    a, inner, below = leaves(3)
    x = below * 2  # a parameter below the segment
    hidden = checkpointed(x, inner, reentrant=True)
    loss = (hidden * a).sum()
    for walk in (reached_parameters, reaches_any):
        with pytest.raises(ReentrantCheckpointError):
            walk(loss, ids(inner, below))  # below is behind the segment
    with pytest.raises(ReentrantCheckpointError) as raised:
        losses_reaching([(a * 3).sum(), loss], ids(a, inner, below))
    assert raised.value.task == 1  # the first loss through it
    with pytest.raises(ReentrantCheckpointError):
        reached_parameters(hidden.sum(), ids(a))  # the loss's own node


def test_a_reentrant_checkpoint_with_no_parameter_below_is_refused():
    # the silent case: torch skips such a segment in a backward pass restricted to inputs=,
    # so `inner` would get no gradient (x requires grad but is no parameter)
    a, inner = leaves(2)
    x = torch.ones(2, requires_grad=True)
    loss = (a * checkpointed(x, inner, reentrant=True)).sum()
    assert reaches_any(loss, ids(a))  # stops at a, met before the segment
    with pytest.raises(ReentrantCheckpointError):
        losses_reaching([loss], ids(a, inner))


def test_a_non_reentrant_checkpoint_is_walked_through():
    a, inner, below = leaves(3)
    loss = (checkpointed(below * 2, inner, reentrant=False) * a).sum()
    assert set(reached_parameters(loss, ids(a, inner, below))) == {id(a), id(inner), id(below)}
    assert losses_reaching([loss], ids(inner)).reaches == [True]


def test_losses_reaching_answers_each_loss_in_one_walk():
    a, b, c, outside = leaves(4)
    shared = torch.tanh(a * b)
    losses = [
        (shared * c).sum(),  # c, a, b
        shared.sum() * 2,  # a and b, both met in the first loss's part: walked again
        (outside * 3).sum(),  # nothing of ids
        c,  # a leaf loss
        (shared * 0).sum() + outside.sum(),
    ]
    assert losses_reaching(losses, ids(a, b, c)).reaches == [True, True, False, True, True]
    assert losses_reaching(losses, ids(outside)).reaches == [False, False, True, False, True]
    assert losses_reaching([], ids(a)).reaches == []


def test_losses_reaching_tells_whether_every_leaf_is_a_parameter():
    a, b, c, outside = leaves(4)
    shared = torch.tanh(a * b)
    in_ids = [(shared * c).sum(), shared.sum() * 2, c]
    assert losses_reaching(in_ids, ids(a, b, c)).only_parameters
    assert not losses_reaching(in_ids, ids(a, b)).only_parameters  # c, a leaf loss
    assert not losses_reaching(in_ids[:2], ids(a, c)).only_parameters  # b
    # a leaf met only in a later loss's part of the walk, above nodes already seen
    late = [shared.sum(), (shared * outside).sum()]
    assert not losses_reaching(late, ids(a, b)).only_parameters
    assert losses_reaching(late, ids(a, b, outside)).only_parameters
    assert losses_reaching([], ids(a)).only_parameters
