"""One optimisation step of PackNet-SfM: photometric + smoothness + velocity loss."""
from __future__ import annotations

import copy
import math
import threading
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from packnet_ros.data.stream import Triplet
from packnet_ros.geometry import inv2depth, pose_vec_to_mat
from packnet_ros.image import rgb_to_tensor
from packnet_ros.losses import SelfSupervisedLoss, velocity_loss
from packnet_ros.metrics import hole_fraction
from packnet_ros.networks import PackNet, PoseNet, build_depth_net
from packnet_ros.options import option
from packnet_ros.training import distributed

SCALE_FROM_SPEED = ('loss', 'direct')


class StepInterrupted(Exception):
    """stop() was called during a step: the step was dropped and nothing changed."""


def triplets_to_batch(triplets: list[Triplet], device: torch.device):
    """-> target [B,3,h,w], context 2 x [B,3,h,w] in [0,1], distances [B,2], intrinsics [B,3,3]
    (None unless every triplet carries its own)."""
    images = rgb_to_tensor(np.stack([t.images for t in triplets]), device)  # [B,3,3,h,w]
    distances = torch.from_numpy(np.stack([t.distances for t in triplets])).to(device)
    K = None
    if all(t.intrinsics is not None for t in triplets):
        K = torch.as_tensor(np.stack([t.intrinsics for t in triplets]), dtype=torch.float32, device=device)
    return images[:, 1], [images[:, 0], images[:, 2]], distances, K


def forward_motion(metres: float) -> list[tuple[float, float, float]]:
    """Target -> context translations of a camera moving `metres` per frame along its optical
    axis, for the context order (previous, next): points are farther in the previous frame."""
    return [(0.0, 0.0, metres), (0.0, 0.0, -metres)]


def fresh_networks(arch: str, model_width: float, initial_depth: float = 0.0,
                   motion_prior: float = 0.0) -> tuple[PackNet, PoseNet]:
    """Random networks to train from scratch (seed torch first): depth heads starting near
    `initial_depth` metres and PoseNet near `motion_prior` metres forward per frame, where > 0."""
    depth_net, pose_net = build_depth_net(arch, model_width), PoseNet()
    if initial_depth > 0:
        depth_net.initialize_depth(initial_depth)
    if motion_prior > 0:
        pose_net.initialize_translations(forward_motion(motion_prior))
    return depth_net, pose_net


@dataclass(frozen=True)
class Weights:
    """Both networks' parameters with the learnt global scales folded in: what the session
    announces, goes back to, and scores candidates against."""

    depth_net: dict[str, torch.Tensor]
    pose_net: dict[str, torch.Tensor]
    min_depth: float
    depth_scale: float


@dataclass(frozen=True)
class TrainerState:
    """What a resumed run needs: the weights, the optimizer's moments (None: start afresh) and
    the step the schedules are at."""

    weights: Weights
    optimizer: dict | None
    step: int


@dataclass(frozen=True)
class HeldOutScore:
    """How well a set of weights explains held-out triplets.

    photometric: the self-supervised loss (photometric + smoothness) with PoseNet's own motion;
    it cannot see a global scale. metric_photometric: the same loss with every translation
    stretched to the measured distance, which only depth of the right scale minimises.
    velocity: mean |‖t_pred‖ - distance| relative to the mean distance. holes: the fraction of
    the targets' lower half read as (nearly) infinitely far (metrics.hole_fraction): a collapse
    the photometric losses reward, since a hole explains an object moving with the camera.
    """

    photometric: float
    metric_photometric: float
    velocity: float
    holes: float


MOMENTS = ('exp_avg', 'exp_avg_sq')  # what Adam keeps per parameter besides its step


def unusable_moments(saved: dict, groups: list[dict], shapes: dict[int, torch.Size]) -> str | None:
    """Why an Adam state_dict's moments cannot be resumed into these parameter groups, or None:
    the same groups of the same sizes, and per parameter a finite step and finite moments of
    its shape (the second non-negative)."""
    try:
        saved_groups = saved['param_groups']
        if [len(g['params']) for g in saved_groups] != [len(g['params']) for g in groups]:
            return 'its parameter groups differ from this network\'s'
        for index, slot in saved['state'].items():
            if index not in shapes:
                return f'it has state for parameter {index!r}, which this network lacks'
            if not isinstance(slot, dict) or set(MOMENTS) - set(slot) or 'step' not in slot:
                return f'parameter {index}: state lacks {MOMENTS} or step'
            step = slot['step']
            step = float(step) if isinstance(step, (torch.Tensor, int, float)) and not isinstance(step, bool) \
                else math.nan
            if not (math.isfinite(step) and step >= 0):
                return f'parameter {index}: step {slot["step"]!r} is not a count'
            for name in MOMENTS:
                moment = slot[name]
                if not isinstance(moment, torch.Tensor) or moment.shape != shapes[index]:
                    return f'parameter {index}: {name} is not a tensor of shape {tuple(shapes[index])}'
                if not bool(torch.isfinite(moment).all()) or (name == 'exp_avg_sq' and bool((moment < 0).any())):
                    return f'parameter {index}: {name} is not finite (or negative)'
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        return f'it is not an Adam state_dict ({exc!r})'
    return None


@dataclass
class TrainerConfig:
    """How to train; the training node's parameters carry the same names.

    scale_from_speed: 'loss' is the paper's velocity loss |‖t‖ - speed·Δt|; 'direct' gives
    every predicted translation the measured length (PoseNet keeps only the direction),
    so the photometric loss sees metric motion from the first step. depth_scale_lr > 0
    learns one global depth scale (log space) at that learning rate, folded into the
    network's output depth_scale when saved: scale moves in tens of steps instead of hundreds.
    translation_scale_lr > 0 does the same for PoseNet's translations (which start at
    ~1 cm: the original scales its output by 0.01), folded into its output layer.
    """

    learning_rate: float = option(2e-4, 'Adam learning rate of the networks', low=0.0, high=1.0)
    warmup_steps: int = option(100, 'steps over which the learning rates ramp up from zero (0 = none)', low=0)
    velocity_loss_weight: float = option(0.1, 'weight of |‖t_pred‖ - distance|; 0 disables metric scale', low=0.0)
    velocity_warmup_steps: int = option(0, 'steps over which the velocity loss weight ramps up from zero (0 = none)',
                                        low=0)
    scale_from_speed: str = option('loss', '"loss" (the velocity loss) or "direct" (translations take the measured '
                                           'length)', choices=SCALE_FROM_SPEED)
    depth_scale_lr: float = option(0.0, 'learning rate of one global depth scale (log); 0 = none. Metric scale in '
                                        'tens of steps', low=0.0, high=1.0)
    translation_scale_lr: float = option(0.0, 'learning rate of one global PoseNet translation scale (log); 0 = none',
                                         low=0.0, high=1.0)
    grad_clip: float = option(0.0, 'clip the networks\' gradient norm to this (0 = no clipping)', low=0.0)

    def __post_init__(self) -> None:
        if self.scale_from_speed not in SCALE_FROM_SPEED:
            raise ValueError(f'scale_from_speed must be one of {SCALE_FROM_SPEED}, got {self.scale_from_speed!r}')


class ScaledNetworks(nn.Module):
    """Depth and pose networks with the learnt global log-scales of depth and translation:
    one module, so that DistributedDataParallel sees every trained parameter."""

    def __init__(self, depth_net: PackNet, pose_net: PoseNet):
        super().__init__()
        self.depth_net, self.pose_net = depth_net, pose_net
        self.log_depth_scale = nn.Parameter(torch.zeros(()))
        self.log_translation_scale = nn.Parameter(torch.zeros(()))

    def forward(self, target: torch.Tensor, context: list[torch.Tensor]) -> tuple[list[torch.Tensor], torch.Tensor]:
        """target [B,3,H,W], context N x [B,3,H,W] -> inverse depths S x [B,1,H,W] (every scale
        upsampled to full resolution, as the original does before the loss), pose vectors [B,N,6]."""
        inv_depths = self.depth_net(target)
        if isinstance(inv_depths, torch.Tensor):  # eval mode: a single scale
            inv_depths = [inv_depths]
        inv_depths = [F.interpolate(d, size=target.shape[-2:], mode='nearest') * torch.exp(-self.log_depth_scale)
                      for d in inv_depths]
        pose_vecs = self.pose_net(target, context)
        translations = pose_vecs[..., :3] * torch.exp(self.log_translation_scale)
        return inv_depths, torch.cat([translations, pose_vecs[..., 3:]], -1)


class Trainer:
    """Adam over depth and pose networks. K is the intrinsics at the training resolution.

    The learning rate ramps up linearly over `warmup_steps`: online, the first batches all
    come from the first seconds of driving (often accelerating from standstill, with small
    baselines), and full-rate steps on them were measured to push a fresh network into a
    state it does not recover from within hundreds of steps. The velocity weight ramps up
    over `velocity_warmup_steps`: the velocity loss constrains only ‖t‖, and its gradient
    t/‖t‖ amplifies whatever direction PoseNet starts with; the photometric loss must orient
    the translation first (DEVELOPERS.md has the measurements).

    Under torchrun (a process group started by training.distributed), the networks train as
    one DistributedDataParallel module: each process steps on its own batch, gradients and
    the reported losses are averaged over processes, and a non-finite loss anywhere skips
    the step everywhere, so every process keeps the same weights.

    Weights and optimizer state change only inside `commit_lock` (optimizer.step), so another
    thread holding it sees the state of a completed step even while a forward or backward
    pass is in flight. stop() drops the step in flight at its next phase boundary.
    """

    def __init__(self, depth_net: PackNet, pose_net: PoseNet, K: np.ndarray, config: TrainerConfig | None = None,
                 device: torch.device | None = None, loss: SelfSupervisedLoss | None = None):
        self.config = config or TrainerConfig()
        self.device = device or torch.device('cpu')
        self.networks = ScaledNetworks(depth_net, pose_net).to(self.device)
        self.depth_net, self.pose_net = self.networks.depth_net, self.networks.pose_net
        self.log_depth_scale = self.networks.log_depth_scale
        self.log_translation_scale = self.networks.log_translation_scale
        self.set_intrinsics(K)
        self.loss = loss or SelfSupervisedLoss()
        groups = [{'params': list(depth_net.parameters()) + list(pose_net.parameters()),
                   'lr': self.config.learning_rate, 'base_lr': self.config.learning_rate}]
        for scale, lr in ((self.log_depth_scale, self.config.depth_scale_lr),
                          (self.log_translation_scale, self.config.translation_scale_lr)):
            scale.requires_grad_(lr > 0)
            if lr > 0:
                groups.append({'params': [scale], 'lr': lr, 'base_lr': lr})
        self.optimizer = torch.optim.Adam(groups)
        self.replicated = distributed.replicate(self.networks, self.device)
        self.step_count = 0
        self.commit_lock = threading.RLock()
        self.stopping = threading.Event()

    def stop(self) -> None:
        """Drop the step in flight (if any) and every later one. Not under torchrun, where
        every process must join each step's collectives."""
        self.stopping.set()

    def _check_stop(self) -> None:
        if self.stopping.is_set() and not distributed.active():
            self.optimizer.zero_grad(set_to_none=True)
            raise StepInterrupted(f'stopped during step {self.step_count + 1}')

    def set_intrinsics(self, K: np.ndarray) -> None:
        """Intrinsics [3,3] at the training resolution (e.g. when a new camera_info arrives)."""
        self.K = torch.as_tensor(K, dtype=torch.float32, device=self.device)

    def losses(self, triplets: list[Triplet], networks: nn.Module | None = None) -> dict[str, torch.Tensor]:
        """Losses of a batch through `networks` (default: the training module, replicated
        across processes when distributed)."""
        target, context, distances, K, inv_depths, predicted = self._forward(triplets, networks or self.replicated)
        poses = predicted
        if self.config.scale_from_speed == 'direct':
            poses = self._at_measured_length(predicted, distances)
        out = self.loss(target, context, inv_depths, K, poses)
        out['velocity'] = velocity_loss(predicted, distances)
        if self.config.scale_from_speed == 'loss':
            out['loss'] = out['loss'] + self.current_velocity_weight() * out['velocity']
        out['scale'] = torch.stack([p[:, :3, 3].norm(dim=-1) for p in predicted], 1).mean() / distances.mean()
        return out

    def _forward(self, triplets: list[Triplet], networks: nn.Module):
        """-> target, context, distances [B,2], K [B,3,3], inverse depths, predicted poses N x [B,4,4]."""
        target, context, distances, K = triplets_to_batch(triplets, self.device)
        inv_depths, pose_vecs = networks(target, context)
        predicted = [pose_vec_to_mat(pose_vecs[:, j]) for j in range(len(context))]
        if K is None:
            K = self.K.expand(target.shape[0], 3, 3)
        return target, context, distances, K, inv_depths, predicted

    @classmethod
    def _at_measured_length(cls, poses: list[torch.Tensor], distances: torch.Tensor) -> list[torch.Tensor]:
        """Each context's poses [B,4,4] with translations stretched to the measured distances [B,N]."""
        return [cls._with_length(p, distances[:, j]) for j, p in enumerate(poses)]

    @staticmethod
    def _with_length(pose: torch.Tensor, length: torch.Tensor) -> torch.Tensor:
        """pose [B,4,4] with its translation rescaled to `length` [B] metres (direction kept)."""
        t = pose[:, :3, 3]
        scaled = pose.clone()
        scaled[:, :3, 3] = t * (length / t.norm(dim=-1).clamp(min=1e-9)).unsqueeze(-1)
        return scaled

    def step(self, triplets: list[Triplet]) -> dict[str, float] | None:
        """One optimisation step; None (and nothing changed) if the loss is not finite."""
        if not distributed.active():
            return self._step(triplets)
        try:
            return self._step(triplets)
        except distributed.DistributedError:
            raise
        except RuntimeError as exc:  # in a collective of the backward pass, or this process's own failure
            raise distributed.DistributedError(f'training step {self.step_count + 1} failed: {exc}') from exc

    def _step(self, triplets: list[Triplet]) -> dict[str, float] | None:
        self._check_stop()
        self.networks.train()
        out = self.losses(triplets)
        self._check_stop()
        self.optimizer.zero_grad(set_to_none=True)
        if distributed.active():
            out['loss'].backward()  # every process joins the gradient average, even when it will be skipped
            out = distributed.mean_of(out)
        if not torch.isfinite(out['loss']):
            self.optimizer.zero_grad(set_to_none=True)
            return None
        if not distributed.active():
            out['loss'].backward()
        if self.config.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.optimizer.param_groups[0]['params'], self.config.grad_clip)
        ramp = self.warmup_factor()
        with self.commit_lock:
            self._check_stop()
            for group in self.optimizer.param_groups:
                group['lr'] = group['base_lr'] * ramp
            self.optimizer.step()
            self.step_count += 1
        return {k: float(v.detach()) for k, v in out.items()} | {'depth_scale': self.depth_scale()}

    def current_velocity_weight(self) -> float:
        c = self.config
        if c.velocity_warmup_steps <= 0:
            return c.velocity_loss_weight
        return c.velocity_loss_weight * min(1.0, self.step_count / c.velocity_warmup_steps)

    def warmup_factor(self) -> float:
        """Fraction of the learning rates used by the next step (linear warm-up, then 1)."""
        if self.config.warmup_steps <= 0:
            return 1.0
        return min(1.0, (self.step_count + 1) / self.config.warmup_steps)

    def learning_rate(self) -> float:
        """Learning rate of the networks at the next step."""
        return self.config.learning_rate * self.warmup_factor()

    def depth_scale(self) -> float:
        """The learned global depth scale not yet folded into the network."""
        return math.exp(float(self.log_depth_scale.detach()))

    def fold_scales(self) -> None:
        """Move the learned scales into the networks (depth: the network's output depth_scale;
        translation: PoseNet's linear output layer), so the saved networks alone compute them;
        the functions computed do not change."""
        with torch.no_grad():
            self.depth_net.depth_scale *= self.depth_scale()
            self.pose_net.scale_translations(math.exp(float(self.log_translation_scale.detach())))
            self.log_depth_scale.zero_()
            self.log_translation_scale.zero_()

    def state(self) -> TrainerState:
        """Everything a resumed run needs: weights (learnt scales folded in), optimizer moments and
        the step the schedules (LR and velocity warm-up) are at. Tensors are copies, safe to keep."""
        return TrainerState(self.weights(), copy.deepcopy(self.optimizer.state_dict()), self.step_count)

    def restore(self, state: TrainerState) -> str | None:
        """Restore what state() returned (or the same pieces read from a checkpoint).

        Only the optimizer's moments are restored, never its hyperparameters: learning rates,
        betas and the rest come from this trainer's config (a resumed run takes changed
        settings, and a poisoned lr in a file cannot reach a step). Moments that do not suit
        these networks start afresh; the reason is returned (None when restored or absent)."""
        self._use(state.weights)
        self.step_count = state.step
        if not state.optimizer:
            return None
        current = self.optimizer.state_dict()
        reason = unusable_moments(state.optimizer, current['param_groups'], self._parameter_shapes())
        if reason is None:
            self.optimizer.load_state_dict({'state': state.optimizer['state'],
                                            'param_groups': current['param_groups']})
        return reason

    def reset(self, weights: Weights) -> None:
        """Back to `weights` with fresh optimizer moments."""
        self._use(weights)
        self.optimizer.state.clear()

    def _parameter_shapes(self) -> dict[int, torch.Size]:
        """Optimizer state index -> shape of the parameter it belongs to."""
        params = [p for group in self.optimizer.param_groups for p in group['params']]
        return {i: p.shape for i, p in enumerate(params)}

    def weights(self) -> Weights:
        """Copies of both networks' weights with the learnt scales folded in (to compare
        candidates on held-out data)."""
        self.fold_scales()
        return Weights(copy.deepcopy(self.depth_net.state_dict()), copy.deepcopy(self.pose_net.state_dict()),
                       self.depth_net.min_depth, self.depth_net.depth_scale)

    def _use(self, weights: Weights) -> None:
        self.depth_net.load_state_dict(weights.depth_net)
        self.pose_net.load_state_dict(weights.pose_net)
        self.depth_net.set_min_depth(weights.min_depth)
        self.depth_net.depth_scale = weights.depth_scale
        with torch.no_grad():
            self.log_depth_scale.zero_()
            self.log_translation_scale.zero_()

    @torch.no_grad()
    def finite_depth(self, triplets: list[Triplet]) -> bool:
        """Whether the live depth network (as it would be served: eval mode, scales folded in)
        gives finite depth on these triplets' targets."""
        self.fold_scales()
        target = triplets_to_batch(triplets, self.device)[0]
        self.depth_net.eval()
        with torch.no_grad():
            return bool(torch.isfinite(inv2depth(self.depth_net(target))).all())

    def evaluate(self, triplets: list[Triplet], weights: Weights | None = None) -> HeldOutScore | None:
        """How well the live networks, or `weights` (from weights(); the live ones are restored
        afterwards), explain held-out triplets (train-mode networks, no update); None without any."""
        if not triplets:
            return None
        live = self.weights() if weights is not None else None
        if weights is not None:
            self._use(weights)
        try:
            self.networks.train()
            target, context, distances, K, inv_depths, predicted = self._forward(triplets, self.networks)
            own = self.loss(target, context, inv_depths, K, predicted)
            metric = self.loss(target, context, inv_depths, K, self._at_measured_length(predicted, distances))
            return HeldOutScore(photometric=float(own['loss']), metric_photometric=float(metric['loss']),
                                velocity=float(velocity_loss(predicted, distances) / distances.mean()),
                                holes=hole_fraction(inv2depth(inv_depths[0])))
        finally:
            if live is not None:
                self._use(live)
