"""The precision each resolver's docstring states, for the tests that compare results.

Where a method's arithmetic amplifies rounding (an ill-conditioned Gram, a combination of
gradients that nearly cancels), its docstring says by how much; the shared tolerances of
the property tests give way to that bound, and only there.
"""

from __future__ import annotations

import torch

import gradsurgery


def documented_precision(method: str, G: torch.Tensor) -> float:
    """The relative rounding a method's docstring states for ``G``, where it can exceed
    the shared tests' tolerances (0 elsewhere)."""
    eps = torch.finfo(G.dtype).eps
    if method in ("imtl", "aligned_mtl"):
        # Their weights solve Q v = s or apply Lambda^{-1/2}: rounding is relative to the
        # condition number of Q on its kept spectrum (their docstrings). Hypothesis found,
        # under permutation, 2.7e7 for imtl (two nearly parallel gradients of norms 28 and
        # 0.35 beside one of 64; a relative difference of 2.5e-9) and 3.6e11 for
        # aligned_mtl (rows of norm 12 and two of 1.4e-5; 9e-5); under scaling, 1.6e-5 for
        # imtl on rows (14, 6.1e-5) and (1, 0) (condition 1e13).
        # That is the weights' rounding; the direction's, relative to ||d||, is larger by
        # sum_i |w_i| ||g_i|| / ||d|| where the weighted gradients cancel (the thorough
        # profile found 1.5e-9 for imtl, under permutation, on rows (13, 0, 1/4) and
        # (45, 0, 1/4) beside (1/4, 1/4, 1/4): a condition of 1.7e5 and cancellation 85).
        # (IMTL-G's docstring states both; Aligned-MTL's states its direction's.)
        factor = cancellation(method, G) if method == "imtl" else 1.0
        return 16 * eps * kept_condition(G) * factor
    if method == "cagrad":
        # The Gram's rounding, eps max ||g_i||^2, relative to ||g_w||^2. Hypothesis found
        # 1.5e-5 with two nearly opposite rows, whose g_w cancels to 3e-7 of max ||g_i||.
        g_w = cagrad_combination_norm(G)
        return 16 * eps * float(G.norm(dim=1).max() / g_w) ** 2 if g_w > 0 else 0.0
    return 0.0


def cagrad_combination_norm(G: torch.Tensor) -> float:
    """``||g_w||`` of CAGrad's dual solution on ``G`` (defaults c = 0.4, ``1+c^2``), read
    off its weights ``(1/T + (c ||g_0|| / ||g_w||) w) / (1 + c^2)`` with ``sum(w) = 1``;
    0 where ``g_w`` counts as zero (the weights are uniform)."""
    resolver = gradsurgery.get_resolver("cagrad")
    weights = resolver.resolve_blocks(G, (G.shape[1],)).weights
    assert weights is not None
    T, c = G.shape[0], resolver.c
    step = float((weights[0] * (1 + c * c) - 1 / T).sum())  # c ||g_0|| / ||g_w||
    radius = c * float(G.mean(dim=0).norm())
    return radius / step if step > 1e-12 else 0.0


def cancellation(method: str, G: torch.Tensor) -> float:
    """``sum_i |w_i| ||g_i|| / ||d||`` for the method's weights on ``G`` (at least 1): how
    much the weighted sum of the gradients cancels; 1 where the direction is zero."""
    resolution = gradsurgery.get_resolver(method).resolve_blocks(G, (G.shape[1],))
    assert resolution.weights is not None
    terms = float((resolution.weights[0].abs() * G.norm(dim=1)).sum())
    norm = float(resolution.direction.norm())
    return max(1.0, terms / norm) if norm > 0 else 1.0


def kept_condition(G: torch.Tensor) -> float:
    """The condition number of ``G G^T`` on the eigenvalues a pseudo-inverse keeps."""
    values = torch.linalg.eigvalsh(G @ G.T).abs()
    kept = values[values > G.shape[0] * torch.finfo(G.dtype).eps * values.max()]
    return float(kept.max() / kept.min()) if kept.numel() else 1.0


def gr_rescale_decided_by_rounding(p: torch.Tensor, a: torch.Tensor, k: float) -> bool:
    """Whether GR's rescale of the pair ``(p, a)`` is, as ``remedy_rescale`` documents,
    decided by rounding, so that a reference written otherwise may decide the other way:
    a dominant auxiliary whose cosine with ``p`` lies in (0, 1e-12), which counts as zero
    (no 1e12-fold stretch), or a norm ratio within 1e-12 of K, a tie of the strict test."""
    cos = torch.dot(p, a) / (p.norm() * a.norm())
    below_the_cut = bool(0 < cos < 1e-12 and a.norm() > k * p.norm())
    return below_the_cut or abs(float(a.norm() / p.norm()) - k) <= 1e-12 * k
