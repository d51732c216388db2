"""A short `packnet-ros demo` run: real processes, a valid report, every artefact readable."""
import json
import math
from pathlib import Path

from packnet_ros.cli import main
from packnet_ros.data.bag import read_messages
from packnet_ros.ros.demo.report import read_ply


def test_short_demo_produces_a_valid_report(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = Path('demo_out')  # relative, as `make demo` passes it: the nodes must not put files elsewhere
    # Counted in steps and frames, with a cap far above what an idle machine needs (~30 s).
    assert main(['demo', '--out', str(out), '--steps', '3', '--window', '10', '--seconds', '900',
                 '--frames', '40']) == 0
    report = json.loads((out / 'report.json').read_text())
    for key in ('frames', 'duration_s', 'train_steps', 'depth_fps', 'latency_ms_p50', 'latency_ms_p95'):
        assert key in report and math.isfinite(report[key]), key
    assert report['frames'] > 20 and report['train_steps'] == 3 and report['stopped_by'] == 'steps'
    for part in ('metrics_first', 'metrics_last'):
        assert set(report[part]) >= {'abs_rel', 'abs_rel_median_scaled', 'scale_ratio'}
        assert all(math.isfinite(v) and v > 0 for v in report[part].values())
    assert report['latency_ms_p50'] <= report['latency_ms_p95']
    assert '| abs_rel (metric, no scaling) |' in (out / 'report.md').read_text()
    for name in ('curves.png', 'depth_first.png', 'depth_last.png', 'cloud.png'):
        assert (out / name).stat().st_size > 1000, name
    xyz, rgb = read_ply(out / 'cloud.ply')
    assert len(xyz) > 1000 and rgb.shape == (len(xyz), 3)
    topics = {topic for topic, *_ in read_messages(out / 'outputs')}
    assert {'/packnet/depth', '/packnet/points', '/packnet/depth/camera_info'} <= topics
    assert list((out / 'outputs').glob('*.mcap'))
    evaluation = json.loads((out / 'evaluation.json').read_text())
    assert len(evaluation['frames']) == report['frames']
