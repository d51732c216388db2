"""Training benchmark: step time per model and resolution, triplet ingest rate while training,
and offline training (`packnet-ros train`) throughput on 1 and 2 processes with the
DataLoader's share of the time.

make bench   (or: .venv/bin/python benchmarks/bench_training.py --out bench_out/training.json)
"""
from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

from packnet_ros.data.synthetic import CameraRig, write_kitti_drive
from packnet_ros.networks import PackNet01, PackNetSlim01, PoseNet
from packnet_ros.training import ReplayBuffer, Trainer, TrainerConfig, Triplet, TripletAccumulator

MODELS = {'PackNetSlim01-w0.25': lambda: PackNetSlim01(width=0.25), 'PackNet01': lambda: PackNet01()}
SIZES = ((96, 320), (192, 640))


def triplets(h: int, w: int, n: int) -> list[Triplet]:
    rng = np.random.default_rng(0)
    return [Triplet(rng.integers(0, 256, (3, h, w, 3), dtype=np.uint8), np.array([0.8, 0.8], np.float32), float(i))
            for i in range(n)]


def step_time(name: str, h: int, w: int, batch: int, repeat: int, device: torch.device) -> float:
    torch.manual_seed(0)
    K = np.array([[0.58 * w, 0, w / 2], [0, 1.92 * h, h / 2], [0, 0, 1]])
    trainer = Trainer(MODELS[name](), PoseNet(), K, TrainerConfig(learning_rate=1e-4, warmup_steps=0), device=device)
    data = triplets(h, w, batch)
    trainer.step(data)  # warm-up
    times = []
    for _ in range(repeat):
        if device.type == 'cuda':
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        trainer.step(data)
        if device.type == 'cuda':
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def ingest_rate(seconds: float = 10.0) -> dict:
    """Frames (1242x375 RGB, as KITTI) + odometry into the accumulator and buffer, while a
    trainer thread runs the small model at 96x320: how many triplets per second get in."""
    h, w = 96, 320
    acc = TripletAccumulator(h, w)
    buffer = ReplayBuffer(500, 256 << 20, seed=0)
    lock = threading.Lock()
    K = np.array([[0.58 * w, 0, w / 2], [0, 1.92 * h, h / 2], [0, 0, 1]])
    trainer = Trainer(PackNetSlim01(width=0.25), PoseNet(), K, TrainerConfig(learning_rate=1e-4, warmup_steps=0))
    for t in triplets(h, w, 8):
        buffer.add(t)
    stop = threading.Event()
    steps = [0]

    def train():
        while not stop.is_set():
            with lock:
                batch = buffer.sample(4)
            trainer.step(batch)
            steps[0] += 1

    worker = threading.Thread(target=train)
    worker.start()
    frame = np.random.default_rng(1).integers(0, 256, (375, 1242, 3), dtype=np.uint8)
    emitted, t, start = 0, 0.0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        with lock:
            acc.add_speed(t, 10.0)
            for triplet in acc.add_frame(t, frame):
                buffer.add(triplet)
                emitted += 1
        t += 0.1
    elapsed = time.perf_counter() - start
    stop.set()
    worker.join()
    return {'triplets_per_s': emitted / elapsed, 'train_steps_per_s_meanwhile': steps[0] / elapsed}


def offline_throughput(drive: Path, processes: int, steps: int, workers: int) -> dict:
    """`packnet-ros train` under torchrun on a synthetic drive: images/s and the share of time
    spent waiting for the DataLoader (PackNetSlim01 x0.25, 320x96, batch 4 per process)."""
    with tempfile.TemporaryDirectory() as out:
        command = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', str(processes),
                   '-m', 'packnet_ros.cli', 'train', '--data', str(drive), '--out', out, '--steps', str(steps),
                   '--height', '96', '--width', '320', '--batch-size', '4', '--device', 'cpu', '--workers',
                   str(workers), '--no-tensorboard', '--set', f'save_every_steps={steps}']
        result = subprocess.run(command, capture_output=True, text=True)
    match = re.search(r'throughput: ([\d.]+) images/s; waiting for data ([\d.]+) %', result.stdout)
    if result.returncode != 0 or not match:
        raise RuntimeError(f'{" ".join(command)} failed:\n{result.stdout}\n{result.stderr}')
    return {'processes': processes, 'workers': workers, 'steps': steps, 'images_per_s': float(match[1]),
            'data_share': float(match[2]) / 100}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--out', default='bench_out/training.json')
    parser.add_argument('--repeat', type=int, default=3)
    parser.add_argument('--offline-steps', type=int, default=30)
    parser.add_argument('--workers', type=int, default=2, help='DataLoader workers of the offline runs')
    parser.add_argument('--offline-only', action='store_true', help='only the offline throughput')
    args = parser.parse_args()
    devices = [torch.device('cpu')] + ([torch.device('cuda')] if torch.cuda.is_available() else [])
    rows = []
    for device in [] if args.offline_only else devices:
        for name in MODELS:
            for h, w in SIZES:
                batch = 4 if name != 'PackNet01' or device.type == 'cuda' else 1
                seconds = step_time(name, h, w, batch, args.repeat, device)
                rows.append({'model': name, 'size': f'{w}x{h}', 'batch': batch, 'device': str(device),
                             'step_s': seconds, 'samples_per_s': batch / seconds})
                print(f'train  {name:22s} {w}x{h:<4d} batch {batch}  {device.type:4s} {seconds:8.3f} s/step',
                      flush=True)
    ingest = {}
    if not args.offline_only:
        ingest = ingest_rate()
        print(f'ingest {ingest["triplets_per_s"]:.1f} triplets/s while training '
              f'({ingest["train_steps_per_s_meanwhile"]:.2f} steps/s)', flush=True)
    offline = []
    with tempfile.TemporaryDirectory() as folder:
        drive = write_kitti_drive(folder, 80, seed=2, camera=CameraRig(320, 96))
        for processes in (1, 2):
            row = offline_throughput(drive, processes, args.offline_steps, args.workers)
            offline.append(row)
            print(f'offline train  {processes} process(es), {args.workers} loader workers: '
                  f'{row["images_per_s"]:.1f} images/s, waiting for data {100 * row["data_share"]:.1f} %', flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({'steps': rows, 'ingest': ingest, 'offline': offline,
                               'threads': torch.get_num_threads()}, indent=2))
    print(f'wrote {out}')


if __name__ == '__main__':
    main()
