"""One optimisation step of PackNet-SfM: photometric + smoothness + velocity loss."""
from __future__ import annotations

import copy
import math

import numpy as np
import torch
import torch.nn.functional as F

from packnet_ros.geometry import pose_vec_to_mat
from packnet_ros.losses import SelfSupervisedLoss, velocity_loss
from packnet_ros.networks import PackNet, PoseNet
from packnet_ros.training.accumulator import Triplet


def triplets_to_batch(triplets: list[Triplet], device: torch.device):
    """-> target [B,3,h,w], context 2 x [B,3,h,w] in [0,1], distances [B,2]."""
    images = torch.from_numpy(np.stack([t.images for t in triplets])).to(device)  # [B,3,h,w,3]
    images = images.permute(0, 1, 4, 2, 3).float().div_(255.0)
    distances = torch.from_numpy(np.stack([t.distances for t in triplets])).to(device)
    return images[:, 1], [images[:, 0], images[:, 2]], distances


class Trainer:
    """Adam over depth and pose networks. K is the intrinsics at the training resolution.

    The learning rate ramps up linearly over `warmup_steps`: online, the first batches all
    come from the first seconds of driving (often accelerating from standstill, with small
    baselines), and full-rate steps on them were measured to push a fresh network into a
    state it does not recover from within hundreds of steps. The velocity weight ramps up
    over `velocity_warmup_steps`: the velocity loss constrains only ‖t‖, and its gradient
    t/‖t‖ amplifies whatever direction PoseNet starts with; the photometric loss must orient
    the translation first (DEVELOPERS.md has the measurements).
    """

    def __init__(self, depth_net: PackNet, pose_net: PoseNet, K: np.ndarray, lr: float = 2e-4,
                 velocity_weight: float = 0.1, device: torch.device | None = None,
                 loss: SelfSupervisedLoss | None = None, warmup_steps: int = 100,
                 velocity_warmup_steps: int = 0):
        self.device = device or torch.device('cpu')
        self.depth_net = depth_net.to(self.device)
        self.pose_net = pose_net.to(self.device)
        self.set_intrinsics(K)
        self.velocity_weight = velocity_weight
        self.lr = lr
        self.warmup_steps = warmup_steps
        self.velocity_warmup_steps = velocity_warmup_steps
        self.loss = loss or SelfSupervisedLoss()
        self.optimizer = torch.optim.Adam(list(depth_net.parameters()) + list(pose_net.parameters()), lr=lr)
        self.step_count = 0
        self.skipped_nonfinite = 0

    def set_intrinsics(self, K: np.ndarray) -> None:
        """Intrinsics [3,3] at the training resolution (e.g. when a new camera_info arrives)."""
        self.K = torch.as_tensor(K, dtype=torch.float32, device=self.device)

    def losses(self, triplets: list[Triplet]) -> dict[str, torch.Tensor]:
        target, context, distances = triplets_to_batch(triplets, self.device)
        inv_depths = self.depth_net(target)
        if isinstance(inv_depths, torch.Tensor):  # eval mode: a single scale
            inv_depths = [inv_depths]
        # As the original: every scale is upsampled to full resolution before the loss.
        inv_depths = [F.interpolate(d, size=target.shape[-2:], mode='nearest') for d in inv_depths]
        pose_vecs = self.pose_net(target, context)
        poses = [pose_vec_to_mat(pose_vecs[:, j]) for j in range(len(context))]
        K = self.K.expand(target.shape[0], 3, 3)
        out = self.loss(target, context, inv_depths, K, poses)
        out['velocity'] = velocity_loss(poses, distances)
        out['loss'] = out['loss'] + self.current_velocity_weight() * out['velocity']
        out['scale'] = torch.stack([p[:, :3, 3].norm(dim=-1) for p in poses], 1).mean() / distances.mean()
        return out

    def step(self, triplets: list[Triplet]) -> dict[str, float] | None:
        """One optimisation step; None (and nothing changed) if the loss is not finite."""
        self.depth_net.train()
        self.pose_net.train()
        out = self.losses(triplets)
        if not torch.isfinite(out['loss']):
            self.skipped_nonfinite += 1
            return None
        self.optimizer.zero_grad(set_to_none=True)
        out['loss'].backward()
        for group in self.optimizer.param_groups:
            group['lr'] = self.learning_rate()
        self.optimizer.step()
        self.step_count += 1
        return {k: float(v.detach()) for k, v in out.items()}

    def current_velocity_weight(self) -> float:
        if self.velocity_warmup_steps <= 0:
            return self.velocity_weight
        return self.velocity_weight * min(1.0, self.step_count / self.velocity_warmup_steps)

    def learning_rate(self) -> float:
        """Learning rate of the next step (linear warm-up, then constant)."""
        if self.warmup_steps <= 0:
            return self.lr
        return self.lr * min(1.0, (self.step_count + 1) / self.warmup_steps)

    def state_dict(self) -> dict:
        """Everything a resumed run needs: weights, optimizer moments and the step the
        schedules (LR and velocity warm-up) are at. Tensors are copies, safe to keep."""
        return {**self.weights(), 'optimizer': copy.deepcopy(self.optimizer.state_dict()),
                'step': self.step_count}

    def load_state_dict(self, state: dict) -> None:
        """Restore what state_dict() returned (or the same pieces read from a checkpoint);
        an absent optimizer state starts the moments afresh."""
        self.depth_net.load_state_dict(state['depth_net'])
        self.pose_net.load_state_dict(state['pose_net'])
        if state.get('optimizer'):
            self.optimizer.load_state_dict(state['optimizer'])
        self.step_count = int(state['step'])

    def weights(self) -> dict[str, dict[str, torch.Tensor]]:
        """Copies of both networks' weights (to compare candidates on held-out data)."""
        return {'depth_net': copy.deepcopy(self.depth_net.state_dict()),
                'pose_net': copy.deepcopy(self.pose_net.state_dict())}

    @torch.no_grad()
    def evaluate(self, triplets: list[Triplet], weights: dict | None = None) -> float:
        """Mean total loss on held-out triplets (train-mode networks, no update), of the live
        networks or of `weights` (from weights(); the live ones are restored afterwards)."""
        if not triplets:
            return math.nan
        live = self.weights() if weights is not None else None
        if weights is not None:
            self.depth_net.load_state_dict(weights['depth_net'])
            self.pose_net.load_state_dict(weights['pose_net'])
        try:
            self.depth_net.train()
            self.pose_net.train()
            return float(self.losses(triplets)['loss'])
        finally:
            if live is not None:
                self.depth_net.load_state_dict(live['depth_net'])
                self.pose_net.load_state_dict(live['pose_net'])
