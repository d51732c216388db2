"""Nodes as processes on a private ROS domain, and a client node in this process to talk to them.

The demo, the tests and the benchmarks all start nodes the way `ros2 run` does: the
installed executable with parameter files, `-p` overrides and remappings, its output in a
log file; and they watch them through a ClientNode spinning in a background thread.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import rclpy
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node

from packnet_ros.ros.resources import use_fastdds_profile

BIN = Path(sys.executable).parent


def ros_environment(domain_id: int | None = None) -> dict[str, str]:
    """Our own ROS domain (default: one derived from this process id) with discovery limited
    to this machine, and our Fast DDS profile. Also applied to os.environ, so rclpy contexts
    made here join it."""
    domain = domain_id if domain_id is not None else 10 + os.getpid() % 90
    os.environ['ROS_DOMAIN_ID'] = str(domain)
    os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
    use_fastdds_profile()
    return dict(os.environ, PYTHONUNBUFFERED='1')


def write_params_file(path: str | Path, parameters: dict, node: str = '/**') -> Path:
    """A ROS 2 parameters file for `node` (default: any node)."""
    path = Path(path)
    lines = [f'{node}:', '  ros__parameters:'] + [f'    {k}: {json.dumps(v)}' for k, v in parameters.items()]
    path.write_text('\n'.join(lines) + '\n')
    return path


@dataclass
class NodeProcess:
    name: str
    popen: subprocess.Popen
    log: Path

    def alive(self) -> bool:
        return self.popen.poll() is None

    def interrupt(self) -> None:
        """Ctrl-C: the node closes cleanly and writes its outputs."""
        if self.alive():
            self.popen.send_signal(signal.SIGINT)

    def stop(self, timeout: float = 20.0) -> int | None:
        """interrupt(), then kill if it has not exited within `timeout` seconds."""
        if self.alive():
            self.interrupt()
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        return self.popen.returncode

    def log_tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors='replace')[-chars:] if self.log.exists() else ''


def start_node(executable: str, log: str | Path, params_files: tuple[str | Path, ...] = (),
               parameters: dict | None = None, remaps: dict[str, str] | None = None,
               namespace: str | None = None, env: dict[str, str] | None = None,
               preexec_fn: Callable[[], None] | None = None) -> NodeProcess:
    """Run an installed node executable; later parameter files and `parameters` win.
    `preexec_fn` runs in the child before the node starts (e.g. resource limits)."""
    args = [str(BIN / executable), '--ros-args']
    if namespace:
        args += ['-r', f'__ns:={namespace}']
    for path in params_files:
        args += ['--params-file', str(path)]
    for key, value in (parameters or {}).items():
        args += ['-p', f'{key}:={json.dumps(value)}']  # a YAML scalar: '' and paths survive rcl's parser
    for source, target in (remaps or {}).items():
        args += ['-r', f'{source}:={target}']
    log = Path(log)
    with log.open('w') as out:  # the child keeps its own copy of the descriptor
        popen = subprocess.Popen(args, env=env or ros_environment(), stdout=out, stderr=subprocess.STDOUT,
                                 preexec_fn=preexec_fn)
    return NodeProcess(executable, popen, log)


def stop_nodes(procs: list[NodeProcess], timeout: float = 20.0) -> None:
    """Interrupt all at once, then wait for each (killing those that hang)."""
    for proc in procs:
        proc.interrupt()
    for proc in procs:
        proc.stop(timeout)


class ClientNode:
    """A node of this process with its own rclpy context, spinning in a background thread.

    `make_node(context)` builds it (default: a plain Node named `name`). It joins the same
    private domain as the processes start_node() starts.
    """

    def __init__(self, name: str = 'client', make_node: Callable[[Context], Node] | None = None,
                 domain_id: int | None = None):
        ros_environment(domain_id)
        self.context = Context()
        rclpy.init(context=self.context)
        self.node = make_node(self.context) if make_node else Node(name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self._spin, daemon=True)
        self.thread.start()

    def _spin(self) -> None:
        while self.context.ok():
            try:
                self.executor.spin_once(timeout_sec=0.05)
            except Exception:  # the context was shut down while spinning
                return

    def wait_for(self, predicate: Callable, timeout: float, what: str):
        """predicate()'s first true value; TimeoutError naming `what` after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(0.02)
        raise TimeoutError(f'timed out after {timeout} s waiting for {what}')

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)
        self.thread.join(timeout=2)
