"""``gnn`` encoders: GCN, GraphSAGE, GAT and GIN stacks built from torch_geometric layers.

Shape letters: n graphs, N nodes of the whole batch, F node features (``in_dim``), E edges, A edge features
(``edge_dim``), s nodes of the largest graph, d ``hidden`` (``embed_dim``).

A graph item is a torch_geometric :class:`~torch_geometric.data.Data`; a batch of them is a
:class:`~torch_geometric.data.Batch` (one disconnected graph). The encoder returns node embeddings padded per
graph, so ``output_length(N) = N`` and every projector sees a graph as a sequence of its nodes. When the graph
names a ``target`` node (node-level tasks), :meth:`GnnEncoder.transform` relabels the nodes so that the target is
node 0: its embedding is then the first frame of the graph's row, which is how ``graph`` projectors in ``target``
mode find it without any extra input.

Papers: GCN https://arxiv.org/abs/1609.02907, GraphSAGE https://arxiv.org/abs/1706.02216,
GAT https://arxiv.org/abs/1710.10903, GIN https://arxiv.org/abs/1810.00826 (GINE: https://arxiv.org/abs/1905.12265).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import NonNegativeFloat, PositiveInt, model_validator
from safetensors.torch import load_file
from torch import Tensor, nn
from torch_geometric.data import Batch, Data
from torch_geometric.nn import GATConv, GCNConv, GINConv, GINEConv, SAGEConv
from torch_geometric.utils import to_dense_batch

from mmadapter.config import RecipeError
from mmadapter.data.node_text import NodeTextFeatures, NodeTextSpec, build_node_text_features
from mmadapter.data.skips import BadSample
from mmadapter.encoders.base import ENCODERS, Encoder, EncoderSpec

__all__ = ["GnnEncoder", "GnnSpec", "gnn", "gnn_test"]

Arch = Literal["gcn", "sage", "gat", "gin"]
Norm = Literal["none", "batch", "layer"]
EDGE_ARCHS: tuple[str, ...] = ("gat", "gin")


class GnnSpec(EncoderSpec):
    """Options of ``gnn`` / ``gnn_test``; they alone define the network's shape.

    ``name_or_path`` is a ``.safetensors`` file of this network's state dict (pretrained weights); ``config: {}``
    asks for random weights instead (any other ``config`` is refused: the options say everything).

    Attributes:
        arch: Message-passing layer: ``gcn`` (GCNConv), ``sage`` (SAGEConv, mean aggregation), ``gat``
            (GATConv, ``heads`` concatenated heads of ``hidden / heads`` channels), ``gin`` (GINConv, or GINEConv
            when ``edge_dim`` is set, each with a two-layer MLP).
        in_dim: Node feature width F of the graphs' ``x``.
        hidden: Width d of every layer, the embedding width.
        layers: Number of message-passing layers.
        dropout: Dropout after every layer but the last (training mode only).
        norm: Node-wise normalisation after every layer but the last.
        residual: Add each layer's input to its output where the widths agree (every layer when
            ``in_dim == hidden``, else all but the first).
        edge_dim: Edge feature width A; the graphs' ``edge_attr`` is used only when set (``gat`` and ``gin``).
        heads: Attention heads of ``gat``; must divide ``hidden``.
        node_text: Take node features from the graphs' ``node_text`` instead of ``x``: ``llm_embeddings`` (mean of
            the LLM's input embeddings of each text's tokens as loaded, before any training: fixed features,
            computed once in the data workers and cached, even in a stage that trains the LLM; ``in_dim`` must
            be the LLM width) or
            ``{encoder: <HF text encoder>}`` (its mean-pooled last hidden state; ``in_dim`` its width), with
            ``max_length``, ``cache_dir`` and more (:class:`~mmadapter.data.node_text.NodeTextSpec`). ``None``:
            numeric ``x``.
    """

    arch: Arch = "gcn"
    in_dim: PositiveInt = 16
    hidden: PositiveInt = 32
    layers: PositiveInt = 2
    dropout: NonNegativeFloat = 0.0
    norm: Norm = "none"
    residual: bool = False
    edge_dim: PositiveInt | None = None
    heads: PositiveInt = 2
    node_text: NodeTextSpec | None = None

    @model_validator(mode="after")
    def _consistent(self) -> GnnSpec:
        if self.config:
            raise ValueError(f"{self.name}: config must be empty ({{}} = random weights); the options set the shape")
        if self.edge_dim is not None and self.arch not in EDGE_ARCHS:
            raise ValueError(
                f"{self.name}: arch={self.arch!r} takes no edge features; edge_dim needs one of {EDGE_ARCHS}"
            )
        if self.arch == "gat" and self.hidden % self.heads:
            raise ValueError(f"{self.name}: heads={self.heads} must divide hidden={self.hidden}")
        if self.name_or_path is not None and not self.name_or_path.endswith(".safetensors"):
            raise ValueError(f"{self.name}: name_or_path must be a .safetensors file, got {self.name_or_path!r}")
        return self


def _conv(spec: GnnSpec, in_dim: int) -> nn.Module:
    d = spec.hidden
    if spec.arch == "gcn":
        return GCNConv(in_dim, d)
    if spec.arch == "sage":
        return SAGEConv(in_dim, d)
    if spec.arch == "gat":
        return GATConv(in_dim, d // spec.heads, heads=spec.heads, edge_dim=spec.edge_dim)
    mlp = nn.Sequential(nn.Linear(in_dim, d), nn.ReLU(), nn.Linear(d, d))
    return GINConv(mlp) if spec.edge_dim is None else GINEConv(mlp, edge_dim=spec.edge_dim)


def _norm(kind: Norm, d: int) -> nn.Module:
    return {"none": nn.Identity, "batch": nn.BatchNorm1d, "layer": nn.LayerNorm}[kind](d)


class GnnEncoder(Encoder):
    """A stack of ``layers`` message-passing layers; each but the last is followed by norm, ReLU and dropout.

    Parameters: ``convs.{l}.*`` (the torch_geometric layers), ``norms.{l}.*``.

    Args:
        spec: Its options (:class:`GnnSpec`).
    """

    modality: ClassVar[Literal["graph"]] = "graph"

    def __init__(self, spec: GnnSpec) -> None:
        super().__init__()
        self.in_dim, self.embed_dim, self.edge_dim = spec.in_dim, spec.hidden, spec.edge_dim
        self.node_text = spec.node_text
        self.node_features: NodeTextFeatures | None = None  # set by bind_llm; a plain object, not a submodule
        widths = [spec.in_dim] + [spec.hidden] * (spec.layers - 1)
        self.convs = nn.ModuleList(_conv(spec, w) for w in widths)
        self.norms = nn.ModuleList(_norm(spec.norm, spec.hidden) for _ in widths[1:])
        self.residual = [spec.residual and w == spec.hidden for w in widths]
        self.dropout = nn.Dropout(spec.dropout)

    def forward(self, inputs: Batch, lengths: Tensor) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        """Encode a batch of graphs.

        Args:
            inputs: ``Batch`` of n graphs: ``x`` ``(N, F)``, ``edge_index`` ``(2, E)``, ``edge_attr`` ``(E, A)``
                when ``edge_dim`` is set, ``batch`` ``(N,)``.
            lengths: ``(n,)`` nodes per graph (as :meth:`input_length` counts them).

        Returns:
            Node embeddings ``(n, s, d)``, zero past each graph's nodes, and ``(n,)`` nodes per graph.
        """
        h, edge_index = inputs.x, inputs.edge_index
        edge_attr = inputs.edge_attr if self.edge_dim is not None else None
        for layer, conv in enumerate(self.convs):
            out = conv(h, edge_index) if edge_attr is None else conv(h, edge_index, edge_attr)
            if layer < len(self.norms):
                out = self.dropout(torch.relu(self.norms[layer](out)))
            h = h + out if self.residual[layer] else out
        dense, mask = to_dense_batch(h, inputs.batch, batch_size=inputs.num_graphs)  # (n, s, d), (n, s)
        counts = mask.sum(1)
        if not torch.equal(counts, lengths.to(counts.device)):
            raise ValueError(f"lengths {lengths.tolist()} disagree with the batch's nodes per graph {counts.tolist()}")
        return dense, counts

    def bind_llm(self, llm: nn.Module, tokenizer: Any) -> None:
        """With ``node_text``, set up the cached node-text features and check their width against ``in_dim``.

        Raises:
            RecipeError: ``in_dim`` differs from the width of the node-text features.
        """
        if self.node_text is None:
            return
        features = build_node_text_features(self.node_text, llm, tokenizer)
        width = features.embedder.dim
        if width is not None and width != self.in_dim:
            source = "the LLM width" if self.node_text.encoder is None else f"the width of {self.node_text.encoder}"
            detail = f"is {self.in_dim}, but node_text features have {width} ({source}); set it to {width}"
            raise RecipeError([("model.encoders.graph.in_dim", detail)])
        self.node_features = features

    def output_length(self, input_length: int) -> int:
        """One embedding per node."""
        return input_length

    def input_length(self, features: Data) -> int:  # type: ignore[override]
        """Nodes of one transformed graph."""
        return int(features.num_nodes)

    def transform(self, raw: dict[str, Any]) -> Data:  # type: ignore[override]
        """A decoded graph (:func:`mmadapter.data.graph.decode_graph`) → ``Data``.

        ``x`` float32 ``(N, F)`` (with ``node_text``: the cached features of the graph's node texts),
        ``edge_index`` int64 ``(2, E)``, ``edge_attr`` float32 ``(E, A)`` when
        ``edge_dim`` is set. An integer ``target`` names the target node: nodes are relabelled (target first,
        the others in their order) and ``Data.target`` is 0; the original index is kept as ``target_index``. Both
        are -1 for a graph without a target.

        Raises:
            BadSample: ``bad_graph`` (a ``ValueError``; the data pipeline skips and counts the sample): no
                numeric ``x`` without ``node_text`` set, no ``node_text`` with it set, ``x`` of another width than
                ``in_dim``, missing or misshapen ``edge_attr`` while ``edge_dim`` is set, or a ``target`` that is not
                one node index in ``[0, N)``.
        """
        if self.node_text is not None:
            if "node_text" not in raw:
                raise _bad("the encoder embeds node texts (model.encoders.graph.node_text) but the graph has none")
            if self.node_features is None:
                raise RuntimeError("node_text is set but bind_llm was not called (build through MultimodalLM)")
            features = self.node_features(raw["node_text"])
        elif "x" not in raw:
            raise _bad("the graph has no numeric node features x; set model.encoders.graph.node_text to embed texts")
        else:
            features = raw["x"]
        x = torch.as_tensor(np.asarray(features, dtype=np.float32))
        if x.ndim != 2 or x.shape[1] != self.in_dim:
            raise _bad(f"node features x must be (N, {self.in_dim}) for this encoder, got {tuple(x.shape)}")
        edge_index = torch.as_tensor(np.asarray(raw["edge_index"], dtype=np.int64))
        data = Data(x=x, edge_index=edge_index)
        if self.edge_dim is not None:
            if "edge_attr" not in raw:
                raise _bad(f"the encoder takes edge features (edge_dim={self.edge_dim}) but the graph has none")
            attr = torch.as_tensor(np.asarray(raw["edge_attr"], dtype=np.float32))
            attr = attr[:, None] if attr.ndim == 1 else attr  # (E,) is one feature per edge
            if attr.shape != (edge_index.shape[1], self.edge_dim):
                raise _bad(
                    f"edge_attr must be (E, {self.edge_dim}) with E = {edge_index.shape[1]}, got {tuple(attr.shape)}"
                )
            data.edge_attr = attr
        if "target" in raw:
            _target_first(data, raw["target"])
        else:  # every Data of a batch needs the same attributes
            data.target, data.target_index = torch.tensor([-1]), torch.tensor([-1])
        return data


def _bad(detail: str) -> BadSample:
    return BadSample("bad_graph", None, detail)


def _target_first(data: Data, target: Any) -> None:
    """Relabel ``data``'s nodes in place so that node ``target`` becomes node 0."""
    t = np.asarray(target)
    n = int(data.num_nodes)
    if t.size != 1 or t.dtype.kind not in "iu" or not 0 <= int(t) < n:
        raise _bad(f"target must be one node index in [0, {n}), got {t.tolist()!r}")
    t = int(t)
    order = torch.cat([torch.tensor([t]), torch.arange(t), torch.arange(t + 1, n)])  # new → old
    new_id = torch.empty(n, dtype=torch.long)
    new_id[order] = torch.arange(n)  # old → new
    data.x = data.x[order]
    data.edge_index = new_id[data.edge_index]
    data.target = torch.tensor([0])
    data.target_index = torch.tensor([t])


@ENCODERS.register(spec=GnnSpec)
def gnn(spec: GnnSpec) -> GnnEncoder:
    """A GNN with weights from the ``.safetensors`` file ``name_or_path``, or random weights (``config: {}``).

    Raises:
        FileNotFoundError: ``name_or_path`` does not exist.
        ValueError: the file's tensors do not match the network the options describe.
    """
    encoder = GnnEncoder(spec).eval()
    if spec.name_or_path is not None:
        path = Path(spec.name_or_path)
        if not path.is_file():
            raise FileNotFoundError(f"{spec.name}: no GNN weights file {path}")
        try:
            encoder.load_state_dict(load_file(path), strict=True)
        except RuntimeError as e:
            raise ValueError(f"{spec.name}: weights in {path} do not fit the options {spec.model_dump()}: {e}") from e
    return encoder


@ENCODERS.register(spec=GnnSpec)
def gnn_test(spec: GnnSpec) -> GnnEncoder:
    """A tiny random GNN (defaults: 2 ``gcn`` layers, 16 → 32); ``arch`` and the other options still apply."""
    return GnnEncoder(spec).eval()
