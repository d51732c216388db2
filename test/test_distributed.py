"""Training on several processes (torchrun, gloo on CPU): same step as one process on the whole
batch, `packnet-ros train` under torchrun, and a killed process that leaves a resumable run."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from packnet_ros.data.synthetic import CameraRig, write_kitti_drive
from packnet_ros.model.checkpoints import load_checkpoint

from helpers import DEADLINE

HERE = Path(__file__).resolve().parent
TORCHRUN = [sys.executable, '-m', 'torch.distributed.run', '--standalone']


def run(args: list[str], timeout: float = 4 * DEADLINE, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, **kwargs)


def test_two_processes_step_like_one_on_the_whole_batch(tmp_path):
    alone, together = tmp_path / 'alone', tmp_path / 'together'
    alone.mkdir()
    together.mkdir()
    single = run([sys.executable, str(HERE / 'distributed_step.py'), str(alone)])
    assert single.returncode == 0, single.stderr
    double = run(TORCHRUN + ['--nproc_per_node', '2', str(HERE / 'distributed_step.py'), str(together)])
    assert double.returncode == 0, double.stderr
    a, b = torch.load(alone / 'weights.pt'), torch.load(together / 'weights.pt')
    assert a['losses']['loss'] == pytest.approx(b['losses']['loss'], rel=1e-5)
    assert a['grads'].keys() == b['grads'].keys() and len(a['grads']) == len(a['weights'])
    largest = max(g.abs().max() for g in a['grads'].values())
    assert largest > 1e-2
    for name, grad in a['grads'].items():  # DDP's average of the halves = the gradient of the whole batch
        torch.testing.assert_close(b['grads'][name], grad, atol=1e-6, rtol=0, msg=name)
    for name, weights in a['weights'].items():
        # Adam's first step moves every weight by about lr * sign(gradient); convolution biases
        # in front of GroupNorm have a mathematically zero gradient whose float noise can take
        # either sign, so those elements are compared only where the gradient is real.
        real = (a['grads'][name].abs() > 1e-6) & (b['grads'][name].abs() > 1e-6)
        assert real.any() or name.endswith('bias'), name
        torch.testing.assert_close(b['weights'][name][real], weights[real], atol=1e-5, rtol=0, msg=name)


@pytest.fixture(scope='module')
def drive(tmp_path_factory):
    return write_kitti_drive(tmp_path_factory.mktemp('synth'), 40, seed=5, camera=CameraRig(96, 32), workers=1)


def train_args(drive: Path, out: Path, steps: int) -> list[str]:
    return ['-m', 'packnet_ros.cli', 'train', '--data', str(drive), '--out', str(out), '--steps', str(steps),
            '--height', '32', '--width', '96', '--batch-size', '2', '--device', 'cpu', '--workers', '0',
            '--set', 'model_width=0.125', '--set', 'save_every_steps=2', '--set', 'keep_last=100']


def test_train_under_torchrun_then_resume_alone(drive, tmp_path):
    out = tmp_path / 'ckpts'
    result = run(TORCHRUN + ['--nproc_per_node', '2'] + train_args(drive, out, 4))
    assert result.returncode == 0, result.stdout + result.stderr
    assert 'trained to step 4 on 2 processes (gloo)' in result.stdout
    assert result.stdout.count('trained to step') == 1  # rank 0 alone reports and writes
    assert sorted(p.name for p in out.glob('step_*.ckpt')) == ['step_000000002.ckpt', 'step_000000004.ckpt']
    assert list((out / 'tensorboard').glob('events.out.tfevents.*'))
    resumed = run([sys.executable] + train_args(drive, out, 6) + ['--resume'])
    assert resumed.returncode == 0, resumed.stderr
    assert 'resumed from' in resumed.stdout and 'step_000000004.ckpt' in resumed.stdout
    assert load_checkpoint(out / 'step_000000006.ckpt').step == 6


def _worker_pid(parent: int, rank: int) -> int | None:
    """The torchrun worker process of `rank` (read from its environment)."""
    for child in Path(f'/proc/{parent}/task/{parent}/children').read_text().split():
        try:
            environ = Path(f'/proc/{child}/environ').read_bytes().split(b'\0')
        except OSError:
            continue
        if f'RANK={rank}'.encode() in environ:
            return int(child)
    return None


def test_killed_process_fails_the_job_and_resume_continues(drive, tmp_path):
    out = tmp_path / 'ckpts'
    job = subprocess.Popen(TORCHRUN + ['--nproc_per_node', '2'] + train_args(drive, out, 100000),
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 4 * DEADLINE
        while not list(out.glob('step_*.ckpt')) and time.monotonic() < deadline and job.poll() is None:
            time.sleep(0.2)
        assert list(out.glob('step_*.ckpt')), 'no checkpoint written'
        victim = _worker_pid(job.pid, rank=1)
        assert victim is not None
        os.kill(victim, signal.SIGKILL)
        output, _ = job.communicate(timeout=4 * DEADLINE)
    finally:
        if job.poll() is None:
            job.kill()
            job.wait()
    assert job.returncode != 0
    assert 'Signal 9 (SIGKILL)' in output and 'rank' in output, output[-3000:]
    newest = max(out.glob('step_*.ckpt'))
    step = load_checkpoint(newest).step  # the newest final-name checkpoint is complete
    resumed = run([sys.executable] + train_args(drive, out, step + 2) + ['--resume'])
    assert resumed.returncode == 0, resumed.stderr
    assert f'resumed from {newest} at step {step}' in resumed.stdout
    assert load_checkpoint(out / f'step_{step + 2:09d}.ckpt').step == step + 2
