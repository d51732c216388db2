"""The one `main` every node shares: init, spin, a bounded clean stop, clear start-up errors.

Stopping follows what `ros2 launch` does on Ctrl-C: SIGINT to every node (a terminal sends
its own SIGINT to the whole process group as well), SIGTERM after 5 s, SIGKILL after 5 more.
So a node must be done within 5 s of the first signal, and a second signal must not cut its
stop short. The runner handles SIGINT and SIGTERM itself (rclpy's handlers would shut the
context down under the node, and turn a second Ctrl-C into a KeyboardInterrupt inside
close()): the first one ends spinning, close(deadline) runs with the context still valid
(logging, last messages), later ones are ignored. A worker thread still inside a long
computation at the deadline (a forward pass of a big network on a busy CPU) is not waited
for: once close() has saved what must be kept, the process exits without the interpreter's
teardown, which would otherwise destroy native thread pools under that thread and abort
("terminate called without an active exception").

Nodes spin on one thread, unless they ask for more (`spin_threads`): depth_node spins two,
its camera input in a callback group of its own, so that a parameter change that waits for
a model to load does not stop frames from arriving. At the stop, callbacks still queued are
dropped and running ones get DRAIN_S to finish before the node is destroyed under them.
"""
from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from typing import Callable

import rclpy
from rclpy.executors import Executor, ExternalShutdownException, MultiThreadedExecutor, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions

from packnet_ros.model.checkpoints import CheckpointError
from packnet_ros.ros.resources import use_fastdds_profile

STOP_BUDGET_S = 3.0  # launch sends SIGTERM 5 s after SIGINT; leaves time for teardown on a busy CPU
SPIN_PERIOD_S = 0.1  # how soon a stop signal is noticed
DRAIN_S = 0.5  # at the stop, how long running callbacks of a multi-threaded node may take to finish


class RosLogHandler(logging.Handler):
    """The ROS-free core logs with Python's logging (export cache, session): in a node its
    records go to the ROS log under their logger's name, with their severity."""

    SEVERITY = {logging.DEBUG: 'debug', logging.INFO: 'info', logging.WARNING: 'warn', logging.ERROR: 'error',
                logging.CRITICAL: 'fatal'}

    def emit(self, record: logging.LogRecord) -> None:
        severity = self.SEVERITY.get(record.levelno, 'info' if record.levelno < logging.WARNING else 'error')
        try:
            getattr(rclpy.logging.get_logger(record.name), severity)(self.format(record))
        except Exception:  # noqa: BLE001 - logging must never take a node down
            self.handleError(record)


def bridge_core_logging() -> None:
    core = logging.getLogger('packnet_ros')
    if not any(isinstance(h, RosLogHandler) for h in core.handlers):
        core.addHandler(RosLogHandler())
        core.setLevel(logging.INFO)
        core.propagate = False


class StopSignals:
    """SIGINT/SIGTERM: while the node starts, abort the start (KeyboardInterrupt); once it runs,
    set `requested` (once is enough; repeats change nothing)."""

    def __init__(self):
        self.requested = threading.Event()
        self.running = False
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum, frame) -> None:
        if not self.running and not self.requested.is_set():
            self.requested.set()
            raise KeyboardInterrupt
        self.requested.set()


def run(make_node: Callable[[], Node], args: list[str] | None = None) -> None:
    """Spin the node until a stop signal or shutdown, or until its `finished` future (if it has
    one) completes.

    The node's close(deadline) (stop threads, save, write outputs) runs however spinning
    ended, and must return by `deadline` (time.monotonic()). A node that cannot start (bad
    parameter, unusable checkpoint) logs why and exits with status 1. Fast DDS gets our
    profile (config/fastdds.xml) unless another is configured.
    """
    use_fastdds_profile()
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    bridge_core_logging()
    stop = StopSignals()
    node = None
    try:
        node = make_node()
        stop.running = True
        spin(node, stop.requested)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except (ValueError, CheckpointError, OSError) as exc:
        if node is not None:
            raise
        rclpy.logging.get_logger(getattr(make_node, '__name__', 'node')).fatal(f'cannot start: {exc}')
        raise SystemExit(1) from exc
    finally:
        deadline = time.monotonic() + STOP_BUDGET_S
        if node is not None:
            node.close(deadline)
            node.destroy_node()
        ignore_stop_signals()  # rclpy's shutdown restores the default handlers, which would kill us now
        rclpy.try_shutdown()
        ignore_stop_signals()
    exit_if_threads_remain()


def spin(node: Node, stop: threading.Event) -> None:
    """Until `stop` is set, the context shuts down or the node's `finished` future is done."""
    finished = getattr(node, 'finished', None)
    threads = getattr(node, 'spin_threads', 1)
    executor: Executor = (MultiThreadedExecutor(threads, context=node.context) if threads > 1
                          else SingleThreadedExecutor(context=node.context))
    executor.add_node(node)
    try:
        while not stop.is_set() and node.context.ok() and not (finished is not None and finished.done()):
            executor.spin_once(timeout_sec=SPIN_PERIOD_S)
    finally:
        executor.remove_node(node)
        executor.shutdown(timeout_sec=0)
        if isinstance(executor, MultiThreadedExecutor):
            drain(executor, time.monotonic() + DRAIN_S)


def drain(executor: MultiThreadedExecutor, deadline: float) -> None:
    """Drop the callbacks still queued on the executor's threads and wait until `deadline` for
    those running: rclpy's shutdown does neither (it leaves its idle threads waiting for work,
    and a queued callback would take from an entity the node is about to destroy)."""
    pool = executor._executor  # rclpy keeps its thread pool private
    pool.shutdown(wait=False, cancel_futures=True)
    for thread in list(getattr(pool, '_threads', ())):
        thread.join(timeout=max(0.0, deadline - time.monotonic()))


def ignore_stop_signals() -> None:
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)


def exit_if_threads_remain() -> None:
    """Exit now (status 0) when a worker thread is still computing: its state is already saved
    or worthless, and the interpreter's teardown would abort under it."""
    if any(t.is_alive() for t in threading.enumerate() if t is not threading.main_thread()):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


def join_until(thread: threading.Thread, deadline: float) -> bool:
    """Wait for `thread` until `deadline` (time.monotonic()); True if it ended."""
    thread.join(timeout=max(0.0, deadline - time.monotonic()))
    return not thread.is_alive()
