"""One DiagnosticStatus per node on /diagnostics, its level following recent errors."""
from __future__ import annotations

import time
from collections import deque

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.node import Node
from std_msgs.msg import Header

OK, WARN, ERROR = DiagnosticStatus.OK, DiagnosticStatus.WARN, DiagnosticStatus.ERROR


class Health:
    """Errors and successes over the last `window_s` seconds -> a diagnostic level.

    OK without errors; WARN when errors occur beside successes; ERROR when only errors do.
    """

    def __init__(self, window_s: float = 10.0):
        self.window_s = window_s
        self.errors: deque[tuple[float, str]] = deque()
        self.successes: deque[float] = deque()

    def error(self, reason: str) -> None:
        self.errors.append((time.monotonic(), reason))

    def success(self) -> None:
        self.successes.append(time.monotonic())

    def _trim(self) -> None:
        horizon = time.monotonic() - self.window_s
        while self.errors and self.errors[0][0] < horizon:
            self.errors.popleft()
        while self.successes and self.successes[0] < horizon:
            self.successes.popleft()

    def level(self) -> bytes:
        self._trim()
        if not self.errors:
            return OK
        return WARN if self.successes else ERROR

    def summary(self, message: str) -> str:
        """`message`, plus the latest error while errors occur."""
        self._trim()
        if not self.errors:
            return message
        return f'{message}; {len(self.errors)} errors in {self.window_s:.0f} s, latest: {self.errors[-1][1]}'


class StatusPublisher:
    """Publishes a node's status (name '<namespace>/<node>: <what>') with string key/values."""

    def __init__(self, node: Node, what: str, hardware_id: str = ''):
        self.node = node
        self.name = f'{node.get_fully_qualified_name()}: {what}'
        self.hardware_id = hardware_id
        self.publisher = node.create_publisher(DiagnosticArray, '/diagnostics', 10)

    def publish(self, message: str, values: dict[str, str], level: bytes = OK) -> None:
        status = DiagnosticStatus(level=level, name=self.name, hardware_id=self.hardware_id, message=message,
                                  values=[KeyValue(key=k, value=v) for k, v in values.items()])
        header = Header(stamp=self.node.get_clock().now().to_msg())
        self.publisher.publish(DiagnosticArray(header=header, status=[status]))

    def report(self, message: str, values: dict[str, str], health: Health) -> None:
        """Publish with the level and message that `health` gives."""
        self.publish(health.summary(message), values, health.level())
