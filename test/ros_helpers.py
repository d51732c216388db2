"""Run node executables as real processes on a private ROS domain and talk to them."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import rclpy
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def ros_environment() -> dict[str, str]:
    """A domain of our own per test run, discovery limited to this machine."""
    domain = 10 + os.getpid() % 90
    os.environ['ROS_DOMAIN_ID'] = str(domain)
    os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
    return dict(os.environ, PYTHONUNBUFFERED='1')


def start_node(executable: str, params_file: Path, overrides: dict[str, object], log: Path) -> subprocess.Popen:
    args = [str(BIN / executable), '--ros-args', '--params-file', str(params_file)]
    for key, value in overrides.items():
        args += ['-p', f'{key}:={value}']
    return subprocess.Popen(args, env=ros_environment(), stdout=log.open('w'), stderr=subprocess.STDOUT)


def stop_node(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class Probe:
    """A test-side node spinning in a background thread, with its own rclpy context."""

    def __init__(self, name: str = 'probe'):
        ros_environment()
        self.context = Context()
        rclpy.init(context=self.context)
        self.node = Node(name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self._spin, daemon=True)
        self.thread.start()

    def _spin(self) -> None:
        while self.context.ok():
            try:
                self.executor.spin_once(timeout_sec=0.05)
            except Exception:  # context shut down while spinning
                return

    def wait_for(self, predicate, timeout: float, what: str):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(0.02)
        raise TimeoutError(f'timed out after {timeout}s waiting for {what}')

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)
        self.thread.join(timeout=2)
