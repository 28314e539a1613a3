"""Projectors: trainable modules from encoder features to LLM-space tokens, one registered builder per type.

Importing this package registers every type in :data:`PROJECTORS`.
"""

from mmadapter.projectors.base import PROJECTORS, Projector
from mmadapter.projectors.conv import ConvProjector, ConvSpec
from mmadapter.projectors.graph import GraphProjector, GraphSpec
from mmadapter.projectors.linear import LinearProjector
from mmadapter.projectors.mlp import MlpProjector, MlpSpec
from mmadapter.projectors.pool import PoolProjector, PoolSpec
from mmadapter.projectors.prefix import PrefixProjector, PrefixSpec
from mmadapter.projectors.qformer import QFormerProjector, QFormerSpec
from mmadapter.projectors.stack import StackProjector, StackSpec

__all__ = [
    "PROJECTORS",
    "ConvProjector",
    "ConvSpec",
    "GraphProjector",
    "GraphSpec",
    "LinearProjector",
    "MlpProjector",
    "MlpSpec",
    "PoolProjector",
    "PoolSpec",
    "PrefixProjector",
    "PrefixSpec",
    "Projector",
    "QFormerProjector",
    "QFormerSpec",
    "StackProjector",
    "StackSpec",
]
