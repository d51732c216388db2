"""Depth path benchmark: backends x precisions, conversions, packing, and the node end to end over DDS.

    make bench            (or: .venv/bin/python benchmarks/bench_depth.py --out bench_out/depth.json)

Prints tables and writes JSON. Timings are medians over repeated runs after warm-up.

Backends: torch fp32 / torch bf16 / ONNX Runtime fp32 / ONNX Runtime int8 (calibrated on the
first KITTI_tiny frames, as depth_node calibrates on its camera's), and fp16 on a GPU; PackNet01 and
PackNetSlim01 (full width, random weights with a 12 m depth prior: no trained one can be
downloaded here) and the shipped trained model, at 640x192 and 320x96, beside the original
implementation's forward in the same run when PACKNET_SFM_ROOT names a TRI-ML/packnet-sfm
checkout. Each fast path's accuracy against torch fp32 on KITTI_tiny (../shared/data): median
relative depth difference and the change of abs_rel against lidar.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from packnet_ros.data.kitti import KittiDrive
from packnet_ros.devices import resolve_device
from packnet_ros.geometry import depth_to_points
from packnet_ros.image import read_rgb
from packnet_ros.metrics import image_metrics, mean_metrics
from packnet_ros.model.checkpoints import load_checkpoint, save_checkpoint
from packnet_ros.networks import PackNet01, PackNetSlim01
from packnet_ros.ros.nodes.conversions import depth_to_image, image_to_rgb, points_to_cloud
from packnet_ros.serving.export import export_depth
from packnet_ros.serving.inference import DepthEstimator
from packnet_ros.serving.quantization import quantize_depth

REPO = Path(__file__).resolve().parents[1]


H, W = 192, 640
SIZES = ((192, 640), (96, 320))
MODELS = {'PackNet01': lambda: PackNet01(), 'PackNetSlim01-w0.25': lambda: PackNetSlim01(width=0.25)}
# Backend table: the original's two networks at full width, and the shipped trained model.
BACKEND_MODELS = ('PackNet01', 'PackNetSlim01', 'shipped')
KITTI_DRIVE = REPO.parent / 'shared' / 'data' / 'KITTI_tiny' / '2011_09_26' / '2011_09_26_drive_0023_sync'


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


def original_forward(name: str):
    """The original implementation's network (random weights: only its time is compared), or None."""
    root = os.environ.get('PACKNET_SFM_ROOT')
    if not root or name not in ('PackNet01', 'PackNetSlim01'):
        return None
    sys.path.insert(0, root)
    from packnet_sfm.networks.depth.PackNet01 import PackNet01 as Original01
    from packnet_sfm.networks.depth.PackNetSlim01 import PackNetSlim01 as OriginalSlim

    return Original01(version='1A') if name == 'PackNet01' else OriginalSlim(version='1A')


def backend_net(name: str, trained: dict[str, str]):
    """(network, what its weights are): the shipped trained model, a checkpoint given for the
    network, or a full-width network with random weights and a 12 m depth prior (no trained
    PackNet01 can be downloaded here)."""
    if name == 'shipped':
        net = load_checkpoint(REPO / 'models' / 'synthetic_scale_free.ckpt').networks()[0]
        return net, 'trained (PackNetSlim01 x0.125, models/synthetic_scale_free.ckpt)'
    if trained.get(name):
        net = load_checkpoint(trained[name]).networks()[0]
        if net.arch != name:
            raise SystemExit(f'{trained[name]} holds a {net.arch}, not a {name}')
        return net, f'trained ({Path(trained[name]).name})'
    torch.manual_seed(0)
    net = PackNet01() if name == 'PackNet01' else PackNetSlim01()
    net.initialize_depth(12.0)
    return net, 'random, 12 m prior'


def kitti_frames() -> list[tuple[np.ndarray, np.ndarray]]:
    if not KITTI_DRIVE.is_dir():
        return []
    drive = KittiDrive(KITTI_DRIVE)
    return [(read_rgb(drive.image_path(f)), drive.ground_truth(f, (375, 1242))) for f in drive.frames]


def paths(device: torch.device) -> list[tuple[str, str]]:
    """(backend, precision) pairs this machine can run."""
    if device.type == 'cuda':
        import onnxruntime as ort

        gpu_ort = 'CUDAExecutionProvider' in ort.get_available_providers()
        gpu = [('torch', 'fp32'), ('torch', 'fp16'), ('torch', 'bf16')]
        return gpu + ([('onnxruntime', 'fp32')] if gpu_ort else [])
    return [('torch', 'fp32'), ('torch', 'bf16'), ('onnxruntime', 'fp32'), ('onnxruntime', 'int8')]


CALIBRATION_FRAMES = 4  # KITTI_tiny's first frames; accuracy is measured on all 7


def onnx_model(net, name: str, h: int, w: int, precision: str, calibration: list[np.ndarray], tmp: Path) -> Path:
    """The exported model of `net` (int8: quantized on `calibration`, RGB uint8 frames)."""
    fp32 = tmp / f'{name}_{w}x{h}.onnx'
    if not fp32.is_file():
        export_depth(net, fp32, h, w)
    if precision != 'int8':
        return fp32
    # No tolerance here: int8's time does not depend on the weights, and random weights (which
    # int8 may well refuse) still time it; the accuracy columns say what it does to depth.
    return quantize_depth(fp32, tmp / f'{name}_{w}x{h}_int8.onnx', calibration, tolerance=math.inf).path


def bench_backends(device: torch.device, repeat: int, tmp: Path, trained: dict[str, str]) -> list[dict]:
    """Model latency of every backend x precision, the original beside, and accuracy vs torch fp32."""
    rows, frames = [], kitti_frames()
    sync = torch.cuda.synchronize if device.type == 'cuda' else None
    for name in BACKEND_MODELS:
        net, weights = backend_net(name, trained)
        for h, w in SIZES:
            slow = name != 'shipped' and device.type == 'cpu' and h == 192
            n = max(3, repeat // 5) if slow else repeat
            x = torch.rand(1, 3, h, w)
            original = original_forward(name)
            original_ms = None
            if original is not None:
                original = original.to(device).eval()
                xd = x.to(device)
                with torch.inference_mode():
                    original_ms = median_ms(lambda: original(xd), n, sync=sync)
                print(f'model  {name:20s} {w}x{h:<4d} original packnet-sfm torch fp32   {original_ms:9.1f} ms',
                      flush=True)
            reference = None
            for backend, precision in paths(device):
                if precision == 'int8' and not frames:
                    print(f'model  {name} int8 skipped: no calibration frames ({KITTI_DRIVE} absent)')
                    continue
                model = net
                if backend == 'onnxruntime':
                    model = onnx_model(net, name, h, w, precision, [rgb for rgb, _ in frames[:CALIBRATION_FRAMES]],
                                       tmp)
                est = DepthEstimator(model, h, w, device, precision=precision)
                ms = median_ms(lambda: est.infer_tensor(x), n, sync=sync)
                row = {'model': name, 'size': f'{w}x{h}', 'device': str(device), 'backend': backend,
                       'precision': precision, 'model_ms': ms, 'original_ms': original_ms,
                       'ratio_to_original': ms / original_ms if original_ms else None, 'weights': weights}
                if frames:
                    depth = [est.infer(rgb) for rgb, _ in frames]
                    metrics = mean_metrics([image_metrics(gt, d, min_depth=1e-3, max_depth=80.0)
                                            for (_, gt), d in zip(frames, depth)])
                    if reference is None:
                        reference = depth, metrics.metric.abs_rel, metrics.median_scaled.abs_rel
                    ref_depth, ref_abs_rel, ref_scaled = reference
                    row['median_rel_depth_diff'] = float(np.median(np.concatenate(
                        [np.abs(d - r).ravel() / r.ravel() for d, r in zip(depth, ref_depth)])))
                    row['abs_rel'] = metrics.metric.abs_rel
                    row['abs_rel_change_pct'] = 100 * (row['abs_rel'] - ref_abs_rel) / ref_abs_rel
                    row['abs_rel_median_scaled'] = metrics.median_scaled.abs_rel
                    row['abs_rel_median_scaled_change_pct'] = 100 * (row['abs_rel_median_scaled'] / ref_scaled - 1)
                rows.append(row)
                ratio = f'{row["ratio_to_original"]:.2f}x original' if original_ms else ''
                accuracy = (f'depth diff {100 * row["median_rel_depth_diff"]:.3f} %, abs_rel {row["abs_rel"]:.4f} '
                            f'({row["abs_rel_change_pct"]:+.2f} %), median-scaled {row["abs_rel_median_scaled"]:.4f} '
                            f'({row["abs_rel_median_scaled_change_pct"]:+.2f} %)' if frames else '')
                print(f'model  {name:20s} {w}x{h:<4d} {backend:11s} {precision:4s} {ms:9.1f} ms  {ratio:16s} '
                      f'{accuracy}', flush=True)
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


def bench_node(name: str, ckpt: Path, frames: int, tmp: Path, backend: str = 'auto', precision: str = 'fp32',
               width: int = W, height: int = H) -> dict:
    """Latency image publish -> depth received, one frame in flight; then throughput under a flood."""
    from builtin_interfaces.msg import Time
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CameraInfo, Image
    from std_msgs.msg import Header

    from packnet_ros.ros.node_process import ClientNode, start_node

    proc = start_node('depth_node', tmp / f'{name}_{backend}_{precision}.log', (REPO / 'config' / 'depth.yaml',),
                      {'checkpoint': str(ckpt), 'device': 'cpu', 'width': width, 'height': height,
                       'backend': backend, 'precision': precision})
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
    print(f'node   {name:22s} {backend} {precision} e2e p50 {result["e2e_latency_ms_p50"]:8.1f} ms  p95 '
          f'{result["e2e_latency_ms_p95"]:8.1f} ms  {fps:6.2f} fps  RSS {rss_before:.0f} -> {rss_after:.0f} MB',
          flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--out', default='bench_out/depth.json')
    parser.add_argument('--repeat', type=int, default=20)
    parser.add_argument('--frames', type=int, default=10, help='frames for node latency')
    parser.add_argument('--skip-node', action='store_true')
    parser.add_argument('--packnet01', help='trained PackNet01 checkpoint (e.g. the official one) for the backend '
                                            'table instead of random weights: accuracy then means something')
    parser.add_argument('--packnetslim01', help='the same for PackNetSlim01')
    args = parser.parse_args()

    device = resolve_device('auto')
    report = {'machine': {'platform': platform.platform(), 'cpu_threads': torch.get_num_threads(),
                          'torch': torch.__version__,
                          'gpu': torch.cuda.get_device_name() if device.type == 'cuda' else None},
              'input': f'{W}x{H}'}
    with tempfile.TemporaryDirectory() as tmp:
        trained = {'PackNet01': args.packnet01, 'PackNetSlim01': args.packnetslim01}
        report['models'] = bench_backends(torch.device('cpu'), args.repeat, Path(tmp), trained)
        if device.type == 'cuda':
            report['models'] += bench_backends(device, args.repeat * 5, Path(tmp), trained)
    report['conversions'] = bench_conversions(args.repeat * 5)
    if not args.skip_node:
        report['node'] = []
        with tempfile.TemporaryDirectory() as tmp:
            calibration = [rgb for rgb, _ in kitti_frames()[:CALIBRATION_FRAMES]]
            for name, build in MODELS.items():
                torch.manual_seed(0)
                net = build()
                ckpt = save_checkpoint(Path(tmp) / f'{name}.ckpt', net, input_size=(H, W))
                for backend, precision in paths(torch.device('cpu')):
                    if precision == 'int8' and not calibration:
                        continue
                    # int8: the node serves a model quantized beforehand (calibrated on KITTI_tiny),
                    # not calibrating on this benchmark's random frames.
                    served = onnx_model(net, name, H, W, precision, calibration, Path(tmp)) if precision == 'int8' \
                        else ckpt
                    node = bench_node(name, served, args.frames, Path(tmp), backend, precision)
                    # Overhead = what the node adds per frame (conversion, resize, packing, publish;
                    # measured per frame inside the node) + DDS transport both ways (mean e2e minus
                    # mean in-node latency). Differencing medians of e2e and model time instead is
                    # noisier than the overhead itself for a 4 s model.
                    model_ms = node['node_inference_ms_p50']
                    node['overhead_ms'] = node['in_node_overhead_ms_p50'] + node['transport_ms']
                    node['overhead_pct_of_model'] = 100 * node['overhead_ms'] / model_ms
                    report['node'].append({'model': name, 'backend': backend, 'precision': precision, **node})
                    print(f'node   {name:22s} {backend} {precision} overhead {node["overhead_ms"]:.1f} ms = '
                          f'{node["overhead_pct_of_model"]:.1f}% of model time (in node '
                          f'{node["in_node_overhead_ms_p50"]:.1f} ms, transport {node["transport_ms"]:.1f} ms)',
                          flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f'wrote {out}')


if __name__ == '__main__':
    main()
