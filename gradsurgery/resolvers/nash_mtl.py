"""Nash-MTL: task weights from the Nash bargaining solution, ``alpha_i (G alpha)_i = 1``."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from gradsurgery.resolvers._options import integer_option, real_option
from gradsurgery.resolvers.base import GramResolver
from gradsurgery.resolvers.host import exactly_rescaled_tensor

__all__ = ["NashMTL"]


class NashMTL(GramResolver):
    r"""Nash-MTL (Navon et al., ICML 2022).

    "Multi-Task Learning as a Bargaining Game", https://arxiv.org/abs/2202.01017. The
    update :math:`d = \sum_i \alpha_i g_i` is the Nash bargaining solution: each task's
    utility :math:`g_i \cdot d` is balanced so that

    .. math::

        \alpha_i \, (\hat Q \alpha)_i = 1, \quad \alpha > 0, \qquad
        \hat Q = Q / \|Q\|_F + \varepsilon I,

    with :math:`Q = J J^\top` normalised by its Frobenius norm (see the note on the
    reference's scale below). These are the optimality conditions of the strictly convex
    problem

    .. math::

        \min_{\alpha > 0} \tfrac12 \alpha^\top \hat Q \alpha - \sum_i \log \alpha_i,

    a self-concordant function, minimised here by damped Newton steps
    :math:`\alpha \leftarrow \alpha - \frac{1}{1 + \lambda} H^{-1} \nabla` (:math:`\lambda`
    the Newton decrement), which stay feasible and converge globally, quadratically near the
    solution, in a handful of iterations; all blocks are solved in one batch, warm-started
    from the previous step's :math:`\alpha` (where its objective lies far above that of
    :math:`\alpha` or of ones rescaled to their best scale, as after a task whose gradient
    was tiny, the better rescaled start instead).

    Args:
        update_weights_every: recompute :math:`\alpha` every this many calls, reusing the
            last one in between (the reference's ``update_weights_every``; default 1).
        max_iterations: cap on the Newton iterations per solve (default 50; it stops when
            the squared Newton decrement is below ``1e-20``).
        reg_eps: :math:`\varepsilon`, added to the diagonal of the normalised Gram so that
            a solution exists when some tasks have zero or exactly opposed gradients
            (where the unregularised conditions have none); default ``1e-8``.

    ``primary`` is ignored: Nash-MTL treats all tasks alike. Scale-equivariant (the
    weights depend on the normalised Gram only) and permutation-invariant up to the solve's
    rounding (about :math:`10^{-9}` relative when a task's gradient is zero or two are
    opposed, where :math:`\varepsilon` alone keeps :math:`\hat Q` invertible). Cost: ``T``
    backward passes (only on update steps if the autograd glue is bypassed),
    :math:`O(T^2 P)` for the Gram, a few :math:`O(T^3)` Newton steps, :math:`O(TP)` for the
    sum. State: the last :math:`\alpha` per block and the step count, restored exactly;
    :math:`\alpha` is only the warm start of the next solve, so a call with another number
    of tasks or blocks solves afresh (where the resolvers with learned state refuse it).

    .. note::
        The reference (AvivNavon/nash-mtl) runs 20 iterations of a concave-convex procedure
        with cvxpy/ECOS, keeps the previous :math:`\alpha` when the solver fails, and clips
        the shared gradients at norm 1 (``max_norm``). Here the solve is exact to
        tolerance and never fails; clipping stays in the user's loop
        (``torch.nn.utils.clip_grad_norm_(..., 1.0)`` to match).

        Scale: the reference passes :math:`Q / \|Q\|_F` to its solver but multiplies the
        normalisation factor back into its constraint, so its weights satisfy
        :math:`\alpha_i (Q \alpha)_i = 1` on the RAW Gram and its direction has norm
        :math:`\sqrt{T}` whatever the gradients' scale (before its clipping). Here the
        conditions are solved on the normalised Gram, so the weights are
        :math:`\sqrt{\|Q\|_F}` times the reference's: the same direction up to that
        factor, and one that scales with the gradients as every other resolver's does.
        TorchJD's ``NashMTL`` follows the reference (``benchmarks/results/overhead.md``
        compares the two).

        Heads: the reference (``WeightMethod.backward``) and LibMTL's ``Nash_MTL``
        back-propagate :math:`\sum_i \alpha_i L_i`, so the parameters that one task alone
        reaches get :math:`\alpha_i \nabla L_i`. Through :func:`gradsurgery.backward` they
        get :math:`\nabla L_i`, as under every resolver of task gradients.

    Example:
        >>> import torch, gradsurgery
        >>> G = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
        >>> gradsurgery.resolve(G, method="nash_mtl")  # equal utilities g_i . d
        tensor([2.0305, 2.0305])
    """

    promises = frozenset({"scale_equivariant", "permutation_invariant"})

    def __init__(
        self, update_weights_every: int = 1, max_iterations: int = 50, reg_eps: float = 1e-8
    ) -> None:
        self.update_weights_every = integer_option(
            "update_weights_every", update_weights_every, minimum=1
        )
        self.max_iterations = integer_option("max_iterations", max_iterations, minimum=1)
        self.reg_eps = real_option("reg_eps", reg_eps, minimum=0, above_minimum=True)
        self.alpha: Tensor | None = None
        self.step = 0

    def _options(self) -> dict[str, Any]:
        return {
            "update_weights_every": self.update_weights_every,
            "max_iterations": self.max_iterations,
            "reg_eps": self.reg_eps,
        }

    def weights(self, gram: Tensor, *, primary: int | None, losses: Tensor | None) -> Tensor:
        previous = self.alpha
        if previous is not None and previous.shape != gram.shape[:-1]:
            previous = None  # the number of tasks or blocks changed: start afresh
        if previous is not None and self.step % self.update_weights_every != 0:
            alpha = previous.to(gram.device)
        else:
            start = torch.ones_like(gram[..., 0]) if previous is None else previous
            alpha = self._solve(gram, start.to(gram.device))
        self.alpha = alpha.detach().to("cpu").clone()
        self.step += 1
        return alpha

    def _solve(self, gram: Tensor, alpha: Tensor) -> Tensor:
        T = gram.shape[-1]
        # The Frobenius norm squares the entries: out of range (gradients below about
        # 1e-77 or above 1e77 in float64) it underflows or overflows, unless the Gram is
        # first scaled by a power of four, which leaves Q / ||Q|| as it is.
        gram = exactly_rescaled_tensor(gram)
        frobenius = torch.linalg.matrix_norm(gram)
        nonzero = frobenius > 0
        normalised = gram / torch.where(nonzero, frobenius, 1.0)[..., None, None]
        normalised = normalised + self.reg_eps * torch.eye(T, dtype=gram.dtype, device=gram.device)
        alpha = _good_start(normalised, alpha)
        for _ in range(self.max_iterations):
            gradient = (normalised @ alpha.unsqueeze(-1)).squeeze(-1) - 1.0 / alpha
            hessian = normalised + torch.diag_embed(alpha.pow(-2))
            newton = torch.linalg.solve(hessian, gradient.unsqueeze(-1)).squeeze(-1)
            decrement_sq = (gradient * newton).sum(-1).clamp(min=0.0)
            alpha = alpha - newton / (1.0 + decrement_sq.sqrt())[..., None]
            if bool((decrement_sq < 1e-20).all()):
                break
        return torch.where(nonzero[..., None], alpha, torch.ones_like(alpha))

    def state_dict(self) -> dict[str, Any]:
        if self.alpha is None:
            return {}
        return {"alpha": self.alpha.clone(), "step": self.step}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if not state_dict:
            self.alpha, self.step = None, 0
            return
        if set(state_dict) != {"alpha", "step"}:
            raise ValueError(
                "NashMTL.load_state_dict: expected keys ['alpha', 'step'], "
                f"got {sorted(state_dict)}"
            )
        step = integer_option("NashMTL state_dict['step']", state_dict["step"], minimum=0)
        alpha = state_dict["alpha"]
        if not isinstance(alpha, Tensor):
            raise ValueError(f"Invalid NashMTL state_dict['alpha']: {type(alpha).__name__}")
        self.alpha = alpha.detach().to("cpu", torch.float64).clone()
        self.step = step


_START_GAP = 1.0
"""How far above the better rescaled start (in the objective) a warm start may lie and
still be used as it is: the damped Newton steps lower a self-concordant objective by at
least about 0.09 each, so a gap of 1 costs about a dozen of them."""


def _quadratic(normalised: Tensor, alpha: Tensor) -> Tensor:
    r""":math:`\alpha^\top \hat Q \alpha`, one value per block."""
    return (alpha.unsqueeze(-2) @ normalised @ alpha.unsqueeze(-1)).squeeze(-1).squeeze(-1)


def _good_start(normalised: Tensor, previous: Tensor) -> Tensor:
    r"""Where the Newton steps start in each block: ``previous`` (the last solution, or
    ones), unless its objective :math:`f(\alpha) = \tfrac12 \alpha^\top \hat Q \alpha -
    \sum_i \log \alpha_i` lies more than :data:`_START_GAP` above the lower of two rescaled
    starts, ``previous`` and ones each on its best scale; then that one.

    On its best scale :math:`t = \sqrt{T / q}`, :math:`q = \alpha^\top \hat Q \alpha` (at
    the solution, :math:`t = 1`), a start's objective is :math:`f(t \alpha) = \tfrac T2 -
    \sum_i \log \alpha_i - \tfrac T2 \log(T / q)`, from the same :math:`q`.

    A warm start from far above the new solution (a task whose gradient was tiny at the
    last solve, with a weight of about 1000, and is not any more) would otherwise take
    hundreds of damped steps, more than ``max_iterations``; rescaled, its objective is
    the lowest on its ray. Near the last solution, the usual case, ``previous`` is kept as
    it is.
    """
    T = previous.shape[-1]
    quadratic = _quadratic(normalised, previous)
    log_sum = torch.log(previous).sum(-1)
    ones = torch.ones_like(previous)
    uniform_quadratic = _quadratic(normalised, ones)  # (and sum log 1 = 0)
    value = 0.5 * quadratic - log_sum
    rescaled_value = 0.5 * T - log_sum - 0.5 * T * torch.log(T / quadratic)
    uniform_value = 0.5 * T - 0.5 * T * torch.log(T / uniform_quadratic)
    rescaled = previous * torch.sqrt(T / quadratic)[..., None]
    uniform = ones * torch.sqrt(T / uniform_quadratic)[..., None]
    better = torch.where((uniform_value < rescaled_value)[..., None], uniform, rescaled)
    far = value > torch.minimum(rescaled_value, uniform_value) + _START_GAP
    return torch.where(far[..., None], better, previous)
