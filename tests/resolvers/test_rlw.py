"""Random loss weighting: softmax of a seeded normal draw, redrawn each step, one backward."""

from __future__ import annotations

import pytest
import torch

import gradsurgery
from gradsurgery.resolvers import RandomLossWeighting

G = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)


def test_weights_are_the_softmax_of_the_seeded_draw():
    expected_noise = torch.randn(3, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    d = gradsurgery.resolve(G, method="rlw", seed=4)  # G = I: d is the weight vector
    torch.testing.assert_close(d, torch.softmax(expected_noise, dim=0))
    assert d.sum().item() == pytest.approx(1.0)


def test_weights_are_redrawn_every_step():
    resolver = RandomLossWeighting(seed=0)
    first = gradsurgery.resolve(G, method=resolver)
    second = gradsurgery.resolve(G, method=resolver)
    assert not torch.equal(first, second)


def test_global_generator_is_used_without_seed():
    torch.manual_seed(11)
    a = gradsurgery.resolve(G, method="rlw")
    torch.manual_seed(11)
    b = gradsurgery.resolve(G, method="rlw")
    assert torch.equal(a, b)


def test_seeded_run_resumes_from_its_state():
    resolver = RandomLossWeighting(seed=3)
    gradsurgery.resolve(G, method=resolver)
    restored = RandomLossWeighting(seed=99)
    restored.load_state_dict(resolver.state_dict())
    assert torch.equal(
        gradsurgery.resolve(G, method=resolver), gradsurgery.resolve(G, method=restored)
    )


def test_user_generator_is_used():
    a = gradsurgery.resolve(
        G, method=RandomLossWeighting(generator=torch.Generator().manual_seed(5))
    )
    b = gradsurgery.resolve(G, method=RandomLossWeighting(seed=5))
    assert torch.equal(a, b)


def test_the_glue_runs_one_backward_pass_of_the_weighted_sum():
    x = torch.tensor([1.0, 2.0], requires_grad=True)
    hidden = x * 3.0
    passes = []
    hidden.register_hook(lambda grad: passes.append(grad.clone()))
    losses = [hidden.sum(), hidden.pow(2).sum(), hidden.prod()]
    result = gradsurgery.backward(losses, [x], resolver=RandomLossWeighting(seed=1))
    assert len(passes) == 1 and result.gram is None
    weights = torch.softmax(
        torch.randn(3, generator=torch.Generator().manual_seed(1), dtype=torch.float64), dim=0
    )
    # d/dx of sum_i w_i L_i with hidden h = 3x: 3 (w0 + 2 w1 h + w2 * prod(h) / h).
    h = torch.tensor([3.0, 6.0], dtype=torch.float64)
    expected = 3 * (weights[0] + 2 * weights[1] * h + weights[2] * h.prod() / h)
    torch.testing.assert_close(x.grad, expected.float())


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"seed": 1, "generator": torch.Generator()}, ValueError),
        ({"seed": 1.5}, TypeError),
        ({"seed": True}, TypeError),
        ({"generator": 3}, TypeError),
    ],
)
def test_invalid_options(options, error):
    with pytest.raises(error):
        RandomLossWeighting(**options)
