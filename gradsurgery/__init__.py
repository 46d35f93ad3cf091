"""gradsurgery: interchangeable multi-task gradient conflict resolvers for PyTorch.

The public names:

- :func:`resolve` combines a task-gradient matrix into one update direction;
- :func:`backward` goes from task losses straight to ``.grad``, and :class:`Accumulator`
  does so over a gradient-accumulation window (both work under ``torch.distributed``,
  see :mod:`gradsurgery.distributed`, and with a ``GradScaler``);
- :class:`ConflictMonitor` records the conflicts the resolver saw (:mod:`gradsurgery.diagnostics`);
- :func:`available`, :func:`get_resolver` and :func:`register` manage resolvers by name;
- :mod:`gradsurgery.resolvers` holds the resolver classes.
"""

from gradsurgery import diagnostics, distributed, resolvers
from gradsurgery._version import __version__
from gradsurgery.autograd import Accumulator, BackwardResult, backward
from gradsurgery.diagnostics import ConflictMonitor
from gradsurgery.registry import available, get_resolver, register
from gradsurgery.resolve import resolve

__all__ = [
    "Accumulator",
    "BackwardResult",
    "ConflictMonitor",
    "__version__",
    "available",
    "backward",
    "diagnostics",
    "distributed",
    "get_resolver",
    "register",
    "resolve",
    "resolvers",
]
