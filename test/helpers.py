"""Shared test helpers: ../shared fixtures and data, the deterministic weight fill, KITTI triplets.

Nodes are started and watched with packnet_ros.ros.node_process (as the demo and benchmarks do).
"""
from __future__ import annotations

import math
import os
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from rclpy.qos import ReliabilityPolicy

from packnet_ros.data.kitti import KittiDrive
from packnet_ros.geometry import scale_intrinsics
from packnet_ros.image import read_rgb
from packnet_ros.training import NEIGHBOURS, TripletAccumulator

REPO = Path(__file__).resolve().parents[1]
# Deadline for anything a process test waits on. Generous: on a busy machine (other jobs on
# every core) a node can take many times its idle time; a working node never comes close.
DEADLINE = 60.0
SHARED = Path(os.environ.get('PACKNET_SHARED', Path(__file__).resolve().parents[1].parent / 'shared'))
REFERENCE = SHARED / 'reference'
KITTI_TINY = SHARED / 'data' / 'KITTI_tiny'
KITTI_DRIVE = KITTI_TINY / '2011_09_26' / '2011_09_26_drive_0023_sync'
SHIPPED_MODEL = REPO / 'models' / 'synthetic_scale_free.ckpt'


def require(path: Path) -> Path:
    """Skip (or fail under CI=true) when a shared fixture is absent, e.g. in a user's clone."""
    if not path.exists():
        reason = f'shared fixture {path} is absent (tests read it from ../shared)'
        if os.environ.get('CI') == 'true':
            pytest.fail(reason)
        pytest.skip(reason)
    return path


def load_fixture(name: str):
    return torch.load(require(REFERENCE / name), weights_only=True)


def deterministic_fill(net: torch.nn.Module) -> torch.nn.Module:
    """Fill every floating tensor from a generator seeded by the CRC32 of its key."""
    with torch.no_grad():
        for name, t in sorted(net.state_dict().items()):
            if not t.is_floating_point():
                continue
            g = torch.Generator().manual_seed(zlib.crc32(name.encode()))
            z = torch.randn(t.shape, generator=g, dtype=torch.float64)
            if t.dim() > 1:
                v = z / math.sqrt(t[0].numel())
            elif name.endswith('running_var'):
                v = 1 + 0.1 * z.abs()
            elif name.endswith('weight'):
                v = 1 + 0.1 * z
            else:
                v = 0.1 * z
            t.copy_(v.to(t.dtype))
    return net


def kitti_triplets(height: int = 64, width: int = 192):
    """KITTI_tiny's triplets (speed from OXTS) at the given size, and the intrinsics at that size."""
    drive = KittiDrive(require(KITTI_DRIVE))
    acc = TripletAccumulator(height, width, NEIGHBOURS)
    for packet in drive.oxts():
        acc.add_speed(packet.stamp, packet.speed)
    triplets = [t for stamp, frame in zip(drive.stamps(), drive.frames)
                for t in acc.add_frame(stamp, read_rgb(drive.image_path(frame)))]
    K = scale_intrinsics(drive.intrinsics(), width / 1242, height / 375)
    return triplets, K


def wait_for_reliable_subscribers(client, topics: list[str], timeout: float = DEADLINE, settle: float = 1.0) -> None:
    """Until every topic has a subscriber, all of them reliable and all matched by this client's
    publishers, and that for `settle` seconds on end: a node at qos_reliability auto has
    followed our reliable publishers, so nothing we send now is lost to a switch (a replaced
    subscription can stay matched for a moment after it is gone)."""
    def reliable() -> bool:
        for topic in topics:
            infos = client.node.get_subscriptions_info_by_topic(topic)
            if not infos or any(i.qos_profile.reliability != ReliabilityPolicy.RELIABLE for i in infos):
                return False
            ours = [p for p in client.node.publishers if p.topic_name == topic]
            if any(p.get_subscription_count() != len(infos) for p in ours):
                return False
        return True
    since = []

    def settled() -> bool:
        if not reliable():
            since.clear()
            return False
        since.append(time.monotonic())
        return since[-1] - since[0] >= settle
    client.wait_for(settled, timeout, f'reliable, matched subscriptions on {topics}')


def parameters(client, node: str, names: list[str], timeout: float) -> dict:
    """Current values of `names` on `node` through its get_parameters service."""
    from rcl_interfaces.srv import GetParameters
    from rclpy.parameter import parameter_value_to_python
    service = client.node.create_client(GetParameters, f'{node}/get_parameters')
    assert service.wait_for_service(timeout_sec=timeout), f'{node}/get_parameters'
    future = service.call_async(GetParameters.Request(names=names))
    result = client.wait_for(future.result, timeout, f'{node} parameters')
    return {name: parameter_value_to_python(value) for name, value in zip(names, result.values)}


def synthetic_holdout(count: int = 8):
    """Held-out triplets of a synthetic drive seen by another camera than the shipped model's
    (70 deg, 1.3 m up), its intrinsics, and the factor that makes the shipped model's depth
    metric there (median ground truth / median prediction over the targets)."""
    from packnet_ros.data.synthetic import CameraRig, drive
    from packnet_ros.model.checkpoints import load_networks

    rig = CameraRig(192, 64, 70, 1.3)
    frames = list(drive(40, seed=7, camera=rig, start_time=3.0))
    accumulator, triplets = TripletAccumulator(64, 192, NEIGHBOURS), []
    for f in frames:
        accumulator.add_speed(f.stamp, f.speed)
        accumulator.add_speed(f.stamp + 0.05, f.speed)
        triplets += accumulator.add_frame(f.stamp, f.rgb)
    held = triplets[::4][:count]
    depth_net, _ = load_networks(SHIPPED_MODEL)
    depth_of = {f.stamp: f.depth for f in frames}
    ratios = []
    with torch.no_grad():
        for t in held:
            pred = (1 / depth_net.eval()(torch.from_numpy(t.images[1]).permute(2, 0, 1)[None] / 255.0))[0, 0].numpy()
            gt = depth_of[t.stamp]
            valid = np.isfinite(gt) & (gt < 80)
            ratios.append(float(np.median(gt[valid]) / np.median(pred[valid])))
    return held, rig.K, float(np.median(ratios))
