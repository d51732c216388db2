"""From a camera stream plus speed to training triplets: the accumulator's rules (distances,
context, skip reasons, stream order) and the TripletStream around them (camera, frames)."""
import numpy as np
import pytest

from packnet_ros.data.camera_stream import Refusal, TripletStream
from packnet_ros.data.decode import ConversionError
from packnet_ros.data.stream import Skip
from packnet_ros.geometry import Calibration, distort_image, scale_intrinsics
from packnet_ros.training import NEIGHBOURS, SpeedTrack, TripletAccumulator, TripletRules

H, W = 32, 64


def frame(value=0):
    return np.full((H, W, 3), value, np.uint8)


def stream(acc, frame_stamps, speed_fn, odom_stamps):
    """Interleave odometry and frames by time, as they would arrive; all emitted triplets."""
    events = [(t, 'odom') for t in odom_stamps] + [(t, 'frame') for t in frame_stamps]
    out = []
    for t, kind in sorted(events, key=lambda e: (e[0], e[1] == 'frame')):
        if kind == 'odom':
            out += acc.add_speed(t, speed_fn(t))
        else:
            out += acc.add_frame(t, frame(int(t * 10) % 255))
    return out


def test_distance_is_the_exact_integral_between_stamps():
    # v(t) = 2 + 3t sampled at 50 Hz, frames at 10 Hz with jitter: distance t0->t1 = 2dt + 1.5(t1^2 - t0^2)
    acc = TripletAccumulator(H, W, NEIGHBOURS)
    frames = [0.1, 0.203, 0.297, 0.41]
    triplets = stream(acc, frames, lambda t: 2 + 3 * t, np.arange(0, 0.6, 0.02))
    assert len(triplets) == 2
    for triplet, (a, b, c) in zip(triplets, [frames[0:3], frames[1:4]]):
        exact = [2 * (b - a) + 1.5 * (b ** 2 - a ** 2), 2 * (c - b) + 1.5 * (c ** 2 - b ** 2)]
        np.testing.assert_allclose(triplet.distances, exact, rtol=1e-6)
        assert triplet.stamp == b and triplet.images.shape == (3, H, W, 3)


def test_downsizes_and_strides():
    acc = TripletAccumulator(H, W, TripletRules(stride=2, context_distance=0.0))
    stamps = np.arange(0, 1.0, 0.1)
    for t in np.arange(0, 1.2, 0.02):
        acc.add_speed(t, 5.0)
    first = next(t for s in stamps for t in acc.add_frame(s, np.zeros((4 * H, 4 * W, 3), np.uint8)))
    assert first.images.shape == (3, H, W, 3)
    np.testing.assert_allclose(first.distances, [1.0, 1.0], rtol=1e-6)  # 0.2 s at 5 m/s


@pytest.mark.parametrize('case,reason', [
    ('static', 'static'), ('no_odom', 'no_speed'), ('stale', 'stale_speed'), ('nan', 'invalid_speed'),
    ('negative', 'invalid_speed'), ('gap', 'gap')])
def test_unusable_triplets_are_skipped_with_their_reason(case, reason):
    acc = TripletAccumulator(H, W, TripletRules(stride=1, context_distance=0.0, min_distance=0.2))
    frames = [0.1, 0.2, 0.3, 0.4]
    speed, odom = (lambda t: 10.0), np.arange(0, 0.6, 0.02)
    if case == 'static':
        speed = lambda t: 0.5  # 5 cm per frame
    elif case == 'no_odom':
        odom = []
        frames = frames + [0.5, 0.6, 0.9, 1.2]  # long enough for waiting candidates to expire
    elif case == 'stale':
        odom = np.arange(0, 0.25, 0.02)  # odometry stopped arriving
        frames = frames + [0.5, 0.6, 0.9, 1.2]
    elif case == 'nan':
        speed = lambda t: float('nan')
    elif case == 'negative':
        speed = lambda t: -3.0
    elif case == 'gap':
        frames = [0.1, 0.2, 1.5, 1.6]
        odom = np.arange(0, 1.8, 0.02)
    out = stream(acc, frames, speed, odom)
    assert acc.skipped[reason] > 0, dict(acc.skipped)
    assert not out


def test_looping_bag_restarts_accumulation():
    acc = TripletAccumulator(H, W, NEIGHBOURS)
    emitted = []
    for _ in range(2):  # the same 1.0 .. 1.5 s recording played twice
        for t in np.arange(1.0, 1.5, 0.02):
            emitted += acc.add_speed(t, 10.0)
            if round(t * 50) % 5 == 0:
                emitted += acc.add_frame(t, frame())
    # The first message of the second pass could be one late message; the second says the
    # stream went back: once for odometry, once for frames.
    assert acc.skipped['late'] == 2 and acc.skipped['time_backwards'] == 2
    assert len(emitted) == 3 + 2  # frames 1.0..1.4 -> 3 triplets, then 1.1..1.4 -> 2, none across the jump
    assert all(np.allclose(t.distances, 1.0) for t in emitted)


def test_speed_track_resets_when_time_goes_backwards():
    track = SpeedTrack()
    for t in (1.0, 1.1, 1.2):
        track.add(t, 4.0)
    assert track.add(0.5, 4.0) == 'late' and len(track.samples) == 3
    assert track.add(0.6, 4.0) == 'time_backwards'
    assert list(track.samples) == [(0.6, 4.0)]
    assert track.distance(1.0, 1.1) == (None, 'pending')


def test_unstamped_and_late_frames_are_dropped_with_the_window_kept():
    """A driver that does not stamp gives no triplet and says why; one late re-sent frame
    (0.2 s old) per second cleared the 3-frame window each time (81 triplets instead of ~99)."""
    def run(resend_late: bool):
        acc = TripletAccumulator(H, W, NEIGHBOURS)
        triplets = []
        for i in range(100):
            t = 1.0 + 0.1 * i
            for stamp in (t, t + 0.05):
                triplets += acc.add_speed(stamp, 10.0)
            triplets += acc.add_frame(t, frame())
            if resend_late and i % 10 == 9:
                triplets += acc.add_frame(t - 0.2, frame())
        return triplets, acc.skipped
    clean, _ = run(False)
    with_late, skipped = run(True)
    assert len(clean) == 98 and [t.stamp for t in with_late] == [t.stamp for t in clean]
    assert skipped['late'] == 10 and 'time_backwards' not in skipped
    acc = TripletAccumulator(H, W, NEIGHBOURS)
    for _ in range(20):
        assert acc.add_speed(0.0, 10.0) == [] and acc.add_frame(0.0, frame()) == []
    assert acc.skipped['unstamped'] == 40 and not acc.frames and not acc.speed.samples


K_CAMERA = np.array([[100.0, 0.0, 64.0], [0.0, 100.0, 32.0], [0.0, 0.0, 1.0]])


def calibration(D=(), P=None):
    P = np.hstack([K_CAMERA, np.zeros((3, 1))]) if P is None else P
    return Calibration(width=128, height=64, K=K_CAMERA, D=D, R=np.eye(3), P=P)


def camera_frames(count=6, seed=0):
    rng = np.random.default_rng(seed)
    return [(1.0 + 0.1 * i, rng.integers(0, 256, (64, 128, 3), dtype=np.uint8)) for i in range(count)]


def feed(target, frames):
    """Frames with odometry at 20 Hz (10 m/s) around them, as a live stream delivers; all triplets."""
    out = []
    for stamp, rgb in frames:
        for dt in (0.0, 0.05):
            out += target.add_speed(stamp + dt, 10.0)
        out += target.add_frame(stamp, rgb)
    return out


def test_stream_refuses_frames_before_a_camera_of_another_size_or_undecodable_and_counts_why():
    stream = TripletStream(H, W, NEIGHBOURS)

    def never():
        raise AssertionError('a frame nothing can use is decoded')

    def broken():
        raise ConversionError('unsupported encoding')

    def rejected():
        raise ConversionError('camera_info K has non-finite fx')
    assert stream.add_frame(1.0, never) == [] and stream.refused == Refusal(Skip.NO_CAMERA_INFO)
    assert stream.set_camera(calibration()) and stream.refused is None
    assert not stream.set_camera(lambda: calibration())  # the same camera again: nothing changes
    np.testing.assert_allclose(stream.intrinsics, scale_intrinsics(K_CAMERA, W / 128, H / 64))
    assert stream.add_frame(1.0, np.zeros((50, 100, 3), np.uint8)) == []
    assert stream.refused == Refusal(Skip.BAD_IMAGE, 'image is 100x50 but camera_info is 128x64')
    assert stream.add_frame(1.1, broken) == [] and stream.refused == Refusal(Skip.BAD_IMAGE, 'unsupported encoding')
    assert not stream.set_camera(rejected)
    assert stream.refused == Refusal(Skip.CAMERA_INFO_REJECTED, 'camera_info K has non-finite fx')
    np.testing.assert_allclose(stream.intrinsics, scale_intrinsics(K_CAMERA, W / 128, H / 64))  # the last good one
    assert stream.add_speed(0.0, 5.0) == [] and stream.refused == Refusal(Skip.UNSTAMPED)
    assert stream.skipped == {Skip.NO_CAMERA_INFO: 1, Skip.BAD_IMAGE: 2, Skip.CAMERA_INFO_REJECTED: 1,
                              Skip.UNSTAMPED: 1}


@pytest.mark.parametrize('carry', [False, True])
def test_stream_makes_the_accumulators_triplets_with_the_cameras_intrinsics(carry):
    frames = camera_frames()
    stream = TripletStream(H, W, NEIGHBOURS, carry_intrinsics=carry)
    stream.set_camera(calibration())
    got, expected = feed(stream, frames), feed(TripletAccumulator(H, W, NEIGHBOURS), frames)
    assert len(got) == len(expected) == 4 and stream.refused is None and not stream.skipped
    for a, b in zip(got, expected):
        assert a.stamp == b.stamp
        np.testing.assert_array_equal(a.images, b.images)
        np.testing.assert_array_equal(a.distances, b.distances)
        if carry:
            np.testing.assert_array_equal(a.intrinsics, stream.intrinsics)
        else:
            assert a.intrinsics is None


@pytest.mark.parametrize('rectify', [True, False])
def test_distorted_frames_are_rectified_unless_rectified_already(rectify):
    P = np.hstack([K_CAMERA * [[0.9], [0.9], [1]], np.zeros((3, 1))])
    distorted = calibration(D=(-0.25, 0.08, 0.001, -0.001, 0.0), P=P)
    frames = [(t, distort_image(rgb, K_CAMERA, distorted)) for t, rgb in camera_frames()]
    stream = TripletStream(H, W, NEIGHBOURS, rectify=rectify)
    stream.set_camera(distorted)
    assert stream.rectifying == rectify
    np.testing.assert_allclose(stream.intrinsics, scale_intrinsics(P[:, :3], W / 128, H / 64))
    got = feed(stream, frames)
    rectified = [(t, stream.rectifier.rectify(rgb)) for t, rgb in frames]
    assert not np.array_equal(rectified[0][1], frames[0][1])
    seen = rectified if rectify else frames
    expected = feed(TripletAccumulator(H, W, NEIGHBOURS), seen)
    assert len(got) == len(expected) == 4
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(a.images, b.images)
