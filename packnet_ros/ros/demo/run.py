"""`packnet-ros demo`: replay a drive through the real nodes and report what was learned.

Processes: bag_player feeds depth_node and training_node; depth_node's depth goes to
depth_evaluator (against the bag's ground truth); training_node's validated checkpoints
are hot-reloaded by depth_node. A recorder in this process keeps the outputs (MCAP),
diagnostics and latency for the report.
"""
from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from packnet_ros.data.bag import TOPICS, write_kitti_bag
from packnet_ros.data.kitti import KittiDrive
from packnet_ros.data.synthetic import CameraRig
from packnet_ros.model.checkpoints import load_checkpoint
from packnet_ros.ros.demo.recorder import Recorder, RunRecord
from packnet_ros.ros.demo.report import DemoReport, DemoSetup, write_report
from packnet_ros.ros.node_process import ClientNode, NodeProcess, ros_environment, start_node, stop_nodes
from packnet_ros.ros.resources import config_dir, shipped_model

NS = '/packnet'
POLL_S = 2.0
RELOAD_MARGIN = 5  # frames the depth node may still serve the previous model after the last checkpoint


@dataclass
class DemoOptions:
    """What `packnet-ros demo` runs. The budget is training steps; max_seconds caps the run."""

    out: Path
    steps: int = 100
    max_seconds: float = 300.0
    window: int = 100
    source: str | None = None
    checkpoint: str | None = None  # default: the shipped scale-free model, unless from_scratch
    from_scratch: bool = False
    frames: int = 300
    seed: int = 7  # a world the shipped model never saw (it was trained on seed 1)

    def __post_init__(self) -> None:
        # The nodes put relative output paths under $ROS_HOME/packnet_ros; the demo's files
        # belong where the user asked, so every path they are given is absolute.
        self.out = Path(self.out).resolve()
        if self.checkpoint:
            self.checkpoint = str(Path(self.checkpoint).expanduser().resolve())

    def start_checkpoint(self) -> str | None:
        if self.from_scratch:
            return None
        return self.checkpoint or str(shipped_model())


# The demo's camera differs from the one the shipped model learnt with (80 degrees, 1.65 m up).
DEMO_RIG = CameraRig(384, 128, fov_x_deg=70.0, mount_height=1.3)


class Budget:
    """Done once training has taken its steps and the evaluator has seen a full window of
    frames from the final model (and two windows in all, so first and last differ), or at the cap.

    Counted in steps, not seconds: on a busy machine the same demo takes longer, not learns less.
    """

    def __init__(self, steps: int, window: int, max_seconds: float):
        self.steps, self.window, self.max_seconds = steps, window, max_seconds
        self.frames_when_trained: int | None = None
        self.stopped_by = ''

    def done(self, step: int, frames: int, elapsed: float) -> bool:
        if self.frames_when_trained is None and step >= self.steps:
            self.frames_when_trained = frames
        if self.frames_when_trained is not None and frames > 2 * self.window \
                and frames >= self.frames_when_trained + self.window + RELOAD_MARGIN:
            self.stopped_by = 'steps'
        elif elapsed >= self.max_seconds:
            self.stopped_by = 'time cap'
        return bool(self.stopped_by)


def prepare_bag(source: str | None, work: Path, frames: int, seed: int) -> tuple[Path, str]:
    """The bag to play and a description of where it came from."""
    if source and (Path(source) / 'metadata.yaml').is_file():
        return Path(source), f'bag {source}'
    if source:
        drive = Path(source)
        kind = 'KITTI drive'
    else:
        from packnet_ros.data.synthetic import write_kitti_drive
        print(f'rendering a synthetic drive ({frames} frames, seed {seed}) ...', flush=True)
        drive = write_kitti_drive(work / 'synthetic', frames, seed, DEMO_RIG)
        kind = (f'synthetic drive (seed {seed}; camera {DEMO_RIG.fov_x_deg:g} deg wide, '
                f'{DEMO_RIG.mount_height:g} m up)')
    bag = work / 'drive_bag'
    shutil.rmtree(bag, ignore_errors=True)
    print(f'converting {drive} to a rosbag2 ...', flush=True)
    write_kitti_bag(drive, bag)
    return bag, f'{kind} {drive}'


def start_nodes(cfg: Path, work: Path, logs: Path, options: DemoOptions, bag: Path, crop: str,
                env: dict) -> dict[str, NodeProcess]:
    """depth_node, training_node and depth_evaluator, then the player once they are up."""
    camera = {'image': TOPICS['image'][0], 'camera_info': TOPICS['camera_info'][0]}
    demo = (cfg / 'demo.yaml',) + ((cfg / 'demo_scratch.yaml',) if options.from_scratch else ())
    common = dict(namespace=NS, env=env)
    checkpoint = options.start_checkpoint()
    procs = {
        'depth_node': start_node('depth_node', logs / 'depth_node.log', (cfg / 'depth.yaml', *demo),
                                 {'checkpoint': checkpoint} if checkpoint else {}, camera, **common),
        'training_node': start_node('training_node', logs / 'training_node.log', (cfg / 'training.yaml', *demo),
                                    {'checkpoint_dir': str(work / 'checkpoints'), 'init_checkpoint': checkpoint or '',
                                     'max_steps': options.steps},
                                    {**camera, 'odom': TOPICS['odom'][0]}, **common),
        'depth_evaluator': start_node('depth_evaluator', logs / 'depth_evaluator.log', demo,
                                      {'output_json': str(options.out / 'evaluation.json'), 'crop': crop,
                                       'window': options.window},
                                      {'depth_gt': TOPICS['depth_gt'][0]}, **common),
    }
    time.sleep(3.0)  # let the nodes load their networks and match before the first frame
    procs['bag_player'] = start_node('bag_player', logs / 'bag_player.log', demo, {'bag': str(bag)}, env=env)
    return procs


def run_demo(options: DemoOptions) -> DemoReport:
    out, source = options.out, options.source
    out.mkdir(parents=True, exist_ok=True)
    work = out / 'work'
    work.mkdir(exist_ok=True)
    bag, source_text = prepare_bag(source, work, options.frames, options.seed)
    crop = 'garg' if source is not None and KittiDrive.is_drive(source) else 'none'
    env = ros_environment()
    shutil.rmtree(work / 'checkpoints', ignore_errors=True)
    logs = out / 'logs'
    logs.mkdir(exist_ok=True)
    outputs = out / 'outputs'
    shutil.rmtree(outputs, ignore_errors=True)

    client = ClientNode(make_node=lambda context: Recorder(context, outputs, NS, TOPICS['image'][0]))
    recorder = client.node
    procs: dict[str, NodeProcess] = {}
    try:
        procs = start_nodes(config_dir(), work, logs, options, bag, crop, env)
        budget = Budget(options.steps, options.window, options.max_seconds)
        print(f'training {options.steps} steps (DEMO_STEPS), then evaluating {options.window} more frames; '
              f'at most {options.max_seconds:.0f} s (DEMO_SECONDS) ...', flush=True)
        start = time.monotonic()
        while True:
            time.sleep(POLL_S)
            dead = [name for name, proc in procs.items() if not proc.alive()]
            if dead:
                raise RuntimeError(f'{", ".join(dead)} exited early; see {logs}')
            record, elapsed = recorder.record, time.monotonic() - start
            progress(record, elapsed)
            if budget.done(record.steps(), record.evaluated_frames(), elapsed):
                break
        duration = time.monotonic() - start
    finally:
        stop_nodes(list(procs.values()))
        client.close()
        recorder.close()
    setup = DemoSetup(source_text, *describe_model(options), steps_budget=options.steps,
                      seconds_cap=options.max_seconds, stopped_by=budget.stopped_by)
    return write_report(out, recorder.record, duration, setup)


def describe_model(options: DemoOptions) -> tuple[str, str, str]:
    """Where the model starts (init), what it is, and its input size, as the report says them."""
    checkpoint = options.start_checkpoint()
    training = {}
    for name in ('demo.yaml', 'demo_scratch.yaml') if options.from_scratch else ('demo.yaml',):
        training.update(yaml.safe_load((config_dir() / name).read_text())['/**/training_node']['ros__parameters'])
    if checkpoint:
        ckpt = load_checkpoint(checkpoint)
        return (f'checkpoint {Path(checkpoint).name} (trained {ckpt.step} steps)',
                f'{ckpt.arch} width {ckpt.model_width:g}', f'{training["width"]}x{training["height"]}')
    return ('scratch (random weights)', f'{training["arch"]} width {training["model_width"]:g}',
            f'{training["width"]}x{training["height"]}')


def progress(record: RunRecord, elapsed: float) -> None:
    train = record.training[-1].values if record.training else {}
    ev = record.evaluator[-1].values if record.evaluator else {}
    print(f'  t={elapsed:4.0f}s  step {record.steps():>5}  loss {train.get("loss_ema", "nan")}  '
          f'depth frames {record.depth_frames}  abs_rel(last) {ev.get("last_abs_rel", "-")}  '
          f'scale(last) {ev.get("last_scale_ratio", "-")}', flush=True)
