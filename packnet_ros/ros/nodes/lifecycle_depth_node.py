"""lifecycle_depth_node: depth_node as a managed node, for Nav2-style bring-up.

configure loads the model and creates the publishers, activate subscribes to the camera and
starts serving, deactivate stops (the model stays loaded, so activating again is instant),
cleanup unloads. Parameters, topics and behaviour are depth_node's.
"""
from __future__ import annotations

import time

from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn

from packnet_ros.model.checkpoints import CheckpointError
from packnet_ros.ros.nodes.depth_node import SPIN_THREADS, DepthServing
from packnet_ros.ros.nodes.runner import STOP_BUDGET_S, run


class LifecycleDepthNode(LifecycleNode):
    spin_threads = SPIN_THREADS

    def __init__(self):
        super().__init__('depth_node')
        self.serving = DepthServing(self, self.create_lifecycle_publisher)
        self.active = False

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self.serving.configure()
        except (ValueError, CheckpointError, OSError) as exc:
            self.get_logger().error(f'cannot configure: {exc}')
            return TransitionCallbackReturn.FAILURE
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.serving.activate()
        self.active = True
        return super().on_activate(state)  # enables the lifecycle publishers

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop()
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.serving.cleanup()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop()
        return TransitionCallbackReturn.SUCCESS

    def _stop(self, deadline: float | None = None) -> None:
        if self.active:
            self.serving.deactivate(deadline or time.monotonic() + STOP_BUDGET_S)
            self.active = False

    def close(self, deadline: float) -> None:
        self._stop(deadline)


def main(args=None):
    run(LifecycleDepthNode, args)


if __name__ == '__main__':
    main()
