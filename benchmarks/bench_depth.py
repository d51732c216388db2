"""Depth path benchmark: model, conversions, packing, and the node end to end over DDS.

    make bench            (or: .venv/bin/python benchmarks/bench_depth.py --out bench_out/depth.json)

Prints a table and writes JSON. Timings are medians over repeated runs after warm-up.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from packnet_ros.checkpoints import save_checkpoint
from packnet_ros.inference import DepthEstimator, resolve_device
from packnet_ros.networks import PackNet01, PackNetSlim01
from packnet_ros.nodes.conversions import depth_to_image, depth_to_points, image_to_rgb, points_to_cloud

REPO = Path(__file__).resolve().parents[1]


H, W = 192, 640
MODELS = {'PackNet01': lambda: PackNet01(), 'PackNetSlim01-w0.25': lambda: PackNetSlim01(width=0.25)}


def median_ms(fn, repeat: int, warmup: int = 2, sync=None) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        if sync:
            sync()
        t0 = time.perf_counter()
        fn()
        if sync:
            sync()
        times.append(1000 * (time.perf_counter() - t0))
    return statistics.median(times)


def bench_models(device: torch.device, precisions: list[str], repeat: int) -> list[dict]:
    rows = []
    sync = torch.cuda.synchronize if device.type == 'cuda' else None
    for name, build in MODELS.items():
        for precision in precisions:
            est = DepthEstimator(build(), H, W, device, precision=precision)
            x = torch.rand(1, 3, H, W)
            if device.type == 'cuda':
                x = x.pin_memory()
            ms = median_ms(lambda: est.infer_tensor(x), repeat if name != 'PackNet01' or device.type == 'cuda'
                           else max(3, repeat // 4), sync=sync)
            rows.append({'model': name, 'device': str(device), 'precision': precision, 'model_ms': ms})
            print(f'model  {name:22s} {device.type:5s} {precision:5s} {ms:9.2f} ms', flush=True)
    return rows


def bench_conversions(repeat: int) -> dict:
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header
    rng = np.random.default_rng(0)
    rgb_in = rng.integers(0, 256, (375, 1242, 3), dtype=np.uint8)
    msgs = {enc: Image(height=375, width=1242, encoding=enc, step=1242 * 3, data=data.tobytes())
            for enc, data in (('rgb8', rgb_in), ('bgr8', rgb_in[..., ::-1].copy()))}
    depth = rng.uniform(1, 80, (H, W)).astype(np.float32)
    rgb = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    K = np.array([[371.8, 0, 314.0], [0, 368.9, 88.0], [0, 0, 1]])
    header = Header(frame_id='cam')
    result = {
        'image_to_rgb_rgb8_1242x375_ms': median_ms(lambda: image_to_rgb(msgs['rgb8']), repeat),
        'image_to_rgb_bgr8_1242x375_ms': median_ms(lambda: image_to_rgb(msgs['bgr8']), repeat),
        'depth_image_pack_640x192_ms': median_ms(lambda: depth_to_image(depth, header), repeat),
        'pointcloud_xyzrgb_pack_640x192_ms': median_ms(
            lambda: points_to_cloud(depth_to_points(depth, rgb, K), header), repeat),
    }
    for k, v in result.items():
        print(f'conv   {k:40s} {v:8.3f} ms', flush=True)
    return result


def rss_mb(pid: int) -> float:
    """Resident memory of a process (Linux), to show that a flood of input does not pile up."""
    for line in Path(f'/proc/{pid}/status').read_text().splitlines():
        if line.startswith('VmRSS:'):
            return int(line.split()[1]) / 1024
    return float('nan')


def bench_node(name: str, ckpt: Path, frames: int, tmp: Path) -> dict:
    """Latency image publish -> depth received, one frame in flight; then throughput under a flood."""
    from builtin_interfaces.msg import Time
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CameraInfo, Image
    from std_msgs.msg import Header

    from packnet_ros.node_process import ClientNode, start_node

    proc = start_node('depth_node', tmp / f'{name}.log', (REPO / 'config' / 'depth.yaml',),
                      {'checkpoint': str(ckpt), 'device': 'cpu', 'width': W, 'height': H})
    probe = ClientNode('bench')
    received, diags = {}, []
    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    pub = probe.node.create_publisher(Image, 'image', qos)
    pub_info = probe.node.create_publisher(CameraInfo, 'camera_info', qos)
    probe.node.create_subscription(Image, 'depth', lambda m: received.__setitem__(
        m.header.stamp.nanosec, time.perf_counter()), qos)
    probe.node.create_subscription(DiagnosticArray, '/diagnostics', diags.append, 10)
    try:
        probe.wait_for(lambda: any(i.qos_profile.reliability == ReliabilityPolicy.RELIABLE
                                   for i in probe.node.get_subscriptions_info_by_topic('/image')), 120,
                       'depth_node to subscribe reliably (qos_reliability auto)')
        info = CameraInfo(width=1242, height=375)
        info.k = [721.5, 0, 609.6, 0, 721.5, 172.9, 0, 0, 1]
        pub_info.publish(info)
        rgb = np.random.default_rng(0).integers(0, 256, (375, 1242, 3), dtype=np.uint8).tobytes()

        def send(i):
            pub.publish(Image(header=Header(stamp=Time(sec=1, nanosec=i)), height=375, width=1242,
                              encoding='rgb8', step=1242 * 3, data=rgb))
            return time.perf_counter()

        every = []  # all frames, as the node's own statistics hold them
        for i in range(frames + 2):
            sent = send(i)
            probe.wait_for(lambda: i in received, 60, f'depth {i}')
            every.append(1000 * (received[i] - sent))
        latencies = every[2:]  # the latency figures skip the first two frames
        time.sleep(1.5)  # one more diagnostics period: the node's own inference time for these frames
        node_values = {kv.key: kv.value for kv in diags[-1].status[0].values}
        inference_ms = float(node_values['inference_ms_p50'])
        in_node_overhead_ms = float(node_values['overhead_ms_p50'])
        node_latency_ms = float(node_values['latency_ms_mean'])
        rss_before = rss_mb(proc.popen.pid)
        start, count0 = time.perf_counter(), len(received)
        i = 10_000
        while time.perf_counter() - start < max(5.0, 3 * statistics.median(latencies) / 1000):
            send(i)
            i += 1
            time.sleep(0.01)  # ~100 Hz offered
        time.sleep(2 * statistics.median(latencies) / 1000)
        fps = (len(received) - count0) / (time.perf_counter() - start)
        rss_after = rss_mb(proc.popen.pid)
    finally:
        probe.close()
        proc.stop()
    result = {'e2e_latency_ms_p50': statistics.median(latencies), 'node_inference_ms_p50': inference_ms,
              'in_node_overhead_ms_p50': in_node_overhead_ms,
              'transport_ms': statistics.mean(every) - node_latency_ms,
              'e2e_latency_ms_p95': float(np.percentile(latencies, 95)),
              'throughput_fps_under_100hz_input': fps, 'offered_frames': i - 10_000,
              'rss_mb_before_flood': rss_before, 'rss_mb_after_flood': rss_after}
    print(f'node   {name:22s} e2e p50 {result["e2e_latency_ms_p50"]:8.1f} ms  p95 '
          f'{result["e2e_latency_ms_p95"]:8.1f} ms  {fps:6.2f} fps  RSS {rss_before:.0f} -> {rss_after:.0f} MB',
          flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--out', default='bench_out/depth.json')
    parser.add_argument('--repeat', type=int, default=20)
    parser.add_argument('--frames', type=int, default=10, help='frames for node latency')
    parser.add_argument('--skip-node', action='store_true')
    args = parser.parse_args()

    device = resolve_device('auto')
    precisions = ['fp32'] + (['fp16', 'bf16'] if device.type == 'cuda' else [])
    report = {'machine': {'platform': platform.platform(), 'cpu_threads': torch.get_num_threads(),
                          'torch': torch.__version__,
                          'gpu': torch.cuda.get_device_name() if device.type == 'cuda' else None},
              'input': f'{W}x{H}'}
    report['models'] = bench_models(torch.device('cpu'), ['fp32'], args.repeat)
    if device.type == 'cuda':
        report['models'] += bench_models(device, precisions, args.repeat * 5)
    report['conversions'] = bench_conversions(args.repeat * 5)
    if not args.skip_node:
        report['node'] = {}
        with tempfile.TemporaryDirectory() as tmp:
            for name, build in MODELS.items():
                torch.manual_seed(0)
                ckpt = save_checkpoint(Path(tmp) / f'{name}.ckpt', build(), input_size=(H, W))
                node = bench_node(name, ckpt, args.frames, Path(tmp))
                # Overhead = what the node adds per frame (conversion, resize, packing, publish;
                # measured per frame inside the node) + DDS transport both ways (mean e2e minus
                # mean in-node latency). Differencing medians of e2e and model time instead is
                # noisier than the overhead itself for a 4 s model.
                model_ms = node['node_inference_ms_p50']
                node['overhead_ms'] = node['in_node_overhead_ms_p50'] + node['transport_ms']
                node['overhead_pct_of_model'] = 100 * node['overhead_ms'] / model_ms
                report['node'][name] = node
                print(f'node   {name:22s} overhead {node["overhead_ms"]:.1f} ms = '
                      f'{node["overhead_pct_of_model"]:.1f}% of model time (in node '
                      f'{node["in_node_overhead_ms_p50"]:.1f} ms, transport {node["transport_ms"]:.1f} ms)',
                      flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f'wrote {out}')


if __name__ == '__main__':
    main()
