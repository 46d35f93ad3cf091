"""The peer libraries, called the way their users call them, as optional dependencies.

- **TorchJD** (``pip install "torchjd[quadprog_projector,cagrad,nash_mtl]"``: UPGrad needs
  quadprog, CAGrad and Nash-MTL need cvxpy): ``mtl_backward(losses,
  features=features)`` fills the shared parameters' ``.jac``, then
  ``jac_to_grad(shared, aggregator)`` writes ``.grad`` (its documented multi-task loop).
- **LibMTL** (``pip install --no-deps libmtl==1.1.5``): its weightings are mix-ins of its
  ``Trainer``; here each one is hosted by a minimal object that provides what the trainer
  would (``get_share_params``, ``zero_grad_share_params``, ``task_num``, ``device``,
  ``epoch``, ``train_loss_buffer``), and its ``backward(losses, **weight_args)`` is called.
  LibMTL 1.1.5's package ``__init__`` imports ``torchvision.models.utils``, which current
  torchvision no longer has; when torchvision is absent or too new, a stub of that one
  module is put in ``sys.modules`` for the import and removed after.

A peer method is matched to a gradsurgery method by name (:data:`ALIASES`), so that the
results line up and the directions can be compared.
"""

from __future__ import annotations

import importlib
import sys
import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

import gradsurgery

__all__ = [
    "ALIASES",
    "NOTES",
    "PeerMethod",
    "alias_key",
    "canonical",
    "libmtl_methods",
    "peer_methods",
    "peer_note",
]

ALIASES: dict[str, tuple[str, ...]] = {
    "sum": ("sum",),
    "mean": ("mean",),
    "pcgrad": ("pcgrad",),
    "mgda": ("mgda",),
    "cagrad": ("cagrad",),
    "upgrad": ("upgrad",),
    "imtl_g": ("imtl_g", "imtlg", "imtl"),
    "aligned_mtl": ("aligned_mtl", "alignedmtl", "aligned"),
    "gradvac": ("gradvac",),
    "nash_mtl": ("nash_mtl", "nashmtl", "nash"),
    "gradnorm": ("gradnorm",),
    "uncertainty": ("uncertainty", "uw"),
    "dwa": ("dwa",),
    "rlw": ("rlw",),
}
"""Canonical method -> the names gradsurgery may register it under."""

PeerBackward = Callable[[Tensor, list[Tensor]], None]
"""``(features, losses) -> None``: writes ``.grad`` of every parameter the losses reach."""


NOTES: dict[tuple[str, str], str] = {
    ("libmtl", "imtl_g"): "LibMTL's IMTL is IMTL-G on exp(s) L - s with learned s (s = 0 here)",
    ("libmtl", "gradnorm"): "LibMTL's GradNorm learns softmax-parametrised weights",
    ("libmtl", "uncertainty"): "norm: LibMTL starts s at -0.5, we at 0, so its weights are "
    "e^0.5 / 2 to our 1/2: ratio e^-0.5 = 0.607",
    ("torchjd", "cagrad"): "norm: TorchJD's CAGrad omits the final division by 1 + c^2 "
    "(the authors' rescale=1, our default): ratio 1 / 1.16 = 0.862 at c = 0.4",
    ("torchjd", "aligned_mtl"): "norm: TorchJD's AlignedMTL averages the aligned gradients "
    "(its default pref_vector 1/T), we sum them: ratio T",
    ("torchjd", "nash_mtl"): "norm: TorchJD's NashMTL solves on the raw Gram (norm sqrt(T)) "
    "and clips to its default max_norm = 1, so the ratio is our norm (where its ECOS solve "
    "fails, it keeps its starting weights 1: the sum)",
    ("torchjd", "mgda"): "TorchJD's MGDA stops its Frank-Wolfe loop at a step below its "
    "default epsilon = 1e-3, short of the min-norm point for T > 2",
    ("libmtl", "gradvac"): "LibMTL 1.1.5's GradVac updates a target only when the pair's "
    "similarity is below it (fixed upstream in d2d84fa), we at every visit",
    ("libmtl", "mgda"): "LibMTL's MGDA (Sener and Koltun's projected-gradient solver) ends "
    "once a step moves the weights by less than 1e-5 in all (its 250-step cap is never "
    "counted), which can be short of the min-norm point for T > 2; for T = 2 it keeps "
    "their closed form, whose weights are 0.999 and 0.001 where the min-norm point is a "
    "vertex (exactly 1 and 0 here)",
}
"""``(library, key of ALIASES)`` -> how the peer's method differs from gradsurgery's
(:attr:`PeerMethod.note`). A note that starts with ``norm:`` gives the exact reason, in the
peer's code, for a norm ratio (ours / theirs) other than 1 where the directions agree."""


def alias_key(method: str) -> str:
    """The key of :data:`ALIASES` that ``method`` (a name gradsurgery may register a method
    under, or a peer's) stands for; ``method`` itself if none."""
    for key, aliases in ALIASES.items():
        if method in aliases:
            return key
    return method


def peer_note(library: str, method: str) -> str:
    """The note of ``library``'s ``method`` (any of its aliases) in :data:`NOTES`, or ``""``."""
    return NOTES.get((library, alias_key(method)), "")


def canonical(method: str) -> str:
    """The name a peer method is reported under: gradsurgery's, where it has one."""
    registered = set(gradsurgery.available())
    for alias in ALIASES.get(method, (method,)):
        if alias in registered:
            return alias
    return method


@dataclass
class PeerMethod:
    """One method of one peer library; ``build(shared, tasks)`` returns its backward, and
    ``note`` says how it differs from gradsurgery's (from :data:`NOTES`)."""

    library: str
    method: str
    build: Callable[[list[Tensor], int], PeerBackward]
    note: str = ""


# --- TorchJD ----------------------------------------------------------------------------


def _torchjd_methods() -> tuple[list[PeerMethod], str | None]:
    try:
        from torchjd import aggregation
        from torchjd.autojac import jac_to_grad, mtl_backward
    except Exception as error:  # pragma: no cover - depends on the environment
        return [], f"torchjd cannot be imported: {type(error).__name__}: {error}"

    factories: dict[str, Callable[[int], Any]] = {
        "sum": lambda T: aggregation.Sum(),
        "mean": lambda T: aggregation.Mean(),
        "pcgrad": lambda T: aggregation.PCGrad(),
        "mgda": lambda T: aggregation.MGDA(),
        "cagrad": lambda T: aggregation.CAGrad(c=0.4),
        "upgrad": lambda T: aggregation.UPGrad(),
        "imtl_g": lambda T: aggregation.IMTLG(),
        "aligned_mtl": lambda T: aggregation.AlignedMTL(),
        "gradvac": lambda T: aggregation.GradVac(),
        "nash_mtl": lambda T: aggregation.NashMTL(n_tasks=T),
    }

    def builder(factory: Callable[[int], Any]) -> Callable[[list[Tensor], int], PeerBackward]:
        def build(shared: list[Tensor], tasks: int) -> PeerBackward:
            aggregator = factory(tasks)

            def backward(features: Tensor, losses: list[Tensor]) -> None:
                mtl_backward(losses, features=features)
                jac_to_grad(shared, aggregator)

            return backward

        return build

    return [
        PeerMethod("torchjd", canonical(name), builder(factory), peer_note("torchjd", name))
        for name, factory in factories.items()
    ], None


# --- LibMTL -----------------------------------------------------------------------------


def _import_libmtl_weighting() -> tuple[Any, str | None]:
    """``LibMTL.weighting``, importing it with a stub ``torchvision.models.utils`` if needed."""
    stubbed: list[str] = []
    try:
        importlib.import_module("torchvision.models.utils")
    except Exception:
        for name in ("torchvision", "torchvision.models", "torchvision.models.utils"):
            if name not in sys.modules:
                sys.modules[name] = types.ModuleType(name)
                stubbed.append(name)
        sys.modules["torchvision.models.utils"].load_state_dict_from_url = (  # type: ignore[attr-defined]
            torch.hub.load_state_dict_from_url
        )
    try:
        weighting = importlib.import_module("LibMTL.weighting")
        return weighting, None
    except Exception as error:
        return None, f"LibMTL cannot be imported: {type(error).__name__}: {error}"
    finally:
        for name in stubbed:
            sys.modules.pop(name, None)


def _libmtl_host(weighting_class: Any, shared: list[Tensor], tasks: int) -> Any:
    """An instance of a LibMTL weighting with what its Trainer would provide."""

    class Host(weighting_class):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.task_num = tasks
            self.task_name = [str(i) for i in range(tasks)]
            self.device = shared[0].device
            self.rep_grad = False
            # Past the warm-up epochs of GradNorm (1) and DWA (2), with flat loss history.
            self.epoch = 2
            self.train_loss_buffer = np.ones((tasks, 3))
            self.init_param()

        def get_share_params(self) -> list[Tensor]:
            return shared

        def zero_grad_share_params(self) -> None:
            for param in shared:
                if param.grad is not None:
                    param.grad.zero_()

    return Host()


LIBMTL_ARGS: dict[str, tuple[str, dict[str, Any]]] = {
    "sum": ("EW", {}),
    "pcgrad": ("PCGrad", {}),
    "mgda": ("MGDA", {"mgda_gn": "none"}),
    "cagrad": ("CAGrad", {"calpha": 0.4, "rescale": 1}),
    "imtl_g": ("IMTL", {}),
    "gradvac": ("GradVac", {"beta": 0.5}),
    "gradnorm": ("GradNorm", {"alpha": 1.5}),
    "uncertainty": ("UW", {}),
    "dwa": ("DWA", {"T": 2.0}),
    "rlw": ("RLW", {"dist": "Normal"}),
}
"""Canonical method -> (LibMTL class, ``weight_args`` as LibMTL's config would pass them)."""


def libmtl_methods() -> tuple[list[PeerMethod], str | None]:
    weighting, reason = _import_libmtl_weighting()
    if weighting is None:
        return [], reason

    def builder(class_name: str, kwargs: dict[str, Any]) -> Callable[[list[Tensor], int], Any]:
        def build(shared: list[Tensor], tasks: int) -> PeerBackward:
            host = _libmtl_host(getattr(weighting, class_name), shared, tasks)

            def backward(features: Tensor, losses: list[Tensor]) -> None:
                host.backward(torch.stack(losses), **kwargs)

            return backward

        return build

    return [
        PeerMethod("libmtl", canonical(name), builder(cls, kwargs), peer_note("libmtl", name))
        for name, (cls, kwargs) in LIBMTL_ARGS.items()
    ], None


def peer_methods(
    libraries: tuple[str, ...] = ("torchjd", "libmtl"),
) -> tuple[list[PeerMethod], dict[str, str]]:
    """Every peer method that can be built, and why a library is missing where it is."""
    found: list[PeerMethod] = []
    missing: dict[str, str] = {}
    sources = {"torchjd": _torchjd_methods, "libmtl": libmtl_methods}
    for library in libraries:
        methods, reason = sources[library]()
        found += methods
        if reason is not None:
            missing[library] = reason
    return found, missing
