"""training_node: fine-tune depth on the robot from frame triplets and measured speed.

Callbacks turn messages into plain numbers for a TripletStream (camera_info, image, speed ->
triplets, by the rules offline training shares) and hand its triplets to the training
session; a trainer thread steps the session and announces on `checkpoint` the checkpoints
it validates, for the depth node to hot-reload. The policy (resume, rollback, saving, validation) lives in
packnet_ros.training.session.
"""
from __future__ import annotations

import math
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import torch
from geometry_msgs.msg import TwistStamped, TwistWithCovarianceStamped
from nav_msgs.msg import Odometry
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import String

from packnet_ros.data.camera_stream import TripletStream
from packnet_ros.data.decode import speed_of, stamp_seconds
from packnet_ros.data.stream import Skip, TripletRules
from packnet_ros.model.checkpoints import CheckpointError
from packnet_ros.ros.nodes.conversions import calibration_of, to_rgb
from packnet_ros.ros.nodes.diagnostics import Health, StatusPublisher
from packnet_ros.ros.nodes.inputs import INPUT_PARAMETERS, subscribe_image, subscribe_input
from packnet_ros.ros.nodes.parameters import Param, declare_parameters, params_of
from packnet_ros.ros.nodes.runner import join_until, run
from packnet_ros.ros.resources import output_dir
from packnet_ros.training import SessionConfig, TrainingSession

WARN_PERIOD_S = 5.0
TRAINER_RETRY_S = 1.0
TWIST_TYPES = {'TwistStamped': TwistStamped, 'TwistWithCovarianceStamped': TwistWithCovarianceStamped}

# The recipe's options (defaults, descriptions, ranges) come from the core's dataclasses, in
# the order users meet them; the rest is this node's own.
PARAMETERS = {
    'checkpoint_dir': Param('', 'directory for checkpoints; training resumes from the newest valid one. Empty = '
                                '$ROS_HOME/packnet_ros/checkpoints (ROS_HOME defaults to ~/.ros); a relative path is '
                                'under $ROS_HOME/packnet_ros'),
    'input_rectified': Param(False, 'the image is rectified already (e.g. image_proc\'s image_rect): use '
                                    'camera_info\'s P and do not rectify, whatever its distortion'),
    'threads': Param(0, 'CPU threads for torch in this process; 0 = torch default (all cores)', low=0),
    **params_of(SessionConfig),  # with TrainerConfig's options it inherits
    'velocity_source': Param('odom', '"odom" (nav_msgs/Odometry) or "twist"', choices=('odom', 'twist')),
    'twist_type': Param('TwistStamped', 'message type on "twist", for velocity_source=twist',
                        choices=tuple(TWIST_TYPES)),
    **params_of(TripletRules),
    **INPUT_PARAMETERS,
    'qos_depth': Param(10, 'input queue depth (per topic: qos_overrides.<topic>.subscription.depth)', low=1,
                       high=1000),
}
# The stream's input refusals, always on /diagnostics and under these names (rule skips are
# reported as skipped_<reason> once they happen).
INPUT_DIAGNOSTICS = {Skip.NO_CAMERA_INFO: 'skipped_no_camera_info', Skip.BAD_IMAGE: 'bad_images',
                     Skip.CAMERA_INFO_REJECTED: 'camera_info_rejected'}


@dataclass
class Counters:
    frames: int = 0
    trainer_errors: int = 0  # raised out of a step: the trainer thread logged it and went on


class TrainingNode(Node):
    def __init__(self, **kwargs):
        super().__init__('training_node', **kwargs)
        p = self.params = declare_parameters(self, PARAMETERS)
        if p['threads'] > 0:
            torch.set_num_threads(p['threads'])
        folder = output_dir() / Path(p['checkpoint_dir'] or 'checkpoints').expanduser()  # absolute stays
        self.session = TrainingSession(SessionConfig.from_mapping({**p, 'checkpoint_dir': folder}),
                                       logger=self.get_logger())
        # Touched by callbacks only, and the executor runs them one at a time: no lock needed.
        self.stream = TripletStream(p['height'], p['width'], TripletRules.from_mapping(p),
                                    rectify=not p['input_rectified'])
        self.counters = Counters()
        self.health = Health()

        self.image_sub = subscribe_image(self, p, self.on_image, self.health.error)
        subscribe_input(self, p, CameraInfo, 'camera_info', self.on_camera_info)
        if p['velocity_source'] == 'odom':
            subscribe_input(self, p, Odometry, 'odom', self.on_velocity)
        else:
            subscribe_input(self, p, TWIST_TYPES[p['twist_type']], 'twist', self.on_velocity)
        self.pub_checkpoint = self.create_publisher(String, 'checkpoint', QoSProfile(
            depth=1, reliability=ReliabilityPolicy.RELIABLE))
        self.status = StatusPublisher(self, 'training', str(self.session.device))
        self.create_timer(1.0, self.publish_diagnostics)

        self._running = True
        self.worker = threading.Thread(target=self.run_training, name='trainer', daemon=True)
        self.worker.start()

    # ---------------------------------------------------------------- input

    def on_camera_info(self, msg: CameraInfo) -> None:
        changed = self.stream.set_camera(lambda: calibration_of(msg))
        if self.stream.refused:
            self.health.error(f'camera_info: {self.stream.refused.detail}')
            self.get_logger().warn(f'dropping camera_info: {self.stream.refused.detail}',
                                   throttle_duration_sec=WARN_PERIOD_S)
            return
        if not changed:
            return
        self.session.set_intrinsics(self.stream.intrinsics)
        if self.stream.rectifying:
            self.get_logger().info(f'camera_info has {msg.distortion_model} distortion: training on rectified '
                                   'frames (input_rectified:=true if the image is rectified already)')

    def on_velocity(self, msg: Odometry | TwistStamped | TwistWithCovarianceStamped) -> None:
        speed = speed_of(msg)
        self.session.add(self.stream.add_speed(stamp_seconds(msg.header), speed))
        if self._refused() is Skip.INVALID_SPEED:
            self.health.error(f'invalid speed {speed:g} m/s refused')
            self.get_logger().warn(f'refusing speed {speed:g} m/s (not finite, negative or above max_speed '
                                   f'{self.params["max_speed"]:g})', throttle_duration_sec=WARN_PERIOD_S)
        self._check_stamped('speed')

    def _refused(self) -> Skip | None:
        return self.stream.refused and self.stream.refused.reason

    def _check_stamped(self, what: str) -> None:
        """Say so when a message was refused for carrying no stamp: nothing can be trained then."""
        if self._refused() is Skip.UNSTAMPED:
            self.health.error(f'unstamped {what} refused')
            self.get_logger().warn(f'refusing {what} messages stamped 0: their driver does not stamp them, and '
                                   'without times no distance can be measured between frames',
                                   throttle_duration_sec=WARN_PERIOD_S)

    def on_image(self, msg: Image | CompressedImage) -> None:
        self.counters.frames += 1
        self.session.add(self.stream.add_frame(stamp_seconds(msg.header),
                                               lambda: to_rgb(msg, self.params['max_image_pixels'])))
        reason = self._refused()
        if reason is Skip.NO_CAMERA_INFO:
            self.get_logger().warn('no camera_info yet: frames are not used for training',
                                   throttle_duration_sec=WARN_PERIOD_S)
        elif reason is Skip.BAD_IMAGE:
            self.health.error(f'image: {self.stream.refused.detail}')
            self.get_logger().warn(f'dropping image: {self.stream.refused.detail}',
                                   throttle_duration_sec=WARN_PERIOD_S)
        self._check_stamped('image')

    # ---------------------------------------------------------------- training

    def run_training(self) -> None:
        """The trainer thread. It outlives anything a step raises: the error is logged and put
        on /diagnostics at ERROR, and training goes on after a pause (a dead thread would
        leave the node alive, its status OK and its step counter stopped)."""
        while self._running:
            try:
                self._train_once()
            except Exception as exc:  # noqa: BLE001 - the session counts what it foresees; this is the rest
                self.counters.trainer_errors += 1
                self.health.error(f'trainer: {exc!r}')
                self.get_logger().error(f'trainer error, retrying in {TRAINER_RETRY_S:g} s: {exc!r}\n'
                                        + traceback.format_exc(), throttle_duration_sec=WARN_PERIOD_S)
                time.sleep(TRAINER_RETRY_S)

    def _train_once(self) -> None:
        result = self.session.step()
        self.health.fault('save', self.session.stats.save_error)
        if not self._running:
            return  # stopping: close() saves; a step the stop broke off is not an error
        if result is None:
            time.sleep(0.1)
            return
        if result.recovered:
            self.health.error(f'training steps kept failing ({result.error}): went back to good weights')
        if result.losses is None:
            self.health.error(f'training step skipped: {result.error}')
            self.get_logger().warn(f'training step skipped: {result.error}', throttle_duration_sec=WARN_PERIOD_S)
            return
        self.health.success()
        if result.rolled_back_to is not None:
            self.health.error('running loss diverged: rolled back')
        if result.announce is not None:
            self.pub_checkpoint.publish(String(data=str(result.announce.resolve())))

    # ---------------------------------------------------------------- health

    def publish_diagnostics(self) -> None:
        s = self.session.stats
        buffered, nbytes, held_out = self.session.buffer_fill()
        c = self.session.config
        skipped = self.stream.skipped
        values = {
            'step': str(self.session.step_count),
            'steps_per_s': f'{s.steps_per_s:.2f}',
            'loss_ema': f'{s.loss_ema:.5f}',
            **{f'loss_{k}': f'{v:.5f}' for k, v in s.losses.items() if k != 'scale'},
            'scale_pred_over_measured': f'{s.losses.get("scale", math.nan):.4f}',
            'buffer_triplets': f'{buffered}/{c.buffer_triplets}',
            'buffer_mb': f'{nbytes / 2 ** 20:.1f}/{c.buffer_mb:.0f}',
            'holdout_triplets': str(held_out),
            'frames': str(self.counters.frames),
            'frames_lost_in_transport': str(self.image_sub.delivery.lost),
            'frames_missed': str(self.image_sub.delivery.missed),
            'triplets': str(s.triplets),
            **{f'skipped_{k}': str(v) for k, v in skipped.items() if k not in INPUT_DIAGNOSTICS},
            **{key: str(skipped[reason]) for reason, key in INPUT_DIAGNOSTICS.items()},
            'nonfinite_steps': str(s.nonfinite_steps),
            'failed_steps': str(s.failed_steps),
            'rollbacks': str(s.rollbacks),
            'failed_saves': str(s.failed_saves),
            'trainer_errors': str(self.counters.trainer_errors),
            'not_announced': str(s.not_announced),
            'last_checkpoint': str(s.last_saved or ''),
            'announced_checkpoint': str(s.announced or ''),
        }
        self.status.report(f'step {self.session.step_count}', values, self.health)

    def close(self, deadline: float) -> None:
        """Stop training and keep what it learnt: the last completed step is saved at once (the
        step in flight, dropped at its next phase boundary, changes nothing meanwhile), so a
        restart resumes exactly there."""
        self._running = False
        self.session.stop()
        try:
            path = self.session.save(timeout=max(0.0, deadline - time.monotonic()))
        except (CheckpointError, OSError) as exc:
            self.get_logger().error(f'could not save the last steps before stopping: {exc}')
            return
        finally:
            join_until(self.worker, deadline)
        if path is not None:
            self.get_logger().info(f'stopping: saved {path} (step {self.session.step_count})')


def main(args=None):
    run(TrainingNode, args)


if __name__ == '__main__':
    main()
