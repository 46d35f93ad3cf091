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


def paper_closed_form(G):
    u = G / G.norm(dim=1, keepdim=True)
    D, U = G[0] - G[1:], u[0] - u[1:]
    tail = G[0] @ U.T @ torch.linalg.inv(D @ U.T)
    return torch.cat([(1 - tail.sum()).reshape(1), tail]) @ G


def test_exactly_opposite_gradients_of_different_norms_by_hand():
    # d . u_1 = d . u_2 with u_2 = -u_1 forces d . u_1 = 0: d = 0 in their span. The
    # weights are the null vector (2, 1) / 3 of Q = [[1, -2], [-2, 4]], as in the paper.
    G = torch.tensor([[1.0, 0.0], [-2.0, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(imtl(G), torch.zeros(2, dtype=torch.float64))
    weights = gradsurgery.get_resolver("imtl").weights(G @ G.T, primary=None, losses=None)
    torch.testing.assert_close(weights, torch.tensor([2 / 3, 1 / 3], dtype=torch.float64))
    third = torch.tensor([[0.0, 1.0]], dtype=torch.float64)  # more tasks than entries
    torch.testing.assert_close(imtl(torch.cat([G, third])), torch.zeros(2, dtype=torch.float64))


def test_a_null_vector_summing_to_zero_gives_zero_weights_at_every_scale():
    # g_1 = (0, a), g_2 = (29, a), g_3 = (a, a): rank 2, s outside the range of Q, and the
    # null vector n = (a/29 - 1, -a/29, 1) sums to zero, so no weights sum to one; d = 0.
    # Its computed sum is rounding (about 1e-9 of its entries, against its eigenvector's
    # precision of about 6e-9 here), which was normalised into an update of size a at
    # some scales (hypothesis, the thorough profile).
    a = 2.0**-8
    G = torch.tensor([[0.0, a], [29.0, a], [a, a]], dtype=torch.float64)
    for scale in (0.5, 1.0, 1.5, 2.0, 3.0):
        resolver = gradsurgery.get_resolver("imtl")
        Q = (scale * G) @ (scale * G).T
        weights = resolver.weights(Q.unsqueeze(0), primary=None, losses=None)
        torch.testing.assert_close(weights, torch.zeros(1, 3, dtype=torch.float64))
        assert torch.equal(imtl(scale * G), torch.zeros(2, dtype=torch.float64))


def test_rank_deficient_gradients_match_the_paper_where_its_inverse_exists():
    # more tasks than entries, or one task the sum of two others: s leaves the range of Q
    generator = torch.Generator().manual_seed(5)
    compared = 0
    for trial in range(40):
        T = 2 + trial % 4
        if trial % 2:
            G = torch.randn(T, 1 + trial % (T - 1), generator=generator, dtype=torch.float64)
        else:
            G = torch.randn(T, T + 2, generator=generator, dtype=torch.float64)
            G[-1] = G[0] + G[1] if T > 2 else -3.0 * G[0]
        u = G / G.norm(dim=1, keepdim=True)
        if abs(float(torch.linalg.det((G[0] - G[1:]) @ (u[0] - u[1:]).T))) < 1e-6:
            continue
        paper, ours = paper_closed_form(G), imtl(G)
        sign = 1.0 if float(torch.dot(paper, G[0])) >= 0 else -1.0
        torch.testing.assert_close(ours, sign * paper, rtol=1e-6, atol=1e-9)
        compared += 1
    assert compared > 30


def test_nearly_opposite_gradients_approach_the_opposite_case():
    for epsilon in (1e-3, 1e-6, 1e-9, 1e-12):
        G = torch.tensor([[1.0, 0.0], [-2.0, epsilon]], dtype=torch.float64)
        # equal projections: d = (epsilon^2 / 12, epsilon / 3) to leading order
        torch.testing.assert_close(
            imtl(G),
            torch.tensor([epsilon**2 / 12, epsilon / 3], dtype=torch.float64),
            rtol=1e-3,
            atol=1e-16,
        )
