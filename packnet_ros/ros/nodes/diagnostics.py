"""One DiagnosticStatus per node on /diagnostics, its level following recent errors."""
from __future__ import annotations

import time
from collections import deque

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.node import Node
from std_msgs.msg import Header

OK, WARN, ERROR = DiagnosticStatus.OK, DiagnosticStatus.WARN, DiagnosticStatus.ERROR


class Health:
    """Errors and successes over the last `window_s` seconds, and standing faults -> a level.

    OK without errors; WARN when errors occur beside successes; ERROR when only errors do, and
    for as long as a fault stands (a condition that lasts until something clears it, such as
    saves that fail: every save is minutes apart, so a windowed error would mostly read OK).
    """

    def __init__(self, window_s: float = 10.0):
        self.window_s = window_s
        self.errors: deque[tuple[float, str]] = deque()
        self.successes: deque[float] = deque()
        self.faults: dict[str, str] = {}

    def fault(self, name: str, reason: str | None) -> None:
        """Set the standing fault `name` to `reason`; None clears it."""
        if reason:
            self.faults[name] = reason
        else:
            self.faults.pop(name, None)

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
        if self.faults:
            return ERROR
        if not self.errors:
            return OK
        return WARN if self.successes else ERROR

    def summary(self, message: str) -> str:
        """`message`, plus the standing faults and the latest error while errors occur."""
        self._trim()
        parts = [message, *self.faults.values()]
        if self.errors:
            parts.append(f'{len(self.errors)} errors in {self.window_s:.0f} s, latest: {self.errors[-1][1]}')
        return '; '.join(parts)


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
