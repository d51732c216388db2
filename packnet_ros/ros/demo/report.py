"""The demo's report: metrics, curves, depth images, a PLY cloud and its rendering, markdown."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from packnet_ros.image import colorize_depth
from packnet_ros.metrics import DepthMetrics, Headline
from packnet_ros.ros.demo.recorder import RunRecord
from packnet_ros.ros.diagnostics_watcher import NodeStatus


def unpack_rgb(packed: np.ndarray) -> np.ndarray:
    """float32-packed 0x00RRGGBB (PointCloud2 'rgb') -> uint8 [...,3]."""
    bits = np.ascontiguousarray(packed, dtype=np.float32).view(np.uint32)
    return np.stack([(bits >> 16) & 255, (bits >> 8) & 255, bits & 255], -1).astype(np.uint8)


def valid_points(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Organised [h,w,4] (x, y, z, rgb) -> finite xyz [N,3] and colours [N,3]."""
    flat = points.reshape(-1, 4)
    keep = np.isfinite(flat[:, :3]).all(1)
    return flat[keep, :3], unpack_rgb(flat[keep, 3])


def write_ply(path: str | Path, xyz: np.ndarray, rgb: np.ndarray) -> None:
    """Binary little-endian PLY with float xyz and uchar colour (MeshLab, CloudCompare, Open3D)."""
    vertex = np.empty(len(xyz), dtype=[('x', '<f4'), ('y', '<f4'), ('z', '<f4'),
                                       ('red', 'u1'), ('green', 'u1'), ('blue', 'u1')])
    vertex['x'], vertex['y'], vertex['z'] = xyz.T
    vertex['red'], vertex['green'], vertex['blue'] = rgb.T
    header = ('ply\nformat binary_little_endian 1.0\n'
              f'element vertex {len(xyz)}\n'
              'property float x\nproperty float y\nproperty float z\n'
              'property uchar red\nproperty uchar green\nproperty uchar blue\nend_header\n')
    with open(path, 'wb') as f:
        f.write(header.encode('ascii'))
        f.write(vertex.tobytes())


def read_ply(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read back what write_ply wrote."""
    data = Path(path).read_bytes()
    end = data.index(b'end_header\n') + len(b'end_header\n')
    count = int(next(line.split()[2] for line in data[:end].decode().splitlines() if line.startswith('element')))
    vertex = np.frombuffer(data[end:], count=count, dtype=[('x', '<f4'), ('y', '<f4'), ('z', '<f4'),
                                                           ('red', 'u1'), ('green', 'u1'), ('blue', 'u1')])
    return (np.stack([vertex['x'], vertex['y'], vertex['z']], 1),
            np.stack([vertex['red'], vertex['green'], vertex['blue']], 1))


def render_cloud(xyz: np.ndarray, rgb: np.ndarray, width: int = 800, height: int = 450,
                 point_size: int = 2) -> np.ndarray:
    """Render a coloured cloud (optical frame: x right, y down, z forward) from a virtual
    camera above, behind and to the right of the sensor, framed on the cloud's median and
    spread; painter's algorithm, far to near. RGB uint8."""
    target = np.median(xyz, axis=0)
    spread = float(np.percentile(xyz[:, 2], 90) - np.percentile(xyz[:, 2], 10)) + 1.0
    eye_v = np.array([0.35 * spread, -0.45 * spread, target[2] - 1.1 * spread])
    forward = (target - eye_v) / np.linalg.norm(target - eye_v)
    right = np.cross(forward, [0.0, -1.0, 0.0])  # world 'up' is -y in the optical frame
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    R = np.stack([right, down, forward])
    cam = (xyz - eye_v) @ R.T
    front = cam[:, 2] > 0.5
    cam, colours = cam[front], rgb[front]
    f = 0.9 * width
    u = (f * cam[:, 0] / cam[:, 2] + width / 2).astype(int)
    v = (f * cam[:, 1] / cam[:, 2] + height / 2).astype(int)
    inside = (u >= 0) & (u < width - point_size) & (v >= 0) & (v < height - point_size)
    order = np.argsort(-cam[inside, 2])
    u, v, colours = u[inside][order], v[inside][order], colours[inside][order]
    image = np.full((height, width, 3), 24, np.uint8)
    for du in range(point_size):
        for dv in range(point_size):
            image[v + dv, u + du] = colours
    return image


def plot_curves(path: str | Path, frames: list[dict], training: list[NodeStatus], title: str) -> None:
    """Per-frame metrics (rolling mean) and training curves over time, one PNG."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    def rolling(values, n=10):
        values = np.asarray(values, float)
        return np.array([values[max(0, i - n + 1):i + 1].mean() for i in range(len(values))])

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    idx = np.arange(len(frames))
    if frames:
        axes[0].plot(idx, rolling([f['metric']['abs_rel'] for f in frames]), label='abs_rel (metric)')
        axes[0].plot(idx, rolling([f['median_scaled']['abs_rel'] for f in frames]), label='abs_rel (median-scaled)')
        axes[1].plot(idx, rolling([f['scale_ratio'] for f in frames]), color='tab:green')
        axes[1].axhline(1.0, color='gray', ls='--')
    axes[0].set(xlabel='evaluated frame', ylabel='abs_rel (rolling mean of 10)', title='depth error')
    axes[0].legend()
    axes[1].set(xlabel='evaluated frame', ylabel='median(gt) / median(pred)', title='scale ratio (1 = metric)',
                yscale='log')
    if training:
        t0 = training[0].received
        times = [status.received - t0 for status in training]
        for key, label in (('loss_ema', 'total (EMA)'), ('loss_photometric', 'photometric'),
                           ('loss_velocity', 'velocity')):
            values = [status.number(key) for status in training]
            axes[2].plot(times, values, label=label)
    axes[2].set(xlabel='seconds', ylabel='loss', title='online training', yscale='log')
    axes[2].legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def side_by_side(*images: np.ndarray) -> np.ndarray:
    """Stack RGB images vertically at a common width."""
    width = max(im.shape[1] for im in images)
    rows = [cv2.resize(im, (width, round(im.shape[0] * width / im.shape[1])), interpolation=cv2.INTER_NEAREST)
            for im in images]
    return np.concatenate(rows, 0)


METRIC_TOLERANCE = 0.10  # a depth whose scale is off by more is not called metric


def verdict(first: Headline, last: Headline) -> str:
    """One line a person can act on: 'metric' only when the last frames' scale is within
    METRIC_TOLERANCE of 1; the structure (median-scaled abs_rel) judged on its own."""
    scale = last.scale_ratio
    ratio = last.abs_rel / last.abs_rel_median_scaled
    if abs(scale - 1) <= METRIC_TOLERANCE:
        scale_words = (f'metric: scale {scale:.3f} (within {METRIC_TOLERANCE:.0%}), '
                       f'metric abs_rel {ratio:.2f}x the median-scaled')
    else:
        closer = abs(np.log(scale)) < abs(np.log(first.scale_ratio))
        scale_words = (f'NOT metric: scale {scale:.3f} (off by {abs(scale - 1):.0%}; '
                       f'{"moved toward 1" if closer else "did NOT move toward 1"} from {first.scale_ratio:.3f})')
    structure = last.abs_rel_median_scaled - first.abs_rel_median_scaled
    structure_words = ('structure improved' if structure < 0 else 'structure did NOT improve') + \
        f' (median-scaled abs_rel {first.abs_rel_median_scaled:.3f} -> {last.abs_rel_median_scaled:.3f})'
    return f'{scale_words}; {structure_words}'


@dataclass(frozen=True)
class DemoSetup:
    """What ran: the source drive or bag, the starting model and the budget."""

    source: str
    init: str
    model: str
    input_size: str
    steps_budget: int
    seconds_cap: float
    stopped_by: str


@dataclass(frozen=True)
class DemoReport:
    """What a demo run measured; report.json holds to_dict()."""

    setup: DemoSetup
    frames: int
    duration_s: float
    train_steps: int
    checkpoints_announced: int
    first: Headline  # the first evaluation window's metrics: the starting model
    last: Headline  # the last window's: the trained model
    overall: Headline
    depth_fps: float
    latency_ms_p50: float
    latency_ms_p95: float

    def to_dict(self) -> dict:
        """report.json's flat layout."""
        return {**asdict(self.setup), 'frames': self.frames, 'duration_s': self.duration_s,
                'train_steps': self.train_steps, 'checkpoints_announced': self.checkpoints_announced,
                'metrics_first': self.first.to_dict(), 'metrics_last': self.last.to_dict(),
                'metrics_all': self.overall.to_dict(), 'depth_fps': self.depth_fps,
                'latency_ms_p50': self.latency_ms_p50, 'latency_ms_p95': self.latency_ms_p95}


def markdown(report: DemoReport) -> str:
    first, last, setup = report.first, report.last, report.setup
    rows = [('abs_rel (metric, no scaling)', 'abs_rel'), ('abs_rel (median-scaled)', 'abs_rel_median_scaled'),
            ('a1 (metric)', 'a1'), ('scale ratio median(gt)/median(pred)', 'scale_ratio')]
    lines = [
        '# packnet_ros demo report', '',
        f'Source: `{setup.source}`; online training from {setup.init} ({setup.model}, input '
        f'{setup.input_size}): {report.train_steps} of {setup.steps_budget} steps in '
        f'{report.duration_s:.0f} s (stopped by {setup.stopped_by}; cap {setup.seconds_cap:.0f} s).', '',
        '| | first frames | last frames |', '| --- | --- | --- |',
        *[f'| {name} | {getattr(first, key):.3f} | {getattr(last, key):.3f} |' for name, key in rows],
        '', f'- evaluated frames: {report.frames}; training steps: {report.train_steps}; '
            f'checkpoints announced: {report.checkpoints_announced}',
        f'- depth node: {report.depth_fps:.1f} frames/s, latency p50 {report.latency_ms_p50:.0f} ms, '
        f'p95 {report.latency_ms_p95:.0f} ms (image received -> depth received)',
        f'- verdict: {verdict(first, last)}',
        '', '![curves](curves.png)', '', '![first and last depth](depth_first.png) ![](depth_last.png)', '',
        '![point cloud](cloud.png)', '',
        'Files: `report.json`, `curves.png`, `depth_*.png`, `cloud.ply`, `cloud.png`, '
        '`outputs/` (rosbag2 with an MCAP file: depth, camera_info, points; open it in Foxglove or '
        '`ros2 bag play`), `evaluation.json` (every evaluated frame).',
    ]
    return '\n'.join(lines) + '\n'


def headline(block: dict) -> Headline:
    """The headline numbers of a metrics block read from the evaluator's JSON."""
    return DepthMetrics.from_dict(block).summary()


def write_report(out: Path, record: RunRecord, duration: float, setup: DemoSetup) -> DemoReport:
    """report.json/md, curves, depth images and the cloud from a finished run. The
    evaluator's evaluation.json must be in `out`."""
    evaluation = json.loads((out / 'evaluation.json').read_text())
    summary = evaluation['summary']
    if not summary.get('frames'):
        raise RuntimeError('no frame was evaluated; see the logs')
    latencies = record.latencies_ms or [float('nan')]
    report = DemoReport(setup, frames=summary['frames'], duration_s=duration, train_steps=record.steps(),
                        checkpoints_announced=len(record.checkpoints), first=headline(summary['first']),
                        last=headline(summary['last']), overall=headline(summary['all']),
                        depth_fps=record.depth_frames / duration, latency_ms_p50=float(np.median(latencies)),
                        latency_ms_p95=float(np.percentile(latencies, 95)))
    (out / 'report.json').write_text(json.dumps(report.to_dict(), indent=2))
    plot_curves(out / 'curves.png', evaluation['frames'], record.training,
                f'packnet_ros online training: {setup.source[:60]}')
    for name, pair in (('depth_first', record.first_depth), ('depth_last', record.last_depth)):
        if pair is not None:
            depth, camera = pair
            panels = [colorize_depth(depth)] if camera is None else [camera, colorize_depth(depth)]
            cv2.imwrite(str(out / f'{name}.png'), cv2.cvtColor(side_by_side(*panels), cv2.COLOR_RGB2BGR))
    if record.last_points is not None:
        xyz, rgb = valid_points(record.last_points)
        write_ply(out / 'cloud.ply', xyz, rgb)
        cv2.imwrite(str(out / 'cloud.png'), cv2.cvtColor(render_cloud(xyz, rgb), cv2.COLOR_RGB2BGR))
    (out / 'report.md').write_text(markdown(report))
    return report
