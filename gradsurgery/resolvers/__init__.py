"""The resolvers: one file per method, plus the base contract in :mod:`.base`."""

from gradsurgery.resolvers.base import GramResolver, Resolution, Resolver
from gradsurgery.resolvers.gr import GradientRemedy
from gradsurgery.resolvers.gradnorm import GradNorm
from gradsurgery.resolvers.mean import Mean
from gradsurgery.resolvers.pcgrad import PCGrad
from gradsurgery.resolvers.sum import Sum

__all__ = [
    "GradNorm",
    "GradientRemedy",
    "GramResolver",
    "Mean",
    "PCGrad",
    "Resolution",
    "Resolver",
    "Sum",
]
