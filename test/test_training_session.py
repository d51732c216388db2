"""The training session's policy, without ROS: resume, rollback, saving, validation, rotation."""
import math

import numpy as np
import pytest
import torch

from packnet_ros.model.checkpoints import load_checkpoint, save_checkpoint
from packnet_ros.networks import PackNetSlim01, PoseNet
from packnet_ros.training import SessionConfig, TrainingSession, Triplet, Validation
from packnet_ros.training.trainer import HeldOutScore

from helpers import SHIPPED_MODEL, kitti_triplets, synthetic_holdout


@pytest.fixture(scope='module')
def kitti():
    return kitti_triplets()


def session_for(tmp_path, kitti, **overrides):
    triplets, K = kitti
    settings = dict(height=64, width=192, learning_rate=1e-3, warmup_steps=0, min_triplets=2, batch_size=2,
                    holdout_every=0, save_every_steps=10 ** 6, save_every_seconds=1e9)
    config = SessionConfig(checkpoint_dir=tmp_path / 'ckpts', **{**settings, **overrides})
    session = TrainingSession(config)
    session.set_intrinsics(K)
    session.add(triplets)
    return session


def weights(net):
    return {k: v.clone() for k, v in net.state_dict().items()}


def test_trains_once_ready_and_saves_on_schedule(tmp_path, kitti):
    session = session_for(tmp_path, kitti, save_every_steps=3, max_steps=4)
    results = [session.step() for _ in range(5)]
    assert [r is not None for r in results] == [True] * 4 + [False]  # max_steps reached
    assert [r.saved is not None for r in results[:4]] == [False, False, True, True]  # every 3, and the last
    assert results[2].announce == results[2].saved  # nothing to compare with yet: announced
    assert load_checkpoint(results[3].saved).step == 4 and session.finished


def test_not_ready_without_intrinsics_or_enough_triplets(tmp_path, kitti):
    session = TrainingSession(SessionConfig(checkpoint_dir=tmp_path, height=64, width=192, min_triplets=3))
    assert session.step() is None
    session.add(kitti[0][:3])
    assert session.step() is None  # no camera_info yet
    session.set_intrinsics(kitti[1])
    assert session.ready()


def test_holdout_takes_every_nth_triplet(tmp_path, kitti):
    triplets, _ = kitti
    session = TrainingSession(SessionConfig(checkpoint_dir=tmp_path, height=64, width=192, holdout_every=2,
                                            holdout_size=1))
    session.add(triplets)  # 4 triplets: 2nd and 4th held out, the newest one kept
    assert session.buffer_fill()[0] == 2 and [t.stamp for t in session.holdout] == [triplets[3].stamp]


def test_nonfinite_step_is_skipped_and_counted(tmp_path, kitti):
    session = session_for(tmp_path, kitti, min_triplets=1)
    session.buffer.items.clear()
    triplet = kitti[0][0]
    session.add([Triplet(triplet.images, np.array([np.nan, 1.0], np.float32), triplet.stamp)])
    before = weights(session.trainer.depth_net)
    result = session.step()
    assert result.losses is None and 'non-finite' in result.error and session.stats.nonfinite_steps == 1
    assert session.step_count == 0
    assert all(torch.equal(before[k], v) for k, v in session.trainer.depth_net.state_dict().items())


def test_divergence_rolls_back_to_the_last_checkpoint(tmp_path, kitti):
    session = session_for(tmp_path, kitti)
    for _ in range(3):
        session.step()
    saved, _ = session.checkpoint()
    kept, kept_step = weights(session.trainer.depth_net), session.step_count
    session.saved_ema = session.stats.loss_ema / 10  # from here on, the running loss looks 10x worse
    result = session.step()
    assert result.rolled_back_to == saved and session.stats.rollbacks == 1 and session.step_count == kept_step
    assert all(torch.equal(v, kept[k]) for k, v in session.trainer.depth_net.state_dict().items())
    assert not session._diverged()


def test_worse_checkpoint_is_saved_but_not_announced(tmp_path, kitti):
    session = session_for(tmp_path, kitti)
    session.holdout = list(kitti[0])
    session.step()
    first, announced = session.checkpoint()
    assert announced == first
    # Make the networks clearly worse on the held-out triplets: both of them. Depth alone is not
    # enough after one step from random weights, where a perturbed depth network is as good as
    # the first one (the loss sits at the auto-mask's ceiling either way).
    with torch.no_grad():
        for net in (session.trainer.depth_net, session.trainer.pose_net):
            for p in net.parameters():
                p.add_(torch.randn_like(p) * p.abs().mean())
    session.trainer.step_count += 1
    second, announced = session.checkpoint()
    validation = session.stats.last_validation
    assert announced is None and second.exists() and session.stats.not_announced == 1
    assert math.isfinite(validation.candidate.photometric) and validation.failures
    assert session.stats.announced == first
    session.config.validate_before_announce = False
    session.step()
    third, announced = session.checkpoint()
    assert announced == third


def test_rotation_keeps_the_newest_and_the_announced(tmp_path, kitti, monkeypatch):
    session = session_for(tmp_path, kitti, keep_last=2)
    session.step()
    announced, _ = session.checkpoint()
    worse, better = HeldOutScore(1.0, 1.0, 0.5, 0.0), HeldOutScore(0.5, 0.5, 0.01, 0.0)
    monkeypatch.setattr(session, '_validate', lambda: Validation(worse, better))  # no later checkpoint is better
    saved = []
    for _ in range(3):
        session.step()
        saved.append(session.checkpoint()[0])
    assert session.folder.checkpoints() == [saved[2], saved[1], announced]  # 2 newest + the announced one
    assert session.stats.announced == announced


def test_resume_skips_newer_unusable_checkpoints(tmp_path, kitti):
    first = session_for(tmp_path, kitti)
    for _ in range(2):
        first.step()
    good, _ = first.checkpoint()
    folder = first.folder
    (folder.path_for(7)).write_bytes(good.read_bytes()[:5000])  # truncated by a crash
    payload = torch.load(good, weights_only=True)
    del payload['depth_net']['disp1_layer.conv1.bias']
    torch.save(payload, folder.path_for(8))  # written by something that lost a key
    payload = torch.load(good, weights_only=True)
    payload['depth_net']['pre_calc.conv_base.weight'].fill_(float('nan'))
    torch.save(payload, folder.path_for(9))  # poisoned
    (folder.path / '.step_000000010.ckpt.123.tmp').write_bytes(b'partial')
    resumed = session_for(tmp_path, kitti)
    assert resumed.step_count == 2 and resumed.origin == f'resumed from {good} at step 2'
    assert len(resumed.stats.rejected_on_resume) == 3
    assert not list(folder.path.glob('.*.tmp'))
    for k, v in resumed.trainer.depth_net.state_dict().items():
        assert torch.equal(v, first.trainer.depth_net.state_dict()[k])


def test_starts_from_init_checkpoint_at_step_zero(tmp_path, kitti):
    torch.manual_seed(3)
    init = save_checkpoint(tmp_path / 'init.ckpt', PackNetSlim01(width=0.25), PoseNet(), step=500)
    session = session_for(tmp_path, kitti, init_checkpoint=str(init))
    assert session.step_count == 0 and session.origin == f'initialised from {init}'
    assert torch.equal(session.trainer.depth_net.pre_calc.conv_base.weight,
                       load_checkpoint(init).depth_state['pre_calc.conv_base.weight'])


def test_trainer_state_round_trip(tmp_path, kitti):
    session = session_for(tmp_path, kitti)
    for _ in range(2):
        session.step()
    state = session.trainer.state()
    session.step()
    session.trainer.restore(state)
    assert session.step_count == 2
    restored = session.trainer.optimizer.state_dict()['state'][0]['exp_avg']
    assert torch.equal(restored, state.optimizer['state'][0]['exp_avg'])


def test_learning_rate_follows_where_the_weights_come_from(tmp_path):
    from packnet_ros.training.session import FINE_TUNE_LR, SCRATCH_LR

    assert SessionConfig(checkpoint_dir=tmp_path).trainer().learning_rate == SCRATCH_LR
    tuned = SessionConfig(checkpoint_dir=tmp_path, init_checkpoint='trained.ckpt')
    assert tuned.trainer().learning_rate == FINE_TUNE_LR < SCRATCH_LR
    assert SessionConfig(checkpoint_dir=tmp_path, learning_rate=5e-4).trainer().learning_rate == 5e-4


def test_validation_names_every_respect_in_which_the_candidate_is_worse():
    announced = HeldOutScore(photometric=0.10, metric_photometric=0.10, velocity=0.20, holes=0.0)
    assert Validation(HeldOutScore(0.09, 0.09, 0.10, 0.0), announced).passed
    assert Validation(HeldOutScore(0.11, 0.09, 0.10, 0.0), announced).failures == ['held-out loss 0.1100 > 0.1000']
    assert Validation(HeldOutScore(0.09, 0.12, 0.10, 0.0), announced).failures == \
        ['loss at measured motion 0.1200 > 0.1000']
    assert Validation(HeldOutScore(0.09, 0.09, 0.30, 0.0), announced).failures == ['velocity error 0.3000 > 0.2000']
    # once translations agree within 5 %, a little less agreement than the announced model's is noise
    tight = HeldOutScore(0.10, 0.10, 0.01, 0.0)
    assert Validation(HeldOutScore(0.09, 0.09, 0.04, 0.0), tight).passed
    assert not Validation(HeldOutScore(0.09, 0.09, 0.06, 0.0), tight).passed


def test_a_model_that_digs_depth_holes_is_not_announced_however_low_its_losses():
    """The collapse of from-scratch training in traffic: the car ahead, moving with the camera,
    read as infinitely far explains the frames, so every loss improves. A sliver (under 1 %)
    is tolerated; more holes than the announced model had are refused."""
    announced = HeldOutScore(photometric=0.10, metric_photometric=0.10, velocity=0.20, holes=0.0)
    assert Validation(HeldOutScore(0.05, 0.05, 0.01, 0.005), announced).passed
    assert Validation(HeldOutScore(0.05, 0.05, 0.01, 0.16), announced).failures == ['depth holes 0.1600 > 0.0000']
    assert Validation(HeldOutScore(0.05, 0.05, 0.01, 0.03), HeldOutScore(0.1, 0.1, 0.2, 0.04)).passed


def test_a_model_whose_scale_drifts_is_not_announced(tmp_path):
    """Started from the shipped model on another camera, the first candidate is compared with
    that model. Depth and motion shrunk together explain the frames exactly as well (the
    photometric loss cannot tell), but they are farther from metric: refused."""
    held, K, metric_scale = synthetic_holdout()
    assert metric_scale > 2  # the shipped model's depth is too near on this camera: shrinking moves away
    config = SessionConfig(checkpoint_dir=tmp_path / 'ckpts', init_checkpoint=str(SHIPPED_MODEL), height=64,
                           width=192, holdout_every=0, save_every_steps=10 ** 6, save_every_seconds=1e9)
    session = TrainingSession(config)
    session.set_intrinsics(K)
    session.holdout = held
    start = session.trainer.evaluate(held)
    with torch.no_grad():
        session.trainer.depth_net.depth_scale /= 3
        session.trainer.pose_net.scale_translations(1 / 3)
    saved, announced = session.checkpoint()
    validation = session.stats.last_validation
    assert announced is None and saved.exists() and session.stats.announced is None
    assert validation.announced == start
    assert validation.candidate.photometric == pytest.approx(start.photometric, rel=1e-3)
    assert [f.split(' 0')[0] for f in validation.failures][-2:] == ['loss at measured motion', 'velocity error']
    with torch.no_grad():  # toward metric instead: announced
        session.trainer.depth_net.depth_scale *= 3 * metric_scale
        session.trainer.pose_net.scale_translations(3 * metric_scale)
    saved, announced = session.checkpoint()
    assert session.stats.last_validation.failures == [] and announced == saved


def poison(state: dict, case: str) -> None:
    """Optimizer state a hostile tester resumed from: each stopped or froze the trainer."""
    group, slot = state['param_groups'][0], state['state'][0]
    if case == 'nan lr':
        group['lr'] = group['base_lr'] = math.nan
    elif case == 'huge lr':
        group['lr'] = group['base_lr'] = 1e308
    elif case == 'no base_lr':
        del group['base_lr']
    elif case == 'betas as text':
        group['betas'] = 'fast'
    elif case == 'a state entry as text':
        state['state'][0] = 'exp_avg'
    elif case == 'moments of another shape':
        slot['exp_avg'] = slot['exp_avg'].flatten()[:3].clone()
    elif case == 'another group layout':
        state['param_groups'] = state['param_groups'][:1]


@pytest.mark.parametrize('case', ['nan lr', 'huge lr', 'no base_lr', 'betas as text', 'a state entry as text',
                                  'moments of another shape', 'another group layout'])
def test_poisoned_optimizer_state_resumes_with_configured_rates_and_trains(tmp_path, kitti, case, caplog):
    first = session_for(tmp_path, kitti)
    for _ in range(2):
        first.step()
    good, _ = first.checkpoint()
    payload = torch.load(good, weights_only=True)
    poison(payload['optimizer'], case)
    payload['step'] = 5
    torch.save(payload, first.folder.path_for(5))
    resumed = session_for(tmp_path, kitti)
    assert resumed.step_count == 5  # the weights are good: resumed, not passed over
    groups = resumed.trainer.optimizer.param_groups
    assert groups[0]['lr'] == groups[0]['base_lr'] == 1e-3 and groups[0]['betas'] == (0.9, 0.999)
    moments_kept = case in ('nan lr', 'huge lr', 'no base_lr', 'betas as text')  # only the rates were bad
    assert bool(resumed.trainer.optimizer.state) == moments_kept
    assert ('optimizer moments start afresh' in caplog.text) != moments_kept
    for _ in range(3):
        result = resumed.step()
        assert result.losses is not None and math.isfinite(result.losses['loss']), result.error
    assert resumed.step_count == 8
    assert all(bool(torch.isfinite(v).all()) for v in resumed.trainer.depth_net.state_dict().values())


def test_resume_passes_over_a_file_whatever_its_loader_raises(tmp_path, kitti, monkeypatch):
    first = session_for(tmp_path, kitti)
    first.step()
    good, _ = first.checkpoint()
    newest = first.folder.path_for(9)
    newest.write_bytes(good.read_bytes())
    real = load_checkpoint

    def hostile(path, *args, **kwargs):
        if path == newest:
            raise NotImplementedError('That compression method is not supported')
        return real(path, *args, **kwargs)
    monkeypatch.setattr('packnet_ros.training.checkpoint_dir.load_checkpoint', hostile)
    resumed = session_for(tmp_path, kitti)
    assert resumed.origin == f'resumed from {good} at step 1'
    assert resumed.stats.rejected_on_resume == [f"{newest}: NotImplementedError('That compression method is not "
                                                "supported')"]


def test_steps_that_keep_failing_go_back_to_good_weights(tmp_path, kitti, monkeypatch):
    from packnet_ros.training.session import MAX_FAILED_STEPS
    session = session_for(tmp_path, kitti)
    session.step()
    good = weights(session.trainer.depth_net)
    saved, _ = session.checkpoint()
    with torch.no_grad():  # poisoned weights: every later step's loss is non-finite
        next(session.trainer.depth_net.parameters()).fill_(math.nan)
    results = [session.step() for _ in range(MAX_FAILED_STEPS)]
    assert all(r.losses is None for r in results) and results[-1].rolled_back_to == saved
    assert [r.rolled_back_to for r in results[:-1]] == [None] * (MAX_FAILED_STEPS - 1)
    assert all(torch.equal(v, good[k]) for k, v in session.trainer.depth_net.state_dict().items())
    assert session.step().losses is not None and session.stats.rollbacks == 1


def test_steps_that_keep_failing_before_any_save_go_back_to_the_starting_weights(tmp_path, kitti, monkeypatch):
    from packnet_ros.training.session import MAX_FAILED_STEPS
    session = session_for(tmp_path, kitti)
    start = weights(session.trainer.depth_net)
    monkeypatch.setattr(session.trainer, 'step', lambda batch: (_ for _ in ()).throw(OverflowError('math range')))
    results = [session.step() for _ in range(MAX_FAILED_STEPS)]
    assert results[0].error == "OverflowError('math range')" and session.stats.failed_steps == MAX_FAILED_STEPS
    assert session.stats.rollbacks == 1 and session.stats.failing_steps == 0
    assert all(torch.equal(v, start[k]) for k, v in session.trainer.depth_net.state_dict().items())


def test_a_failed_save_is_remembered_until_one_works(tmp_path, kitti, monkeypatch):
    session = session_for(tmp_path, kitti)
    session.step()

    def full(*args, **kwargs):
        raise OSError(28, 'No space left on device')
    monkeypatch.setattr('packnet_ros.training.session.save_checkpoint', full)
    assert session.checkpoint() == (None, None)
    assert 'No space left on device' in session.stats.save_error and session.stats.failed_saves == 1
    monkeypatch.undo()
    session.step()
    assert session.checkpoint()[0] is not None and session.stats.save_error == ''


def test_a_model_whose_depth_is_not_finite_is_never_announced(tmp_path, kitti):
    """Finite weights that overflow (100 % NaN depth) passed every check of a file; unvalidated
    sessions announced them."""
    session = session_for(tmp_path, kitti, validate_before_announce=False)
    session.step()
    with torch.no_grad():
        session.trainer.depth_net.pre_calc.conv_base.weight.fill_(3e38)
    saved, announced = session.checkpoint()
    assert saved is not None and announced is None and session.stats.not_announced == 1
    with torch.no_grad():
        session.trainer.depth_net.pre_calc.conv_base.weight.normal_(0, 0.05)
    session.step()
    assert session.checkpoint()[1] is not None
