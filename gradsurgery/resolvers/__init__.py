"""The resolvers: one file per method, plus the base contract in :mod:`.base`."""

from gradsurgery.resolvers.aligned_mtl import AlignedMTL
from gradsurgery.resolvers.base import GramResolver, Resolution, Resolver
from gradsurgery.resolvers.cagrad import CAGrad
from gradsurgery.resolvers.cosine_gate import CosineGate
from gradsurgery.resolvers.db_mtl import DBMTL
from gradsurgery.resolvers.dwa import DynamicWeightAverage
from gradsurgery.resolvers.famo import FAMO
from gradsurgery.resolvers.gr import GradientRemedy
from gradsurgery.resolvers.gr_ablation import GradientRemedyProjection, GradientRemedyRescale
from gradsurgery.resolvers.graddrop import GradDrop
from gradsurgery.resolvers.gradnorm import GradNorm
from gradsurgery.resolvers.gradvac import GradVac
from gradsurgery.resolvers.imtl import IMTLG
from gradsurgery.resolvers.mean import Mean
from gradsurgery.resolvers.metabalance import MetaBalance
from gradsurgery.resolvers.mgda import MGDA
from gradsurgery.resolvers.nash_mtl import NashMTL
from gradsurgery.resolvers.olaux import OLAux
from gradsurgery.resolvers.pcgrad import PCGrad
from gradsurgery.resolvers.pcgrad_onesided import OneSidedPCGrad
from gradsurgery.resolvers.rlw import RandomLossWeighting
from gradsurgery.resolvers.sum import Sum
from gradsurgery.resolvers.upgrad import UPGrad
from gradsurgery.resolvers.uw import UncertaintyWeighting

__all__ = [
    "DBMTL",
    "FAMO",
    "IMTLG",
    "MGDA",
    "AlignedMTL",
    "CAGrad",
    "CosineGate",
    "DynamicWeightAverage",
    "GradDrop",
    "GradNorm",
    "GradVac",
    "GradientRemedy",
    "GradientRemedyProjection",
    "GradientRemedyRescale",
    "GramResolver",
    "Mean",
    "MetaBalance",
    "NashMTL",
    "OLAux",
    "OneSidedPCGrad",
    "PCGrad",
    "RandomLossWeighting",
    "Resolution",
    "Resolver",
    "Sum",
    "UPGrad",
    "UncertaintyWeighting",
]
