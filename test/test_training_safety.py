"""training_node's safety nets, driven directly: rollback on divergence, validation before announcing."""
import numpy as np
import pytest
import rclpy
import torch
from rclpy.context import Context
from rclpy.parameter import Parameter

from packnet_ros.checkpoints import read_metadata
from packnet_ros.nodes.training_node import TrainingNode
from ros_helpers import ros_environment
from test_training import kitti_triplets


@pytest.fixture
def node(tmp_path):
    ros_environment()
    context = Context()
    rclpy.init(context=context)
    overrides = [Parameter('checkpoint_dir', value=str(tmp_path / 'ckpts')), Parameter('width', value=192),
                 Parameter('height', value=64), Parameter('device', value='cpu'),
                 Parameter('min_triplets', value=10 ** 6),  # the background trainer stays idle
                 Parameter('learning_rate', value=1e-3), Parameter('warmup_steps', value=0)]
    node = TrainingNode(context=context, parameter_overrides=overrides)
    triplets, K = kitti_triplets()
    node.K = K
    node.trainer.set_intrinsics(K)
    node.triplets = triplets
    yield node
    node.stop()
    node.destroy_node()
    rclpy.shutdown(context=context)


def weights(net):
    return {k: v.clone() for k, v in net.state_dict().items()}


def test_divergence_rolls_back_to_the_last_checkpoint(node):
    for _ in range(3):
        out = node.trainer.step(node.triplets)
        node.loss_ema = out['loss']
    node.save_and_announce()
    saved, saved_step = weights(node.trainer.depth_net), node.trainer.step_count
    assert read_metadata(node.last_saved)['step'] == saved_step
    node.trainer.step(node.triplets)
    node.loss_ema = 10 * node.saved_ema  # the running loss blew up
    assert node._diverged()
    node.roll_back()
    assert node.stats['rollbacks'] == 1 and node.trainer.step_count == saved_step
    assert all(torch.equal(v, saved[k]) for k, v in node.trainer.depth_net.state_dict().items())
    assert not node._diverged()


def test_worse_checkpoint_is_saved_but_not_announced(node):
    announced = []
    node.pub_checkpoint.publish = lambda msg: announced.append(msg.data)
    node.holdout = node.triplets
    node.loss_ema = 0.2
    node.save_and_announce()
    assert len(announced) == 1  # the first one has nothing to compare with
    with torch.no_grad():  # make the networks clearly worse on the held-out triplets
        for p in node.trainer.depth_net.parameters():
            p.add_(torch.randn_like(p) * p.abs().mean())
    node.trainer.step_count += 1
    node.save_and_announce()
    current, previous = node.stats['holdout']
    assert current > previous and node.stats['not_announced'] == 1 and len(announced) == 1
    assert node.last_saved.exists() and node.announced_path != node.last_saved
    node.params['validate_before_announce'] = False
    node.trainer.step_count += 1
    node.save_and_announce()
    assert len(announced) == 2 and np.isfinite(current)
