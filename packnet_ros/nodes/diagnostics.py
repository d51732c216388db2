"""One DiagnosticStatus per node, published on /diagnostics."""
from __future__ import annotations

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.node import Node
from std_msgs.msg import Header


class StatusPublisher:
    """Publishes a node's status (name '<node>: <what>') with string key/values."""

    def __init__(self, node: Node, what: str, hardware_id: str = ''):
        self.node = node
        self.name = f'{node.get_name()}: {what}'
        self.hardware_id = hardware_id
        self.publisher = node.create_publisher(DiagnosticArray, '/diagnostics', 10)

    def publish(self, message: str, values: dict[str, str], level: bytes = DiagnosticStatus.OK) -> None:
        status = DiagnosticStatus(level=level, name=self.name, hardware_id=self.hardware_id, message=message,
                                  values=[KeyValue(key=k, value=v) for k, v in values.items()])
        header = Header(stamp=self.node.get_clock().now().to_msg())
        self.publisher.publish(DiagnosticArray(header=header, status=[status]))
