"""Demo report artefacts: PLY round trip, colour unpacking, cloud rendering, markdown."""
from dataclasses import replace

import numpy as np

from packnet_ros.geometry import depth_to_points
from packnet_ros.metrics import Headline
from packnet_ros.ros.demo.report import (
    DemoReport,
    DemoSetup,
    markdown,
    read_ply,
    render_cloud,
    unpack_rgb,
    valid_points,
    write_ply,
)


def test_ply_round_trip_keeps_points_and_colours(tmp_path):
    rng = np.random.default_rng(0)
    depth = rng.uniform(2, 30, (12, 16)).astype(np.float32)
    depth[3, 4] = np.nan
    rgb = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
    K = np.array([[20.0, 0, 7.5], [0, 20.0, 5.5], [0, 0, 1]])
    xyz, colours = valid_points(depth_to_points(depth, rgb, K))
    assert len(xyz) == 12 * 16 - 1
    np.testing.assert_array_equal(colours[0], rgb[0, 0])
    write_ply(tmp_path / 'c.ply', xyz, colours)
    assert (tmp_path / 'c.ply').read_bytes().startswith(b'ply\nformat binary_little_endian 1.0\nelement vertex 191\n')
    back_xyz, back_rgb = read_ply(tmp_path / 'c.ply')
    np.testing.assert_array_equal(back_xyz, xyz)
    np.testing.assert_array_equal(back_rgb, colours)


def test_unpack_rgb_inverts_the_pcl_packing():
    packed = np.array([(200 << 16) | (100 << 8) | 50], dtype=np.uint32).view(np.float32)
    assert unpack_rgb(packed).tolist() == [[200, 100, 50]]


def test_render_draws_the_cloud_in_its_colours():
    rng = np.random.default_rng(1)
    xyz = np.stack([rng.uniform(-5, 5, 5000), rng.uniform(-1, 1.5, 5000), rng.uniform(5, 40, 5000)], 1)
    red = np.tile([[255, 0, 0]], (5000, 1)).astype(np.uint8)
    image = render_cloud(xyz, red)
    drawn = (image == [255, 0, 0]).all(-1)
    assert image.shape == (450, 800, 3) and 0.01 < drawn.mean() < 0.9


def test_markdown_says_metric_only_within_ten_percent():
    metrics = Headline(abs_rel=0.9, abs_rel_median_scaled=0.5, a1=0.1, scale_ratio=10.0)
    better = Headline(abs_rel=0.5, abs_rel_median_scaled=0.3, a1=0.4, scale_ratio=1.59)
    setup = DemoSetup(source='s', init='scratch', model='m', input_size='192x64', steps_budget=5, seconds_cap=300,
                      stopped_by='steps')
    report = DemoReport(setup, frames=10, duration_s=60, train_steps=5, checkpoints_announced=1, first=metrics,
                        last=better, overall=better, depth_fps=5.0, latency_ms_p50=50, latency_ms_p95=60)
    text = markdown(report)
    assert '| 0.900 | 0.500 |' in text
    assert 'NOT metric: scale 1.590 (off by 59%; moved toward 1' in text and 'structure improved' in text
    report = replace(report, last=replace(better, scale_ratio=0.92, abs_rel=0.33))
    assert 'metric: scale 0.920 (within 10%), metric abs_rel 1.10x' in markdown(report)
    assert 'NOT metric' not in markdown(report)
    report = replace(report, last=replace(metrics, scale_ratio=1.105))
    assert 'NOT metric: scale 1.105' in markdown(report) and 'structure did NOT improve' in markdown(report)


def test_report_json_keeps_its_flat_layout():
    headline = Headline(abs_rel=0.5, abs_rel_median_scaled=0.3, a1=0.4, scale_ratio=1.2)
    setup = DemoSetup(source='s', init='scratch', model='m', input_size='192x64', steps_budget=5, seconds_cap=300,
                      stopped_by='steps')
    values = DemoReport(setup, frames=10, duration_s=60, train_steps=5, checkpoints_announced=1, first=headline,
                        last=headline, overall=headline, depth_fps=5.0, latency_ms_p50=50,
                        latency_ms_p95=60).to_dict()
    assert values['source'] == 's' and values['stopped_by'] == 'steps' and values['train_steps'] == 5
    assert values['metrics_last'] == {'abs_rel': 0.5, 'abs_rel_median_scaled': 0.3, 'a1': 0.4, 'scale_ratio': 1.2}
    assert set(values) >= {'metrics_first', 'metrics_all', 'latency_ms_p95', 'depth_fps', 'checkpoints_announced'}
