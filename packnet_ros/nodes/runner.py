"""The one `main` every node shares: init, spin, close on Ctrl-C or shutdown, clear start-up errors."""
from __future__ import annotations

from typing import Callable

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node

from packnet_ros.checkpoints import CheckpointError
from packnet_ros.config import use_fastdds_profile


def run(make_node: Callable[[], Node], args: list[str] | None = None) -> None:
    """Spin the node until shutdown, or until its `finished` future (if it has one) completes.

    A node's close() (stop threads, write outputs) runs however spinning ended. A node that
    cannot start (bad parameter, unusable checkpoint) logs why and exits with status 1. Fast DDS
    gets our profile (config/fastdds.xml) unless another is configured.
    """
    use_fastdds_profile()
    rclpy.init(args=args)
    node = None
    try:
        node = make_node()
        finished = getattr(node, 'finished', None)
        if finished is not None:
            rclpy.spin_until_future_complete(node, finished)
        else:
            rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except (ValueError, CheckpointError, OSError) as exc:
        if node is not None:
            raise
        rclpy.logging.get_logger(getattr(make_node, '__name__', 'node')).fatal(f'cannot start: {exc}')
        raise SystemExit(1) from exc
    finally:
        if node is not None:
            node.close()
            node.destroy_node()
        rclpy.try_shutdown()
