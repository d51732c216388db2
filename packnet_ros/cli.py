"""`packnet-ros` command line: offline tools around the core library.

An error ends the command with one line on stderr (`packnet-ros CMD: error: ...`) and exit
status 2, never a traceback; outputs are written whole or not at all. Progress bars show on
a terminal only, so a log or a pipe gets the results and that one line.
"""
from __future__ import annotations

import argparse
import io
import logging
import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from packnet_ros.data.kitti import KittiDrive, KittiError
from packnet_ros.image import IMAGE_SUFFIXES, ImageError, colorize_depth, read_rgb
from packnet_ros.model.checkpoints import CheckpointError
from packnet_ros.serving.provision import DEFAULT_SIZE

if TYPE_CHECKING:  # imported where used: rosbags takes a while to load
    from packnet_ros.data.bag import BagError

PROGRESS = None  # tqdm's disable=None: a bar on a terminal, nothing in a log or a pipe


def collect_inputs(source: Path, camera: int) -> list[Path]:
    """An image file, a folder of images, or a KITTI drive folder -> image paths."""
    if source.is_file():
        return [source]
    if not source.is_dir():
        raise FileNotFoundError(f'input {source} does not exist')
    if KittiDrive.is_drive(source):
        drive = KittiDrive(source, camera)
        return [drive.image_path(f) for f in drive.frames]
    images = sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise FileNotFoundError(f'no images ({", ".join(IMAGE_SUFFIXES)}) in {source}')
    return images


@contextmanager
def writing(path: str | Path) -> Iterator[None]:
    """An OSError while writing the output `path` names it: a full disk fails a write with a
    bare ENOSPC, and a read-only folder fails the temporary file or folder beside `path` that
    the output is staged in, a name the user never gave."""
    try:
        yield
    except OSError as exc:
        beside = exc.filename is not None and Path(exc.filename).absolute().parent == Path(path).absolute().parent
        if exc.errno is None or not (exc.filename is None or beside):  # a message of ours, or about another file
            raise
        raise OSError(exc.errno, f'cannot write {path}: {exc.strerror or exc}') from exc


def write_output(path: Path, data: bytes) -> None:
    """`data` at `path` whole or not at all: through a temporary file renamed when complete, so
    a full disk or a read-only folder leaves nothing half-written. A device or pipe (e.g.
    /dev/stdout) is written to directly, never replaced."""
    if path.exists() and not path.is_file():
        with writing(path), open(path, 'wb') as f:
            f.write(data)
        return
    tmp = path.with_name(f'.{path.name}.{os.getpid()}.tmp')
    try:
        with writing(path):
            with open(tmp, 'wb') as f:
                f.write(data)
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def serving_plan(args: argparse.Namespace):
    """The plan of a command that serves args.checkpoint (no camera frames to calibrate int8 on),
    its fallback said on stderr."""
    from packnet_ros.serving.provision import resolve

    plan = resolve(args.checkpoint, args.device, args.backend, args.precision, calibration=False)
    if plan.note:
        print(f'packnet-ros {args.command}: {plan.note}', file=sys.stderr)
    return plan


def run_infer(args: argparse.Namespace) -> int:
    from packnet_ros.serving.inference import DepthEstimator

    images = collect_inputs(Path(args.input), args.camera)
    estimator = DepthEstimator.provision(args.checkpoint, serving_plan(args), (args.height, args.width))
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    failed = 0
    for path in images:
        try:
            rgb = read_rgb(path)
            depth = estimator.infer(rgb)
        except ImageError as exc:
            print(f'skipped: {exc}', file=sys.stderr)
            failed += 1
            continue
        if args.output_size == 'input':
            depth = cv2.resize(depth, (rgb.shape[1], rgb.shape[0]), interpolation=cv2.INTER_NEAREST)
        array = io.BytesIO()
        np.save(array, depth.astype(np.float32))
        write_output(out / f'{path.stem}.npy', array.getvalue())
        png = cv2.imencode('.png', cv2.cvtColor(colorize_depth(depth), cv2.COLOR_RGB2BGR))[1]
        write_output(out / f'{path.stem}_depth.png', png.tobytes())
        print(f'{path} -> {out / path.stem}.npy  depth {np.nanmin(depth):.2f}..{np.nanmax(depth):.2f} m')
    print(f'{len(images) - failed} of {len(images)} images written to {out}')
    return 1 if failed == len(images) else 0


def run_synth(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from packnet_ros.data.synthetic import CameraRig, write_kitti_drive

    if args.frames < 3:
        raise ValueError(f'--frames must be at least 3 (one triplet), got {args.frames}')
    with tqdm(total=args.frames, desc='rendering', unit='frame', disable=PROGRESS) as bar:
        rig = CameraRig(args.width, args.height, args.fov, args.camera_height)
        drive = write_kitti_drive(args.out_dir, args.frames, args.seed, rig,
                                  workers=args.workers, progress=lambda done, total: bar.update(done - bar.n))
    print(f'wrote {args.frames} frames to {drive}')
    return 0


def run_kitti_to_bag(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from packnet_ros.data.bag import write_kitti_bag

    with tqdm(desc='converting', unit='frame', disable=PROGRESS) as bar, writing(args.out_bag):
        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        bag = write_kitti_bag(args.drive_dir, args.out_bag, args.storage, args.camera, progress)
    print(f'wrote {bag}')
    return 0


def run_demo(args: argparse.Namespace) -> int:
    from packnet_ros.ros.demo import DemoOptions, run_demo

    report = run_demo(DemoOptions(out=Path(args.out), steps=args.steps, max_seconds=args.seconds,
                                  window=args.window, source=args.source, checkpoint=args.checkpoint,
                                  from_scratch=args.from_scratch, frames=args.frames, seed=args.seed))
    print(f'\n{report.frames} frames evaluated, {report.train_steps} training steps in '
          f'{report.duration_s:.0f} s (stopped by {report.setup.stopped_by}); depth {report.depth_fps:.1f} fps, '
          f'latency p50 {report.latency_ms_p50:.0f} ms')
    for key in ('abs_rel', 'abs_rel_median_scaled', 'scale_ratio'):
        print(f'  {key:24s} first {getattr(report.first, key):8.3f}   last {getattr(report.last, key):8.3f}')
    print(f'report: {Path(args.out) / "report.md"}')
    return 0


def in_bags(exc: BagError, sources: list[str]) -> BagError:
    """A message that cannot be decoded names no bag (the decoder is not told which one it
    reads): name those among `sources` it can come from."""
    from packnet_ros.data.bag import BagError

    if exc.bag is not None:
        return exc
    bags = [s for s in sources if (Path(s) / 'metadata.yaml').is_file()]
    return BagError(str(exc), bags[0] if len(bags) == 1 else f'one of the bags {", ".join(bags)}')


class SessionLog(logging.Handler):
    """The training session's warnings and errors as lines on stderr, held until training goes
    on (the next step) or ends: a failure of the run's last save is then left to the command's
    final error, which reports it, instead of being printed twice."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.logger = logging.Logger('packnet-ros train')  # outside the logging tree: only this handler
        self.logger.addHandler(self)
        self.held: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.held.append(record.getMessage())

    def show(self, unless: str = '') -> None:
        from tqdm import tqdm

        for line in self.held:
            if line != unless:
                tqdm.write(f'packnet-ros train: {line}', file=sys.stderr)
        self.held.clear()


def run_train(args: argparse.Namespace) -> int:
    import yaml
    from tqdm import tqdm

    from packnet_ros.data.bag import BagError
    from packnet_ros.data.triplets import BagTopics
    from packnet_ros.training import distributed
    from packnet_ros.training.offline import OfflineConfig, train

    session = yaml.safe_load(Path(args.config).read_text()) if args.config else {}
    if session is not None and not isinstance(session, dict):
        raise ValueError(f'{args.config} must hold a mapping of training settings')
    session = dict(session or {})
    flags = {'height': args.height, 'width': args.width, 'arch': args.arch, 'model_width': args.model_width,
             'batch_size': args.batch_size, 'init_checkpoint': args.init, 'device': args.device}
    session.update({k: v for k, v in flags.items() if v is not None})
    for item in args.set or []:
        key, sep, value = item.partition('=')
        if not sep:
            raise ValueError(f'--set takes KEY=VALUE, got {item!r}')
        session[key] = yaml.safe_load(value)
    processes, session['device'] = distributed.start(str(session.get('device', 'cpu')))
    config = OfflineConfig(data=args.data, out=Path(args.out), steps=args.steps or 0, epochs=args.epochs or 1,
                           workers=args.workers, resume=args.resume, session=session,
                           holdout_every=args.holdout_every,
                           tensorboard=not args.no_tensorboard,
                           topics=BagTopics(args.image_topic, args.camera_info_topic, args.speed_topic))
    main_process = processes is None or processes.rank == 0
    log, unsaved = SessionLog(), ''
    try:
        with tqdm(desc='training', unit='step', disable=PROGRESS if main_process else True) as bar:
            def report(result, step, total):
                if step < total:
                    log.show()  # training went on past what the session said
                bar.total = total
                bar.update(step - bar.n)
                if result.losses:
                    bar.set_postfix(loss=f'{result.losses["loss"]:.4f}', scale=f'{result.losses["scale"]:.3f}')

            run = train(config, report, log.logger)
        if run.session.saved_step != run.session.step_count:  # the save of the last step failed
            unsaved = run.session.stats.save_error
    except BagError as exc:
        raise in_bags(exc, args.data) from exc
    except distributed.DistributedError as exc:
        rank = processes.rank if processes else 0
        raise RuntimeError(f'rank {rank}: {exc}. The run stopped; its newest checkpoint in {config.out} is intact: '
                           'rerun with --resume (any number of processes) to continue') from None
    finally:
        log.show(unless=unsaved)
        distributed.stop()
    if main_process:
        session, speed = run.session, run.throughput
        if session.saved_step != session.step_count:
            kept = session.folder.checkpoints()  # newest first: this run's, or those it resumed from
            raise RuntimeError(f'{unsaved or "the last save failed"}; ' + (
                f'the newest checkpoint in {config.out} is {kept[0].name}, older than step {session.step_count}: '
                '--resume continues from it' if kept else f'no checkpoint was written to {config.out}'))
        where = f' on {processes.world_size} processes ({processes.backend})' if processes else ''
        announced = session.stats.announced or 'none: no checkpoint passed validation'
        if session.stats.last_validation is not None and not session.stats.last_validation.passed:
            announced = f'{announced}; the last one failed on ' + ', '.join(session.stats.last_validation.failures)
        print(f'{session.origin}; trained to step {session.step_count}{where}; checkpoints in {config.out} '
              f'(last {session.stats.last_saved}, announced {announced})')
        if speed.steps:
            print(f'throughput: {speed.images_per_s:.1f} images/s; waiting for data {100 * speed.data_share:.1f} % '
                  f'of the time ({speed.steps} steps here)')
    return 0


def run_eval(args: argparse.Namespace) -> int:
    import json

    from tqdm import tqdm

    from packnet_ros.data.split import read_split
    from packnet_ros.evaluation import EvalConfig, drive_samples, evaluate, format_table

    if args.split:
        samples = read_split(args.data, args.split)
    elif KittiDrive.is_drive(args.data):
        samples = drive_samples(args.data, args.camera)
    else:
        raise ValueError(f'{args.data} is not a drive folder: give --split FILE listing frames under it')
    config = EvalConfig(args.checkpoint, samples, serving_plan(args), args.height, args.width, args.batch_size,
                        args.workers, args.min_depth, args.max_depth,
                        None if args.crop == 'none' else args.crop)
    with tqdm(total=len(samples), desc='evaluating', unit='image', disable=PROGRESS) as bar:
        result = evaluate(config, bar.update)
    print(format_table(result))
    reported = 'median_scaled' if args.median_scaling else 'metric'
    print(f'reported ({reported.replace("_", "-")}): abs_rel {getattr(result, reported).abs_rel:.3f}')
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        write_output(Path(args.json), json.dumps({**result.to_json(), 'reported': reported}, indent=2).encode())
        print(f'wrote {args.json}')
    return 0


def run_export(args: argparse.Namespace) -> int:
    from packnet_ros.model.checkpoints import load_checkpoint
    from packnet_ros.serving.export import export_checkpoint
    from packnet_ros.serving.provision import network_size, resolve

    plan = resolve(args.checkpoint, 'cpu', 'onnxruntime', 'int8' if args.int8 else 'fp32')
    if plan.backend != 'onnxruntime':
        raise RuntimeError(f'cannot export: {plan.note.partition(":")[0]}')
    frames = []
    if plan.calibrate:
        from packnet_ros.data.bag import BagError
        from packnet_ros.data.triplets import open_source, spread_frames

        if not args.calibration:
            raise SystemExit('--int8 needs --calibration DATA: frames from the camera the model will serve')
        height, width = args.height or 0, args.width or 0
        if not (height and width):
            height, width = network_size(load_checkpoint(args.checkpoint).input_size, height, width)
        datasets = []
        for source in args.calibration:
            try:
                datasets += open_source(source, height, width)
            except BagError as exc:
                raise in_bags(exc, [source]) from exc
        frames = spread_frames(datasets, args.calibration_frames)
    options = dict(opset=args.opset, dynamic_batch=args.dynamic_batch, pose=args.pose)
    with writing(args.onnx):
        if frames:
            from packnet_ros.serving.quantization import export_int8

            result = export_int8(args.checkpoint, args.onnx, frames, args.height, args.width, **options)
        else:
            result = export_checkpoint(args.checkpoint, args.onnx, args.height, args.width, **options)
    print(f'wrote {result.depth}: ONNX Runtime vs torch max |inverse depth difference| {result.depth_difference:.2e}'
          + (f' (float); int8 vs float median relative depth difference {100 * result.int8_depth_difference:.2f} % '
             f'on {len(frames)} calibration frames' if frames else ''))
    if result.pose:
        print(f'wrote {result.pose}: max |pose difference| {result.pose_difference:.2e}')
    return 0


def run_strip(args: argparse.Namespace) -> int:
    import torch

    from packnet_ros.model.checkpoints import load_checkpoint, save_checkpoint

    ckpt = load_checkpoint(args.checkpoint)
    depth_net, pose_net = ckpt.networks()
    out = save_checkpoint(args.out, depth_net, pose_net if args.keep_pose else None, step=ckpt.step,
                          input_size=ckpt.input_size, dtype=torch.float16 if args.half else torch.float32,
                          extra={'stripped_from': Path(args.checkpoint).name})
    print(f'wrote {out} ({out.stat().st_size / 2 ** 20:.1f} MiB): {ckpt.name} without optimizer state'
          + ('' if args.keep_pose else ' or pose network') + (', float16' if args.half else ''))
    return 0


def add_model_arguments(parser: argparse.ArgumentParser, device: str) -> None:
    """Which model to run and how: shared by the commands that infer depth."""
    parser.add_argument('--checkpoint', required=True, help='packnet-sfm .ckpt, packnet_ros checkpoint or .onnx')
    parser.add_argument('--height', type=int,
                        help=f'network input height (default: from checkpoint, else {DEFAULT_SIZE[0]})')
    parser.add_argument('--width', type=int,
                        help=f'network input width (default: from checkpoint, else {DEFAULT_SIZE[1]})')
    parser.add_argument('--device', default=device, help='cpu, cuda, cuda:N or auto')
    parser.add_argument('--precision', default='fp32', choices=('auto', 'fp32', 'fp16', 'bf16', 'int8'),
                        help='auto: fp32 (int8 needs an int8 .onnx: packnet-ros export --int8)')
    parser.add_argument('--backend', default='torch', choices=('auto', 'torch', 'onnxruntime'),
                        help='onnxruntime exports the checkpoint once (cached); an .onnx checkpoint always uses it; '
                             'auto: onnxruntime on a CPU in fp32, torch otherwise')


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='packnet-ros', description=__doc__)
    sub = parser.add_subparsers(dest='command', required=True)
    infer = sub.add_parser('infer', help='depth for an image, a folder of images or a KITTI drive folder')
    add_model_arguments(infer, device='cpu')
    infer.add_argument('input', help='image file, folder of images, or KITTI drive folder (*_sync)')
    infer.add_argument('output', help='folder for <name>.npy (metres) and <name>_depth.png')
    infer.add_argument('--camera', type=int, default=2, choices=(2, 3), help='KITTI camera for drive folders')
    infer.add_argument('--output-size', default='network', choices=('network', 'input'),
                       help='write depth at network resolution or resized to the input image')
    infer.set_defaults(func=run_infer)

    synth = sub.add_parser('synth', help='render a synthetic drive (exact depth, speed, pose) in KITTI raw layout')
    synth.add_argument('out_dir', help='folder that receives DATE/DATE_drive_SEED_sync')
    synth.add_argument('--frames', type=int, default=300)
    synth.add_argument('--seed', type=int, default=0)
    synth.add_argument('--width', type=int, default=640)
    synth.add_argument('--height', type=int, default=192)
    synth.add_argument('--fov', type=float, default=80.0, help='horizontal field of view, degrees')
    synth.add_argument('--camera-height', type=float, default=1.65, help='camera height above the road, metres')
    synth.add_argument('--workers', type=int, default=2, help='rendering processes')
    synth.set_defaults(func=run_synth)

    to_bag = sub.add_parser('kitti-to-bag', help='convert a KITTI raw drive folder into a rosbag2')
    to_bag.add_argument('drive_dir', help='KITTI raw drive folder (DATE/DATE_drive_NNNN_sync)')
    to_bag.add_argument('out_bag', help='bag directory to create (must not exist)')
    to_bag.add_argument('--storage', default='mcap', choices=('mcap', 'sqlite3'))
    to_bag.add_argument('--camera', type=int, default=2, choices=(2, 3))
    to_bag.set_defaults(func=run_kitti_to_bag)

    train = sub.add_parser('train', help='train offline on drives and bags (checkpoints depth_node loads); '
                                         'under torchrun on several processes (DistributedDataParallel)')
    train.add_argument('--data', action='append', required=True,
                       help='KITTI raw drive folder, KITTI split file, synthetic drive (packnet-ros synth) '
                            'or rosbag2; repeatable')
    train.add_argument('--out', required=True, help='checkpoint folder')
    train.add_argument('--steps', type=int, help='training steps (default: --epochs over the data)')
    train.add_argument('--epochs', type=int, help='passes over the data when --steps is not given (default 1)')
    train.add_argument('--batch-size', type=int)
    train.add_argument('--height', type=int, help='network input height (multiple of 32)')
    train.add_argument('--width', type=int, help='network input width (multiple of 32)')
    train.add_argument('--arch', help='PackNet01 or PackNetSlim01 (from scratch)')
    train.add_argument('--model-width', type=float, help='channel width factor (from scratch)')
    train.add_argument('--init', help='start from this checkpoint (official or ours)')
    train.add_argument('--device', help='auto, cpu, cuda or cuda:N')
    train.add_argument('--resume', action='store_true', help='continue from the newest valid checkpoint in --out')
    train.add_argument('--workers', type=int, default=2, help='DataLoader worker processes')
    train.add_argument('--config', help='YAML of training settings (the training node\'s parameter names)')
    train.add_argument('--set', action='append', metavar='KEY=VALUE', help='one training setting; repeatable')
    train.add_argument('--holdout-every', type=int, default=20,
                       help='every Nth triplet is held out for validation (0: none)')
    train.add_argument('--no-tensorboard', action='store_true', help='no event logs in OUT/tensorboard')
    train.add_argument('--image-topic', default='/kitti/camera/image_raw', help='for bags')
    train.add_argument('--camera-info-topic', default='/kitti/camera/camera_info', help='for bags')
    train.add_argument('--speed-topic', default='/kitti/odom',
                       help='for bags: Odometry, TwistStamped or TwistWithCovarianceStamped')
    train.set_defaults(func=run_train)

    evaluate = sub.add_parser('eval', help='KITTI Eigen-protocol metrics of a checkpoint (Garg crop, 80 m cap)')
    add_model_arguments(evaluate, device='auto')
    evaluate.add_argument('--data', required=True, help='KITTI raw root (with --split) or one drive folder')
    evaluate.add_argument('--split', help='file listing frames, e.g. packnet-sfm\'s eigen_test_files.txt')
    evaluate.add_argument('--median-scaling', action='store_true',
                          help='report the median-scaled row (ground-truth scaling) instead of the metric one')
    evaluate.add_argument('--crop', default='garg', choices=('garg', 'none'))
    evaluate.add_argument('--min-depth', type=float, default=0.0)
    evaluate.add_argument('--max-depth', type=float, default=80.0)
    evaluate.add_argument('--batch-size', type=int, default=8)
    evaluate.add_argument('--workers', type=int, default=2, help='DataLoader worker processes')
    evaluate.add_argument('--camera', type=int, default=2, choices=(2, 3), help='for a drive folder without split')
    evaluate.add_argument('--json', help='write the results here')
    evaluate.set_defaults(func=run_eval)

    export = sub.add_parser('export', help='the depth network (and PoseNet) as ONNX, checked in ONNX Runtime')
    export.add_argument('--checkpoint', required=True, help='packnet-sfm .ckpt or packnet_ros checkpoint')
    export.add_argument('--onnx', required=True, help='output .onnx (PoseNet goes to NAME_pose.onnx)')
    export.add_argument('--height', type=int, help=f'input height (default: from checkpoint, else {DEFAULT_SIZE[0]})')
    export.add_argument('--width', type=int, help=f'input width (default: from checkpoint, else {DEFAULT_SIZE[1]})')
    export.add_argument('--opset', type=int, default=17, help='17 writes GroupNorm as InstanceNormalization, '
                                                               'which every runtime supports')
    export.add_argument('--dynamic-batch', action='store_true', help='batch size free at run time')
    export.add_argument('--pose', action='store_true', help='also export PoseNet')
    export.add_argument('--int8', action='store_true', help='write the int8 model (CPU: ~2x faster), calibrated on '
                                                            '--calibration frames and checked against float')
    export.add_argument('--calibration', action='append', default=[],
                        help='with --int8: KITTI drive, split file, synthetic drive or rosbag2 from the served '
                             'camera; repeatable')
    export.add_argument('--calibration-frames', type=int, default=32, help='frames spread over --calibration')
    export.set_defaults(func=run_export)

    strip = sub.add_parser('strip', help='a checkpoint to ship: no optimizer state, optionally float16, no PoseNet')
    strip.add_argument('checkpoint')
    strip.add_argument('out')
    strip.add_argument('--keep-pose', action='store_true', help='keep PoseNet (to fine-tune from it)')
    strip.add_argument('--half', action='store_true', help='store weights as float16 (half the size)')
    strip.set_defaults(func=run_strip)

    demo = sub.add_parser('demo', help='replay a drive through the nodes, train online, write a report')
    demo.add_argument('--source', help='KITTI drive folder or rosbag2 (default: a synthetic drive)')
    demo.add_argument('--checkpoint', help='start from this checkpoint (default: models/synthetic_scale_free.ckpt, '
                                           'trained without metric scale on another world and camera)')
    demo.add_argument('--from-scratch', action='store_true', help='start from random weights instead')
    demo.add_argument('--steps', type=int, default=100, help='training steps; then one more evaluation window')
    demo.add_argument('--seconds', type=float, default=300.0, help='at most this long, whatever the steps')
    demo.add_argument('--window', type=int, default=100, help='frames in the first and last evaluation windows')
    demo.add_argument('--out', default='demo_out')
    demo.add_argument('--frames', type=int, default=300, help='synthetic drive length')
    demo.add_argument('--seed', type=int, default=7, help='synthetic drive seed (the shipped model saw seed 1)')
    demo.set_defaults(func=run_demo)
    return parser


def one_line(exc: BaseException) -> str:
    """The error as one line. An error in a DataLoader worker reaches us with the worker's
    traceback in its message ('Caught ImageError in DataLoader worker process 0. Original
    Traceback ...'): keep what the original error said, after its type on the last line."""
    text = str(exc)
    worker = re.match(r'Caught (\w+) in DataLoader worker', text)
    if worker and f'{worker.group(1)}: ' in text:
        text = text[text.rindex(f'{worker.group(1)}: ') + len(worker.group(1)) + 2:]
    return '; '.join(line.strip() for line in text.splitlines() if line.strip())


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # OpenCV logs its own line for a broken image file; we report it, naming the file, once
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_FATAL)
    try:
        return args.func(args)
    except (CheckpointError, KittiError, ImageError, OSError, ValueError, RuntimeError) as exc:
        print(f'packnet-ros {args.command}: error: {one_line(exc)}', file=sys.stderr)
        return 2


if __name__ == '__main__':
    sys.exit(main())
