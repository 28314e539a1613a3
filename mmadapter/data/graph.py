"""``.graph.npz`` bytes to validated numpy arrays (never unpickled).

Shape letters: N nodes, E edges, F node features, A edge features.

Arrays: ``edge_index`` (2, E) integers, required; ``x`` (N, F) numbers and/or ``node_text`` (N,) strings,
at least one; optional ``edge_attr`` (E,) or (E, A) numbers, ``y`` and ``target`` (numbers or strings, any
shape). Nothing else is accepted, so a misspelt name is an error rather than silently missing data.
"""

from __future__ import annotations

import io
import zipfile

import numpy as np

from mmadapter.data.skips import BadSample, SkipReason
from mmadapter.limits import MAX_GRAPH_BYTES, MAX_GRAPH_EDGES, MAX_GRAPH_NODES

__all__ = ["GRAPH_ARRAYS", "GRAPH_EXTENSION", "MAX_GRAPH_BYTES", "MAX_GRAPH_EDGES", "MAX_GRAPH_NODES", "decode_graph"]

GRAPH_EXTENSION = "graph.npz"
GRAPH_ARRAYS: tuple[str, ...] = ("edge_index", "x", "node_text", "edge_attr", "y", "target")


def _bad(name: str, detail: str, reason: SkipReason = "bad_graph") -> BadSample:
    return BadSample(reason, None, detail, name)


def _numeric(arrays: dict[str, np.ndarray], field: str, name: str) -> np.ndarray:
    array = arrays[field]
    if array.dtype.kind not in "biuf":
        raise _bad(name, f"{field} must hold numbers, not dtype {array.dtype}")
    array = array.astype(np.float32)
    if not np.isfinite(array).all():
        raise _bad(name, f"{field} holds NaN or inf")
    return array


def _load(data: bytes, name: str, max_bytes: int) -> dict[str, np.ndarray]:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            size = sum(info.file_size for info in archive.infolist())
        if size > max_bytes:
            raise _bad(name, f"its arrays take {size} bytes uncompressed, more than {max_bytes}", "too_large_graph")
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            return {field: npz[field] for field in npz.files}
    except BadSample:
        raise
    except ValueError as e:  # numpy refuses object arrays with allow_pickle=False
        raise _bad(name, f"cannot load it without unpickling (object arrays?): {e}") from e
    except Exception as e:  # not a zip, truncated members, bad .npy headers
        raise _bad(name, f"not a readable .npz archive: {type(e).__name__}: {e}") from e


def decode_graph(
    data: bytes,
    name: str,
    max_bytes: int = MAX_GRAPH_BYTES,
    max_nodes: int | None = MAX_GRAPH_NODES,
    max_edges: int | None = MAX_GRAPH_EDGES,
) -> dict[str, np.ndarray]:
    """Load and validate one graph.

    Args:
        data: The ``.graph.npz`` file, exactly as stored (``np.savez`` or ``np.savez_compressed``).
        name: The file or member name, for errors.
        max_bytes: The largest total uncompressed size of its arrays.
        max_nodes: The largest node count N; ``None``: no limit.
        max_edges: The largest edge count E; ``None``: no limit.

    Returns:
        ``edge_index`` int64 (2, E) and whichever of ``x`` float32 (N, F), ``node_text`` str (N,),
        ``edge_attr`` float32 (E,) or (E, A), ``y`` and ``target`` the file holds.

    Raises:
        BadSample: ``graph_no_nodes`` for a graph of N = 0 nodes, ``graph_edge_out_of_range`` for edge indices
            outside [0, N), ``too_large_graph`` above any of the three limits (the bytes checked before
            inflating, the counts before the edge indices are scanned), and ``bad_graph`` naming anything else
            that is wrong: unreadable or pickled arrays, unknown or missing arrays, wrong dtypes or shapes.
    """
    arrays = _load(data, name, max_bytes)
    unknown = sorted(set(arrays) - set(GRAPH_ARRAYS))
    if unknown:
        raise _bad(name, f"unknown arrays {unknown}; allowed: {', '.join(GRAPH_ARRAYS)}")
    if "edge_index" not in arrays:
        raise _bad(name, "no edge_index array")
    if "x" not in arrays and "node_text" not in arrays:
        raise _bad(name, "neither node features x nor node_text")
    out: dict[str, np.ndarray] = {}

    nodes: set[int] = set()
    if "x" in arrays:
        out["x"] = _numeric(arrays, "x", name)
        if out["x"].ndim != 2:
            raise _bad(name, f"x must be (N, F), got shape {out['x'].shape}")
        nodes.add(out["x"].shape[0])
    if "node_text" in arrays:
        out["node_text"] = arrays["node_text"]
        if out["node_text"].dtype.kind != "U" or out["node_text"].ndim != 1:
            raise _bad(name, f"node_text must be (N,) str, got {out['node_text'].dtype} {out['node_text'].shape}")
        nodes.add(out["node_text"].shape[0])
    if len(nodes) > 1:
        raise _bad(name, f"x and node_text disagree on the node count: {sorted(nodes)}")
    (n,) = nodes
    if n == 0:
        raise _bad(name, "no nodes (N = 0)", "graph_no_nodes")
    if max_nodes is not None and n > max_nodes:
        raise _bad(name, f"{n} nodes, more than {max_nodes}", "too_large_graph")

    edge_index = arrays["edge_index"]
    if edge_index.dtype.kind not in "iu" or edge_index.ndim != 2 or edge_index.shape[0] != 2:
        raise _bad(name, f"edge_index must be (2, E) integers, got {edge_index.dtype} {edge_index.shape}")
    if max_edges is not None and edge_index.shape[1] > max_edges:
        raise _bad(name, f"{edge_index.shape[1]} edges, more than {max_edges}", "too_large_graph")
    if edge_index.size and (edge_index.min() < 0 or edge_index.max() >= n):
        span = f"[{edge_index.min()}, {edge_index.max()}]"
        raise _bad(name, f"edge_index values span {span}, outside [0, {n})", "graph_edge_out_of_range")
    out["edge_index"] = edge_index.astype(np.int64)

    if "edge_attr" in arrays:
        out["edge_attr"] = _numeric(arrays, "edge_attr", name)
        if out["edge_attr"].ndim not in (1, 2) or out["edge_attr"].shape[0] != edge_index.shape[1]:
            raise _bad(name, f"edge_attr must be (E,) or (E, A) with E = {edge_index.shape[1]}")
    for field in ("y", "target"):
        if field in arrays:
            if arrays[field].dtype.kind not in "biufU":
                raise _bad(name, f"{field} must hold numbers or strings, not dtype {arrays[field].dtype}")
            out[field] = arrays[field]
    return out
