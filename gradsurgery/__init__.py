"""gradsurgery: interchangeable multi-task gradient conflict resolvers for PyTorch.

The public names:

- :func:`resolve` combines a task-gradient matrix into one update direction;
- :func:`backward` goes from task losses straight to ``.grad``;
- :func:`available`, :func:`get_resolver` and :func:`register` manage resolvers by name;
- :mod:`gradsurgery.resolvers` holds the resolver classes.
"""

from gradsurgery import resolvers
from gradsurgery._version import __version__
from gradsurgery.autograd import BackwardResult, backward
from gradsurgery.registry import available, get_resolver, register
from gradsurgery.resolve import resolve

__all__ = [
    "BackwardResult",
    "__version__",
    "available",
    "backward",
    "get_resolver",
    "register",
    "resolve",
    "resolvers",
]
