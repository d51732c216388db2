"""The reading side of /diagnostics: what the nodes say about themselves, as typed records.

Every node publishes one DiagnosticStatus named '<node>: <what>' (nodes.diagnostics) with
string values. The demo steers by them and the tests wait on them: both read them here, so
the name convention and the number parsing are written once.
"""
from __future__ import annotations

import enum
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node


class Level(enum.IntEnum):
    """DiagnosticStatus levels (rclpy gives them as one byte)."""

    OK = 0
    WARN = 1
    ERROR = 2
    STALE = 3


@dataclass(frozen=True)
class NodeStatus:
    """One node's status as received: `node` is its fully qualified name ('/ns/depth_node'),
    `what` the part after the colon ('depth', 'training', 'depth metrics')."""

    node: str
    what: str
    level: Level
    message: str
    values: dict[str, str]
    received: float  # time.monotonic() at arrival

    def number(self, key: str, default: float = math.nan) -> float:
        """values[key] as a float; `default` where absent or not a number."""
        try:
            return float(self.values[key])
        except (KeyError, ValueError):
            return default

    def count(self, key: str, default: int = 0) -> int:
        """values[key] as an int; `default` where absent or not an integer."""
        try:
            return int(self.values[key])
        except (KeyError, ValueError):
            return default


def parse(msg: DiagnosticArray, received: float | None = None) -> list[NodeStatus]:
    """The statuses of one /diagnostics message."""
    received = time.monotonic() if received is None else received
    statuses = []
    for status in msg.status:
        node, _, what = status.name.partition(':')
        level = Level(status.level[0] if isinstance(status.level, bytes) else status.level)
        statuses.append(NodeStatus(node.strip(), what.strip(), level, status.message,
                                   {kv.key: kv.value for kv in status.values}, received))
    return statuses


class DiagnosticsWatcher:
    """Subscribes `node` to /diagnostics and keeps the statuses received (thread-safe: the
    subscription runs on the node's executor, readers anywhere); `on_status` sees each as it
    arrives."""

    def __init__(self, node: Node, on_status: Callable[[NodeStatus], None] | None = None, depth: int = 50,
                 keep: int = 10000):
        self._lock = threading.Lock()
        self._seen: deque[NodeStatus] = deque(maxlen=keep)  # the newest `keep`: a bounded memory
        self._on_status = on_status
        self.subscription = node.create_subscription(DiagnosticArray, '/diagnostics', self._on_message, depth)

    def _on_message(self, msg: DiagnosticArray) -> None:
        statuses = parse(msg)
        with self._lock:
            self._seen.extend(statuses)
        if self._on_status is not None:
            for status in statuses:
                self._on_status(status)

    def clear(self) -> None:
        """Forget what was received so far (e.g. before a node restarts)."""
        with self._lock:
            self._seen.clear()

    def history(self, what: str | None = None, node: str | None = None) -> list[NodeStatus]:
        """Every status received, oldest first; where given, only those of `what` and of `node`:
        a fully qualified name ('/ns/depth_node') is that node, a bare one ('depth_node') that
        node in any namespace."""
        with self._lock:
            seen = list(self._seen)
        return [s for s in seen if _matches(s, what, node)]

    def latest(self, what: str | None = None, node: str | None = None) -> NodeStatus | None:
        """The newest status matching as in history(); None before any arrived. Searched from the
        newest back, so polling it stays cheap however many statuses are kept."""
        with self._lock:
            for status in reversed(self._seen):
                if _matches(status, what, node):
                    return status
        return None

    def values(self, node: str | None = None, what: str | None = None) -> dict[str, str]:
        """The newest matching status's values; {} before any arrived."""
        status = self.latest(what, node)
        return status.values if status else {}

    def count(self, key: str, node: str | None = None, what: str | None = None) -> int:
        """The newest matching status's counter `key`; 0 before any arrived."""
        status = self.latest(what, node)
        return status.count(key) if status else 0

    def nodes(self) -> set[str]:
        """The fully qualified names of the nodes heard from."""
        return {s.node for s in self.history()}


def _matches(status: NodeStatus, what: str | None, node: str | None) -> bool:
    if what is not None and status.what != what:
        return False
    if node is None:
        return True
    return status.node == node if node.startswith('/') else status.node.rsplit('/', 1)[-1] == node
