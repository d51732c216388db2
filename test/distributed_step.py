"""One training step as one of several processes (run under torchrun), or alone on every triplet.

    python -m torch.distributed.run --nproc_per_node 2 distributed_step.py OUT
    python distributed_step.py OUT

The triplets and the initial networks are the same in every process; under torchrun each
process takes its own share of the batch. The first process saves the weights after the
step and the gradients the step used to OUT/weights.pt.
"""
import sys

import numpy as np
import torch

from packnet_ros.data.stream import Triplet
from packnet_ros.networks import PoseNet, build_depth_net
from packnet_ros.training import distributed
from packnet_ros.training.trainer import Trainer, TrainerConfig, forward_motion

BATCH = 4


def triplets() -> list[Triplet]:
    rng = np.random.default_rng(0)
    K = np.array([[60.0, 0, 48], [0, 60.0, 16], [0, 0, 1]])
    return [Triplet(rng.integers(0, 256, (3, 32, 96, 3), dtype=np.uint8), np.array([0.8 + 0.1 * i, 0.9], np.float32),
                    float(i), K) for i in range(BATCH)]


def main(out: str) -> None:
    processes, device = distributed.start('cpu')
    torch.manual_seed(0)
    depth_net, pose_net = build_depth_net('PackNetSlim01', 0.125), PoseNet()
    pose_net.initialize_translations(forward_motion(0.5))
    config = TrainerConfig(learning_rate=1e-3, warmup_steps=0, velocity_loss_weight=1.0, depth_scale_lr=0.05,
                           translation_scale_lr=0.05)
    trainer = Trainer(depth_net, pose_net, np.eye(3), config, torch.device(device))
    batch = triplets()
    if processes:
        share = BATCH // processes.world_size
        batch = batch[processes.rank * share:(processes.rank + 1) * share]
    losses = trainer.step(batch)
    if distributed.is_main():
        grads = {name: p.grad.clone() for name, p in trainer.networks.named_parameters() if p.grad is not None}
        weights = {name: p.detach().clone() for name, p in trainer.networks.named_parameters()}
        torch.save({'weights': weights, 'grads': grads, 'losses': losses}, f'{out}/weights.pt')
    distributed.stop()


if __name__ == '__main__':
    main(sys.argv[1])
