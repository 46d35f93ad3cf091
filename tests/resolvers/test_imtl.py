"""IMTL-G: equal projections, the paper's closed form, TorchJD as an oracle, signs."""

from __future__ import annotations

import torch

import gradsurgery


def imtl(G):
    return gradsurgery.resolve(G, method="imtl")


def projections(G, d):
    return (G @ d) / G.norm(dim=1)


def well_conditioned(seed, count):
    generator = torch.Generator().manual_seed(seed)
    for trial in range(count):
        T = 2 + trial % 4
        yield torch.randn(T, T + 2, generator=generator, dtype=torch.float64)


def test_orthogonal_tasks_by_hand():
    # (1, 0) and (0, 2): alpha = (2/3, 1/3), d = (2/3, 2/3), projections 2/3 on both.
    G = torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=torch.float64)
    torch.testing.assert_close(imtl(G), torch.tensor([2 / 3, 2 / 3], dtype=torch.float64))


def test_equal_non_negative_projections():
    for G in well_conditioned(0, 30):
        p = projections(G, imtl(G))
        torch.testing.assert_close(p, p[0].expand_as(p))
        assert p[0] >= 0


def test_matches_the_paper_closed_form_up_to_sign():
    for G in well_conditioned(1, 30):
        u = G / G.norm(dim=1, keepdim=True)
        D, U = G[0] - G[1:], u[0] - u[1:]
        tail = G[0] @ U.T @ torch.linalg.inv(D @ U.T)
        alpha = torch.cat([(1 - tail.sum()).reshape(1), tail])
        paper = alpha @ G
        ours = imtl(G)
        sign = 1.0 if float(torch.dot(paper, G[0])) >= 0 else -1.0
        torch.testing.assert_close(ours, sign * paper, rtol=1e-7, atol=1e-9)


def test_matches_torchjd_when_the_weights_sum_positive():
    from torchjd.aggregation import IMTLG as TorchJDIMTLG

    compared = 0
    for G in well_conditioned(2, 40):
        gram = G @ G.T
        if float((torch.linalg.pinv(gram) @ gram.diagonal().sqrt()).sum()) <= 0:
            continue
        torch.testing.assert_close(imtl(G), TorchJDIMTLG()(G), rtol=1e-7, atol=1e-9)
        compared += 1
    assert compared > 20


def test_negative_sum_case_keeps_positive_projections():
    # A small third task: G^+ sqrt(diag G) sums to about -0.37, so the paper's
    # normalisation (weights summing to 1) would point against every task.
    G = torch.tensor([[2.0, -1.0, -3.0], [-2.0, 2.0, -1.0], [0.1, 0.1, -0.1]], dtype=torch.float64)
    gram = G @ G.T
    assert float((torch.linalg.inv(gram) @ gram.diagonal().sqrt()).sum()) < 0
    p = projections(G, imtl(G))
    torch.testing.assert_close(p, p[0].expand_as(p))
    assert p[0] > 0


def test_rank_deficient_inputs_are_finite():
    G = torch.tensor([[1.0, 2.0], [1.0, 2.0], [0.0, 0.0], [3.0, -1.0]], dtype=torch.float64)
    d = imtl(G)
    assert torch.isfinite(d).all()
    p = projections(G[[0, 1, 3]], d)
    torch.testing.assert_close(p, p[0].expand_as(p))
