"""A run's DAG laid out for an SVG, on the server: layered left to right.

A node's layer is the length of the longest path of dependencies leading to it; within a layer
nodes keep plan order. The page draws the boxes and edges from these numbers, so a 500-node plan
costs one pass here and no layout work in the browser.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

NODE_WIDTH = 160
NODE_HEIGHT = 34
LAYER_GAP = 70
ROW_GAP = 14
MARGIN = 10
MAX_LABEL = 20


@dataclass(frozen=True, slots=True)
class PlacedNode:
    id: str
    key: str
    label: str
    status: str
    x: int
    y: int


@dataclass(frozen=True, slots=True)
class Edge:
    path: str
    source: str
    target: str


@dataclass(frozen=True, slots=True)
class Layout:
    nodes: list[PlacedNode]
    edges: list[Edge]
    width: int
    height: int


def _layers(nodes: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """Each key's layer; nodes come in plan order, where a dependency precedes its dependents."""
    layer: dict[str, int] = {}
    for node in nodes:
        layer[node["key"]] = 1 + max((layer.get(dep, -1) for dep in node["deps"]), default=-1)
    return layer


def _label(key: str) -> str:
    return key if len(key) <= MAX_LABEL else key[: MAX_LABEL - 1] + "…"


def _edge_path(source: PlacedNode, target: PlacedNode) -> str:
    x1, y1 = source.x + NODE_WIDTH, source.y + NODE_HEIGHT // 2
    x2, y2 = target.x, target.y + NODE_HEIGHT // 2
    middle = (x1 + x2) // 2
    return f"M{x1},{y1} C{middle},{y1} {middle},{y2} {x2},{y2}"


def lay_out(nodes: Sequence[Mapping[str, Any]]) -> Layout:
    """Positions for `nodes` (dicts with id, key, status, deps) and their edges' paths."""
    layer = _layers(nodes)
    rows: dict[int, int] = {}
    placed: dict[str, PlacedNode] = {}
    for node in nodes:
        column = layer[node["key"]]
        row = rows.get(column, 0)
        rows[column] = row + 1
        placed[node["key"]] = PlacedNode(
            id=str(node["id"]),
            key=node["key"],
            label=_label(node["key"]),
            status=str(node["status"]),
            x=MARGIN + column * (NODE_WIDTH + LAYER_GAP),
            y=MARGIN + row * (NODE_HEIGHT + ROW_GAP),
        )
    edges = [
        Edge(_edge_path(placed[dep], placed[node["key"]]), placed[dep].id, str(node["id"]))
        for node in nodes
        for dep in node["deps"]
        if dep in placed
    ]
    columns = max(rows, default=-1) + 1
    height = max(rows.values(), default=0)
    return Layout(
        nodes=list(placed.values()),
        edges=edges,
        width=2 * MARGIN + max(columns * (NODE_WIDTH + LAYER_GAP) - LAYER_GAP, 0),
        height=2 * MARGIN + max(height * (NODE_HEIGHT + ROW_GAP) - ROW_GAP, 0),
    )
