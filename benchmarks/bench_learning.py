"""Learning curves: how fast does training from given weights reach metric depth?

    make bench-learning     (or: .venv/bin/python benchmarks/bench_learning.py --dataset kitti ...)

For each recipe (recipes) and seed: train on a fixed set of triplets,
evaluating every --eval-every steps on held frames against ground truth: metric abs_rel (no
scaling), median-scaled abs_rel, a1 and the scale ratio median(gt)/median(pred) (1 = metric).
Curves are recorded against steps and against training seconds; JSON plus a PNG.

Datasets:
  kitti      KITTI_tiny (../shared/data): 96x320, batch 1, targets 1-5 with context t-1/t+1
             in a fixed random order, speed from OXTS, evaluated on frames 1-5 against lidar
             (Garg crop, 0-80 m): the setting of ../shared/tools/original_kitti_tiny_curve.py.
  synthetic  a rendered drive (exact depth and speed), 64x192, batch 4; evaluated on frames
             held out of training.
The original implementation's KITTI_tiny curve (seed 0) is drawn beside ours from the
numbers it produced (README of the learning issue); ORIGINAL_CURVE=file.json replaces them
with a rerun of the shared tool.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from recipes import RECIPES, Recipe

from packnet_ros.data.kitti import KittiDrive
from packnet_ros.data.synthetic import CameraRig, drive
from packnet_ros.data.triplets import DriveTriplets
from packnet_ros.devices import resolve_device
from packnet_ros.geometry import scale_intrinsics
from packnet_ros.image import read_rgb, resize_area, rgb_to_tensor
from packnet_ros.losses import travelled_distance
from packnet_ros.metrics import image_metrics, mean_metrics
from packnet_ros.model.checkpoints import load_networks
from packnet_ros.networks import PoseNet
from packnet_ros.training import Trainer, Triplet, TripletAccumulator, TripletRules
from packnet_ros.training.trainer import forward_motion, fresh_networks

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get('PACKNET_SHARED', REPO.parent / 'shared')) / 'data'
KITTI = SHARED / 'KITTI_tiny' / '2011_09_26' / '2011_09_26_drive_0023_sync'
CLIP78 = SHARED / 'KITTI_clip78' / '2011_09_26' / '2011_09_26_drive_9001_sync'
# metric abs_rel, median-scaled abs_rel, scale ratio of TRI-ML/packnet-sfm on KITTI_tiny (seed 0)
ORIGINAL_KITTI = {0: (0.91, 0.60, 14.2), 100: (0.98, 1.73, 2.79), 200: (0.75, 0.77, 5.29), 300: (0.86, 0.24, 7.73)}


class Dataset:
    """Training triplets, evaluation frames (rgb at network size, ground truth) and intrinsics."""

    def __init__(self, name, triplets, eval_rgb, eval_gt, K, batch, crop):
        self.name, self.triplets, self.eval_rgb, self.eval_gt = name, triplets, eval_rgb, eval_gt
        self.K, self.batch, self.crop = K, batch, crop


def kitti_tiny(height: int = 96, width: int = 320) -> Dataset:
    drv = KittiDrive(KITTI)
    stamps = np.array(drv.stamps())
    speeds = np.array([p.speed for p in drv.oxts()])
    small = [resize_area(read_rgb(drv.image_path(f)), height, width) for f in drv.frames]
    triplets = []
    for t in range(1, 6):
        distances = [travelled_distance(stamps, speeds, stamps[t], stamps[c]) for c in (t - 1, t + 1)]
        triplets.append(Triplet(np.stack([small[t - 1], small[t], small[t + 1]]),
                                np.array(distances, np.float32), float(stamps[t])))
    gts = [drv.ground_truth(t, (375, 1242)) for t in range(1, 6)]
    K = scale_intrinsics(drv.intrinsics(), width / 1242, height / 375)
    return Dataset('kitti', triplets, small[1:6], gts, K, batch=1, crop='garg')


def kitti_drive(path: Path, name: str, height: int = 96, width: int = 320, batch: int = 4, stride: int = 5,
                context_distance: float = 0.5) -> Dataset:
    """A real drive as `packnet-ros train` sees it (the offline planner's triplets, batch 4),
    evaluated on every frame against lidar (Garg crop, 80 m), as `packnet-ros eval` does."""
    planned = DriveTriplets(path, height, width, rules=TripletRules(stride=stride, context_distance=context_distance))
    skipped = {str(reason): count for reason, count in planned.skipped.items()}
    print(f'{name}: {len(planned)} triplets, skipped {skipped}', flush=True)
    triplets = [planned[i] for i in range(len(planned))]
    drv = planned.drive
    small, gts = [], []
    for f in drv.frames:
        rgb = read_rgb(drv.image_path(f))
        small.append(resize_area(rgb, height, width))
        gts.append(drv.ground_truth(f, rgb.shape[:2]))
    return Dataset(name, triplets, small, gts, planned.K, batch=batch, crop='garg')


def synthetic(seed: int = 1, frames: int = 120, rig: CameraRig | None = None) -> Dataset:
    rig = rig or CameraRig(192, 64)
    rendered = list(drive(frames, seed=seed, camera=rig, start_time=3.0))
    acc = TripletAccumulator(rig.height, rig.width)
    triplets = []
    for f in rendered:
        acc.add_speed(f.stamp, f.speed)
        acc.add_speed(f.stamp + 0.05, f.speed)
        triplets += acc.add_frame(f.stamp, f.rgb)
    held = rendered[5::10]
    held_stamps = {f.stamp for f in held}
    train = [t for t in triplets if t.stamp not in held_stamps]
    gts = [np.where(np.isfinite(f.depth), f.depth, 0).astype(np.float32) for f in held]
    return Dataset('synthetic', train, [f.rgb for f in held], gts, rig.K, batch=4, crop=None)


@torch.no_grad()
def evaluate(trainer: Trainer, data: Dataset) -> dict:
    net = trainer.depth_net.eval()
    results = []
    for rgb, gt in zip(data.eval_rgb, data.eval_gt):
        if gt is None:
            continue
        x = rgb_to_tensor(rgb, trainer.device)[None]
        depth = (trainer.depth_scale() / net(x))[0, 0].float().cpu().numpy()  # not yet folded: applied here
        results.append(image_metrics(gt, depth, min_depth=1e-3, max_depth=80.0, crop=data.crop))
    results = [r for r in results if r is not None]
    # The median scale ratio over frames (not mean_metrics' mean): one outlier frame of a short
    # sequence does not move it.
    return {**mean_metrics(results).summary().to_dict(),
            'scale_ratio': float(np.median([r.scale_ratio for r in results])),
            'frame_scale_ratios': [round(float(r.scale_ratio), 4) for r in results]}


def run(recipe: Recipe, data: Dataset, seed: int, steps: int, eval_every: int, device: torch.device,
        init: str | None = None) -> list[dict]:
    torch.manual_seed(seed)
    if init:  # adaptation: a trained model meets a new camera and place
        depth_net, pose_net = load_networks(init)
    else:
        depth_net, pose_net = fresh_networks(recipe.arch, recipe.model_width, recipe.initial_depth,
                                             recipe.motion_prior)
    if pose_net is None:  # a checkpoint without its PoseNet
        pose_net = PoseNet()
        if recipe.motion_prior > 0:
            pose_net.initialize_translations(forward_motion(recipe.motion_prior))
    trainer = Trainer(depth_net, pose_net, data.K, recipe.trainer, device=device)
    rng = np.random.default_rng(seed)
    held = data.triplets[::max(1, len(data.triplets) // 8)][:8]  # what a session's gate would score

    def point(step: int, seconds: float) -> dict:
        score = trainer.evaluate(held)
        result = {'step': step, 'seconds': seconds, **evaluate(trainer, data), 'held_out': asdict(score)}
        print(f'    step {step:4d} {seconds:6.0f} s  abs_rel {result["abs_rel"]:.3f}  median-scaled '
              f'{result["abs_rel_median_scaled"]:.3f}  scale {result["scale_ratio"]:.3f}  held-out photometric '
              f'{score.photometric:.4f} at measured motion {score.metric_photometric:.4f} velocity error '
              f'{score.velocity:.3f} holes {score.holes:.3f}', flush=True)
        return result

    curve = [point(0, 0.0)]
    seconds = 0.0
    for step in range(1, steps + 1):
        batch = [data.triplets[i] for i in rng.choice(len(data.triplets), data.batch, replace=data.batch > len(
            data.triplets))]
        start = time.perf_counter()
        trainer.step(batch)
        if device.type == 'cuda':
            torch.cuda.synchronize()
        seconds += time.perf_counter() - start
        if step % eval_every == 0:
            curve.append(point(step, seconds))
    return curve


def summarise(curves: list[list[dict]]) -> list[dict]:
    """Median over seeds at each evaluated step."""
    keys = ('seconds', 'abs_rel', 'abs_rel_median_scaled', 'a1', 'scale_ratio')
    return [{'step': points[0]['step'], **{k: statistics.median(p[k] for p in points) for k in keys}}
            for points in zip(*curves)]


def plot(results: dict, path: Path, original: dict | None) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    panels = (('abs_rel', 'metric abs_rel'), ('abs_rel_median_scaled', 'median-scaled abs_rel'),
              ('scale_ratio', 'scale median(gt)/median(pred)'))
    fig, axes = plt.subplots(2, 3, figsize=(16, 8))
    for name, result in results.items():
        median = result['median']
        for col, (key, title) in enumerate(panels):
            for row, x in enumerate(('step', 'seconds')):
                axes[row, col].plot([p[x] for p in median], [p[key] for p in median], marker='.', label=name)
                axes[row, col].set(xlabel=x, title=title)
    if original:
        steps = sorted(original)
        for col in range(3):
            axes[0, col].plot(steps, [original[s][col] for s in steps], 'k--', marker='x', label='original (seed 0)')
    for ax in axes[:, 2]:
        ax.set_yscale('log')
        ax.axhline(1.0, color='gray', lw=0.8)
    axes[0, 0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--dataset', choices=('kitti', 'clip78', 'tiny_drive', 'synthetic'), default='kitti',
                        help='kitti: the original\'s KITTI_tiny setting; clip78 / tiny_drive: KITTI_clip78 / '
                             'KITTI_tiny as packnet-ros train and eval see them')
    parser.add_argument('--recipes', default='paper,online', help=f'comma-separated, of {sorted(RECIPES)}')
    parser.add_argument('--seeds', default='0,1,2')
    parser.add_argument('--steps', type=int, default=300)
    parser.add_argument('--eval-every', type=int, default=50)
    parser.add_argument('--device', default='auto', help='auto (a GPU when there is one), cpu, cuda')
    parser.add_argument('--stride', type=int, default=TripletRules.stride,
                        help='clip78/tiny_drive: frames to the context (at most)')
    parser.add_argument('--context-distance', type=float, default=TripletRules.context_distance,
                        help='clip78/tiny_drive: > 0 picks context frames by travelled distance (metres)')
    parser.add_argument('--synthetic-seed', type=int, default=1)
    parser.add_argument('--rig', default='192,64,80,1.65', help='synthetic camera: width,height,fov_deg,height_m')
    parser.add_argument('--init', help='start every run from this checkpoint (adaptation) instead of scratch')
    parser.add_argument('--out', default='bench_out/learning')
    args = parser.parse_args()
    device = resolve_device(args.device)
    w, h, fov, mount = (float(v) for v in args.rig.split(','))
    if args.dataset == 'kitti':
        data = kitti_tiny()
    elif args.dataset in ('clip78', 'tiny_drive'):
        data = kitti_drive(CLIP78 if args.dataset == 'clip78' else KITTI, args.dataset, stride=args.stride,
                           context_distance=args.context_distance)
    else:
        data = synthetic(args.synthetic_seed, rig=CameraRig(int(w), int(h), fov, mount))
    original = None
    if args.dataset == 'kitti':
        original = ORIGINAL_KITTI
        if os.environ.get('ORIGINAL_CURVE'):
            rerun = json.loads(Path(os.environ['ORIGINAL_CURVE']).read_text())
            original = {int(s): (v['abs_rel'], v['abs_rel_med'], v['scale']) for s, v in rerun.items()}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / args.dataset
    results = {}
    for name in args.recipes.split(','):
        recipe = RECIPES[name]
        curves = []
        for seed in (int(s) for s in args.seeds.split(',')):
            curves.append(run(recipe, data, seed, args.steps, args.eval_every, device, args.init))
            last = curves[-1][-1]
            print(f'{args.dataset:9s} {name:18s} seed {seed}: step {last["step"]} ({last["seconds"]:.0f} s) '
                  f'abs_rel {last["abs_rel"]:.3f}  median-scaled {last["abs_rel_median_scaled"]:.3f}  '
                  f'scale {last["scale_ratio"]:.3f}', flush=True)
        results[name] = {'recipe': asdict(recipe), 'curves': curves, 'median': summarise(curves)}
        for point in results[name]['median']:
            print(f'  {name:18s} median step {point["step"]:4d} {point["seconds"]:6.0f} s  abs_rel '
                  f'{point["abs_rel"]:.3f}  median-scaled {point["abs_rel_median_scaled"]:.3f}  a1 {point["a1"]:.3f}'
                  f'  scale {point["scale_ratio"]:.3f}', flush=True)
        report = {'dataset': args.dataset, 'device': str(device), 'threads': torch.get_num_threads(),
                  'steps': args.steps, 'seeds': args.seeds, 'results': results,
                  'original': {str(k): v for k, v in (original or {}).items()}, 'argv': sys.argv[1:]}
        stem.with_suffix('.json').write_text(json.dumps(report, indent=1))  # after every recipe: partial runs count
    plot(results, stem.with_suffix('.png'), original)
    print(f'wrote {stem}.json and {stem}.png')

if __name__ == '__main__':
    main()
