"""depth_evaluator: pair predicted depth with ground truth by stamp; running KITTI metrics.

Publishes the running metrics (all frames, and the first and latest windows, so learning
shows as a change) on /diagnostics, and writes every per-frame result plus the summary to
JSON at shutdown. A malformed message (wrong encoding, truncated data) is refused on arrival,
logged, counted as `rejected` and raises the status level; the node goes on with the next.
"""
from __future__ import annotations

import json
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np
from rclpy.node import Node
from sensor_msgs.msg import Image

from packnet_ros.metrics import DepthMetrics, image_metrics, mean_metrics
from packnet_ros.ros.nodes.conversions import ConversionError, image_to_depth
from packnet_ros.ros.nodes.diagnostics import Health, StatusPublisher
from packnet_ros.ros.nodes.inputs import INPUT_PARAMETERS, InputSubscription
from packnet_ros.ros.nodes.parameters import Param, declare_parameters
from packnet_ros.ros.nodes.runner import run
from packnet_ros.ros.resources import output_dir

PARAMETERS = {
    'output_json': Param('', 'file written at shutdown with per-frame metrics and the summary; empty = none; '
                             'a relative path is under $ROS_HOME/packnet_ros'),
    'min_depth': Param(1e-3, 'metres; ground truth outside [min_depth, max_depth] is ignored', low=0.0),
    'max_depth': Param(80.0, 'metres', low=0.0),
    'crop': Param('garg', '"garg" (KITTI evaluation crop) or "none"', choices=('garg', 'none')),
    'window': Param(20, 'frames in the first/latest windows', low=1),
    'max_pending': Param(50, 'unpaired messages kept per topic (and the input queue depth)', low=1),
    'qos_reliability': INPUT_PARAMETERS['qos_reliability'],
}
WARN_PERIOD_S = 5.0


class DepthEvaluator(Node):
    def __init__(self):
        super().__init__('depth_evaluator')
        p = self.params = declare_parameters(self, PARAMETERS)
        self.pending = {'depth': OrderedDict(), 'depth_gt': OrderedDict()}
        self.records: list[tuple[float, DepthMetrics]] = []  # (stamp, metrics)
        self.rejected = 0
        self.health = Health()
        # one logger per topic, so that the warnings about one throttle none about the other
        self.topic_logs = {topic: self.get_logger().get_child(topic) for topic in self.pending}
        self.lock = threading.Lock()
        # Evaluating a pair takes longer than a burst of messages takes to arrive: queue deeply.
        for topic in ('depth', 'depth_gt'):
            InputSubscription(self, Image, topic, lambda m, t=topic: self.on_depth(t, m), p['qos_reliability'],
                              p['max_pending'])
        self.status = StatusPublisher(self, 'depth metrics')
        self.create_timer(1.0, self.publish_diagnostics)

    def on_depth(self, kind: str, msg: Image) -> None:
        try:
            depth = image_to_depth(msg)
        except ConversionError as exc:
            self.rejected += 1
            self.health.error(f'{kind}: {exc}')
            self.topic_logs[kind].warn(f'dropping message: {exc}', throttle_duration_sec=WARN_PERIOD_S)
            return
        key = (msg.header.stamp.sec, msg.header.stamp.nanosec)
        other = self.pending['depth_gt' if kind == 'depth' else 'depth']
        if key in other:
            pair = {kind: depth, ('depth_gt' if kind == 'depth' else 'depth'): other.pop(key)}
            self.evaluate(key, pair['depth'], pair['depth_gt'])
            return
        mine = self.pending[kind]
        mine[key] = depth
        while len(mine) > self.params['max_pending']:
            mine.popitem(last=False)

    def evaluate(self, key: tuple[int, int], pred: np.ndarray, gt: np.ndarray) -> None:
        self.health.success()
        p = self.params
        result = image_metrics(gt, pred, p['min_depth'], p['max_depth'], None if p['crop'] == 'none' else 'garg')
        if result is None:
            return
        with self.lock:
            self.records.append((key[0] + key[1] * 1e-9, result))

    def summary(self) -> dict:
        with self.lock:
            records = [metrics for _, metrics in self.records]
        if not records:
            return {'frames': 0}
        n = self.params['window']
        return {'frames': len(records), **{part: mean_metrics(chosen).to_dict() for part, chosen in
                                          (('all', records), ('first', records[:n]), ('last', records[-n:]))}}

    def publish_diagnostics(self) -> None:
        s = self.summary()
        values = {'frames': str(s['frames']), 'rejected': str(self.rejected)}
        for part in ('all', 'first', 'last'):
            if part in s:
                values[f'{part}_abs_rel'] = f'{s[part]["metric"]["abs_rel"]:.4f}'
                values[f'{part}_abs_rel_median_scaled'] = f'{s[part]["median_scaled"]["abs_rel"]:.4f}'
                values[f'{part}_a1'] = f'{s[part]["metric"]["a1"]:.4f}'
                values[f'{part}_scale_ratio'] = f'{s[part]["scale_ratio"]:.4f}'
        self.status.report(f'{s["frames"]} frames evaluated', values, self.health)

    def close(self, deadline: float) -> None:
        self.write_json()

    def write_json(self) -> None:
        if not self.params['output_json']:
            return
        path = output_dir() / Path(self.params['output_json']).expanduser()  # an absolute path stays as it is
        path.parent.mkdir(parents=True, exist_ok=True)
        with self.lock:
            records = [{'stamp': stamp, **metrics.to_dict()} for stamp, metrics in self.records]
        tmp = path.with_suffix(path.suffix + '.tmp')
        tmp.write_text(json.dumps({'summary': self.summary(), 'frames': records}, indent=1))
        tmp.replace(path)
        self.get_logger().info(f'wrote {len(records)} evaluated frames to {path}')


def main(args=None):
    run(DepthEvaluator, args)


if __name__ == '__main__':
    main()
