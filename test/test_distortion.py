"""Rectification of distorted cameras: round trips through synthetic renderings, and pixel
positions checked against the distortion models' formulas written out here in numpy."""
import math
import re

import cv2
import numpy as np
import pytest

from packnet_ros.data.synthetic import CameraRig, drive
from packnet_ros.geometry.distortion import Calibration, Rectifier, RectifierCache, distort_image

W, H = 384, 128
RIG = CameraRig(W, H)
MODELS = {
    'plumb_bob': (-0.3, 0.1, 0.001, -0.002, 0.0),
    'rational_polynomial': (-0.3, 0.1, 0.001, -0.002, 0.01, 0.05, 0.0, 0.01),
    'equidistant': (-0.05, 0.01, 0.0, 0.0),
}
# A stereo-rectified camera: its own K (other focal lengths and centre), a 2 degree rotation
# about y, and a rectified camera P of the wider rig below.
WIDE_RIG = CameraRig(W, H, fov_x_deg=90.0)
STEREO_K = np.array([[250.0, 0.0, 195.0], [0.0, 248.0, 60.0], [0.0, 0.0, 1.0]])
ANGLE = math.radians(2.0)
STEREO_R = np.array([[math.cos(ANGLE), 0.0, math.sin(ANGLE)], [0.0, 1.0, 0.0],
                     [-math.sin(ANGLE), 0.0, math.cos(ANGLE)]])


def projection(K: np.ndarray) -> np.ndarray:
    return np.hstack([K, np.zeros((3, 1))])


def pinhole_calibration(model: str) -> Calibration:
    return Calibration(W, H, RIG.K, MODELS[model], np.eye(3), projection(RIG.K), model)


def stereo_calibration(model: str) -> Calibration:
    return Calibration(W, H, STEREO_K, MODELS[model], STEREO_R, projection(WIDE_RIG.K), model)


CALIBRATIONS = [pinhole_calibration(m) for m in MODELS] + [stereo_calibration(m) for m in MODELS]
CALIBRATION_IDS = list(MODELS) + [f'stereo-{m}' for m in MODELS]


@pytest.fixture(scope='module')
def frame():
    return list(drive(1, seed=0, camera=RIG))[0]


@pytest.fixture(scope='module')
def wide_frame():
    return list(drive(1, seed=0, camera=WIDE_RIG))[0]


# ------------------------------------------------------------------ independent distortion formulas

def distort_normalised(x: np.ndarray, y: np.ndarray, model: str, D) -> tuple[np.ndarray, np.ndarray]:
    """OpenCV's documented models: the standard (rational) model and the fisheye (equidistant) one."""
    if model == 'equidistant':
        r = np.hypot(x, y)
        theta = np.arctan(r)
        k1, k2, k3, k4 = D
        theta_d = theta * (1 + k1 * theta**2 + k2 * theta**4 + k3 * theta**6 + k4 * theta**8)
        scale = np.where(r > 0, theta_d / np.maximum(r, 1e-12), 1.0)
        return x * scale, y * scale
    k1, k2, p1, p2, k3, k4, k5, k6 = (tuple(D) + (0.0,) * 8)[:8]
    r2 = x * x + y * y
    radial = (1 + k1 * r2 + k2 * r2**2 + k3 * r2**3) / (1 + k4 * r2 + k5 * r2**2 + k6 * r2**3)
    return (x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x),
            y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y)


def project_from_rectified(u: np.ndarray, v: np.ndarray, calibration: Calibration) -> np.ndarray:
    """Where the ray of rectified pixel (u, v) lands in the camera image: rotate the ray back into
    the camera frame (X_cam = R^T X_rect, ROS's R), distort, apply K. Returns [..., 2]."""
    rays = np.stack([u, v, np.ones_like(u)], -1) @ np.linalg.inv(calibration.P[:, :3]).T
    camera = rays @ calibration.R  # row vectors: (R^T r)^T = r^T R
    x, y = distort_normalised(camera[..., 0] / camera[..., 2], camera[..., 1] / camera[..., 2],
                              calibration.model, calibration.D)
    K = calibration.K
    return np.stack([K[0, 0] * x + K[0, 1] * y + K[0, 2], K[1, 1] * y + K[1, 2]], -1)


def coordinate_image(width: int, height: int) -> np.ndarray:
    """Float32 [H,W,2] holding each pixel's own (u, v): a remap of it shows where each pixel sampled."""
    v, u = np.mgrid[0:height, 0:width].astype(np.float32)
    return np.stack([u, v], -1)


def inside(points: np.ndarray, width: int, height: int, margin: float = 1.0) -> np.ndarray:
    return ((points[..., 0] >= margin) & (points[..., 0] <= width - 1 - margin)
            & (points[..., 1] >= margin) & (points[..., 1] <= height - 1 - margin))


# ------------------------------------------------------------------ round trips of renderings

def valid_region(rectifier: Rectifier, K_pinhole: np.ndarray, erode: int = 3) -> np.ndarray:
    """Rectified pixels whose whole chain (rectified -> camera -> pinhole) stays inside both images."""
    ones = np.full((H, W), 255, np.uint8)
    valid = rectifier.rectify(distort_image(ones, K_pinhole, rectifier.calibration)) == 255
    return cv2.erode(valid.astype(np.uint8), np.ones((2 * erode + 1, 2 * erode + 1), np.uint8)) > 0


def camera_depth(rectified_depth: np.ndarray, calibration: Calibration) -> np.ndarray:
    """z in the camera frame of each rectified pixel's point: back-project, rotate by R^T."""
    v, u = np.mgrid[0:H, 0:W].astype(np.float64)
    rays = np.stack([u, v, np.ones_like(u)], -1) @ np.linalg.inv(calibration.P[:, :3]).T
    return (rectified_depth * (rays @ calibration.R)[..., 2]).astype(np.float32)  # inf (sky) stays inf


def back_project(depth: np.ndarray, K: np.ndarray) -> np.ndarray:
    v, u = np.mgrid[0:depth.shape[0], 0:depth.shape[1]].astype(np.float64)
    return np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], -1) * depth[..., None]


def check_round_trip(calibration: Calibration, pinhole_frame, K_pinhole: np.ndarray) -> dict:
    rectifier = Rectifier(calibration)
    np.testing.assert_array_equal(rectifier.K, K_pinhole)
    valid = valid_region(rectifier, K_pinhole)
    assert valid.mean() > 0.7

    distorted = distort_image(pinhole_frame.rgb, K_pinhole, calibration)
    rectified = rectifier.rectify(distorted)
    assert rectified.shape == distorted.shape and rectified.dtype == np.uint8
    error = np.abs(rectified.astype(np.int16) - pinhole_frame.rgb)[valid]
    unrectified = np.abs(distorted.astype(np.int16) - pinhole_frame.rgb)[valid]
    # resampled twice, fine texture blurs a little; without rectification the image is far off
    assert np.median(error) <= 2 and error.mean() < 6
    assert unrectified.mean() > 3 * error.mean()

    true_depth = pinhole_frame.depth
    distorted_depth = distort_image(camera_depth(true_depth, calibration), K_pinhole, calibration, cv2.INTER_NEAREST)
    depth = rectifier.rectify_depth(distorted_depth)
    seen = valid & np.isfinite(true_depth) & np.isfinite(depth) & (depth > 0)
    assert seen.mean() > 0.5
    relative = np.abs(depth[seen] - true_depth[seen]) / true_depth[seen]
    assert np.median(relative) < 0.01

    points = back_project(depth, rectifier.K)[seen]
    true_points = back_project(true_depth, K_pinhole)[seen]
    distance = np.linalg.norm(points - true_points, axis=-1) / np.linalg.norm(true_points, axis=-1)
    assert np.median(distance) < 0.01
    return {'median grey': float(np.median(error)), 'mean grey': float(error.mean()),
            'mean grey unrectified': float(unrectified.mean()), 'median depth rel': float(np.median(relative)),
            'p90 depth rel': float(np.percentile(relative, 90)), 'median point rel': float(np.median(distance))}


@pytest.mark.parametrize('model', MODELS)
def test_rectifying_a_distorted_rendering_gives_the_pinhole_rendering(model, frame):
    print(model, check_round_trip(pinhole_calibration(model), frame, RIG.K))


@pytest.mark.parametrize('model', MODELS)
def test_stereo_rectified_camera_round_trips(model, wide_frame):
    print(model, 'stereo', check_round_trip(stereo_calibration(model), wide_frame, WIDE_RIG.K))


# ------------------------------------------------------------------ pixel positions against the formulas

@pytest.mark.parametrize('calibration', CALIBRATIONS, ids=CALIBRATION_IDS)
def test_rectified_pixel_samples_where_the_model_projects_its_ray(calibration):
    sampled = Rectifier(calibration).rectify(coordinate_image(W, H))
    v, u = np.mgrid[0:H, 0:W].astype(np.float64)
    expected = project_from_rectified(u, v, calibration)
    seen = inside(expected, W, H)
    assert seen.mean() > 0.75
    error = np.linalg.norm(sampled - expected, axis=-1)[seen]
    print(calibration.model, 'max px error', error.max())
    assert error.max() < 0.05  # remap's bilinear weights of 2-channel images are quantised to 1/32 px


@pytest.mark.parametrize('calibration', CALIBRATIONS, ids=CALIBRATION_IDS)
def test_distorted_pixel_samples_the_pinhole_pixel_of_its_ray(calibration):
    K_pinhole = calibration.P[:, :3]
    sampled = distort_image(coordinate_image(W, H), K_pinhole, calibration)
    v, u = np.mgrid[0:H, 0:W].astype(np.float64)
    # not where bilinear sampling reached past the pinhole image's edge and blended in the 0 border
    seen = distort_image(np.ones((H, W), np.float32), K_pinhole, calibration) == 1
    assert seen.mean() > 0.6
    back = project_from_rectified(sampled[..., 0].astype(np.float64), sampled[..., 1].astype(np.float64), calibration)
    error = np.linalg.norm(back - np.stack([u, v], -1), axis=-1)[seen]
    print(calibration.model, 'max px error', error.max())
    assert error.max() < 0.05


def test_a_3d_point_lands_where_opencv_projects_it_and_where_P_says():
    calibration = stereo_calibration('plumb_bob')
    point_rect = np.array([1.5, -0.4, 8.0])
    point_cam = calibration.R.T @ point_rect
    observed, _ = cv2.projectPoints(point_cam[None], np.zeros(3), np.zeros(3), calibration.K, np.array(calibration.D))
    u_d, v_d = observed.ravel()
    # a bright blob at the observed (distorted) position must appear at P's projection after rectification
    image = np.zeros((H, W), np.float32)
    v, u = np.mgrid[0:H, 0:W]
    image[:] = np.exp(-((u - u_d) ** 2 + (v - v_d) ** 2) / (2 * 1.5**2))
    rectified = Rectifier(calibration).rectify(image)
    p = calibration.P @ np.append(point_rect, 1.0)
    expected = p[:2] / p[2]
    u0, v0 = np.round(expected).astype(int)
    wv, wu = np.mgrid[v0 - 6:v0 + 7, u0 - 6:u0 + 7]
    window = rectified[v0 - 6:v0 + 7, u0 - 6:u0 + 7]
    centroid = np.array([(window * wu).sum(), (window * wv).sum()]) / window.sum()
    print('blob centroid error px', np.linalg.norm(centroid - expected))
    assert np.linalg.norm(centroid - expected) < 0.5


# ------------------------------------------------------------------ pinhole cameras, cache, validation

@pytest.mark.parametrize('model, D, P', [('plumb_bob', (0.0,) * 5, projection(RIG.K)),
                                         ('plumb_bob', (), projection(RIG.K)), ('', (), projection(RIG.K)),
                                         ('none', (0.0,) * 5, np.zeros((3, 4)))])
def test_pinhole_camera_passes_images_through_untouched(model, D, P, frame):
    calibration = Calibration(W, H, RIG.K, D, np.eye(3), P, model)
    assert not calibration.distorted and not calibration.needs_rectification
    rectifier = Rectifier(calibration)
    np.testing.assert_array_equal(rectifier.K, RIG.K)
    assert rectifier.rectify(frame.rgb) is frame.rgb
    assert rectifier.rectify_depth(frame.depth) is frame.depth


def test_empty_P_means_K_unrotated():
    calibration = Calibration(W, H, RIG.K, MODELS['plumb_bob'], np.zeros((3, 3)), np.zeros((3, 4)))
    np.testing.assert_array_equal(calibration.rectified_K, RIG.K)
    np.testing.assert_array_equal(calibration.rectified_R, np.eye(3))
    assert calibration.distorted and calibration.needs_rectification


def test_undistorted_camera_with_another_P_is_remapped(frame):
    calibration = Calibration(W, H, RIG.K, (), np.eye(3), projection(WIDE_RIG.K), 'plumb_bob')
    rectified = Rectifier(calibration).rectify(frame.rgb)
    assert rectified is not frame.rgb and not np.array_equal(rectified, frame.rgb)


def from_message(**changes) -> Calibration:
    fields = dict(width=W, height=H, distortion_model='plumb_bob', d=list(MODELS['plumb_bob']),
                  k=RIG.K.ravel().tolist(), r=np.eye(3).ravel().tolist(), p=projection(RIG.K).ravel().tolist())
    return Calibration.from_camera_info(**{**fields, **changes})


def test_from_camera_info_reads_flat_row_major_fields():
    calibration = from_message()
    assert calibration == pinhole_calibration('plumb_bob')
    assert hash(calibration) == hash(pinhole_calibration('plumb_bob'))
    np.testing.assert_array_equal(calibration.K, RIG.K)
    assert calibration.P.shape == (3, 4) and calibration.D == MODELS['plumb_bob']
    with pytest.raises(ValueError):
        calibration.K[0, 0] = 1.0  # read-only: a cached calibration cannot change behind the cache


def test_cache_rebuilds_only_when_the_calibration_changes():
    cache = RectifierCache()
    first = cache.get(from_message())
    assert cache.get(from_message()) is first  # an equal calibration from a new message
    changed = cache.get(from_message(d=[-0.2, 0.1, 0.0, 0.0, 0.0]))
    assert changed is not first and changed.calibration.D[0] == -0.2
    assert cache.get(from_message(d=[-0.2, 0.1, 0.0, 0.0, 0.0])) is changed
    assert cache.get(from_message()) is not first  # only the latest is kept


@pytest.mark.parametrize('changes, message', [
    (dict(distortion_model='fisheye'), "'fisheye' is not supported (supported: plumb_bob, rational_polynomial, "
                                       "equidistant"),
    (dict(distortion_model=''), "'' is not supported"),
    (dict(d=[-0.3, 0.1, 0.0, 0.0]), "'plumb_bob' needs 5 coefficients, got 4"),
    (dict(distortion_model='rational_polynomial'), "'rational_polynomial' needs 8 coefficients, got 5"),
    (dict(distortion_model='equidistant'), "'equidistant' needs 4 coefficients, got 5"),
    (dict(d=[-0.3, float('nan'), 0.0, 0.0, 0.0]), 'D has non-finite values'),
    (dict(k=[float('inf')] + RIG.K.ravel().tolist()[1:]), 'K has non-finite values'),
    (dict(p=[0.0] * 11), 'P needs 12 values, got 11'),
    (dict(width=0), 'image size must be positive'),
    (dict(k=[0.0] * 9, p=[0.0] * 12), 'positive focal lengths'),
])
def test_invalid_calibrations_are_refused_with_the_reason(changes, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        from_message(**changes)


def test_all_zero_distortion_is_pinhole_whatever_the_model_name():
    calibration = from_message(distortion_model='fisheye', d=[0.0] * 4)
    assert not calibration.needs_rectification


@pytest.mark.parametrize('model', ['plumb_bob', ''])
def test_image_of_another_size_is_refused(model, frame):
    D = MODELS['plumb_bob'] if model else ()
    rectifier = Rectifier(Calibration(W, H, RIG.K, D, np.eye(3), projection(RIG.K), model))
    with pytest.raises(ValueError, match=f'image is {W // 2}x{H // 2} but the calibration is for {W}x{H}'):
        rectifier.rectify(cv2.resize(frame.rgb, (W // 2, H // 2)))
