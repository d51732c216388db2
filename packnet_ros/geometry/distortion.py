"""Lens distortion and rectification from CameraInfo-style calibrations, without ROS.

Cameras publish sensor_msgs/CameraInfo with a distortion model and coefficients, but the
depth network assumes a pinhole camera. As ROS's image_proc does, a Rectifier remaps each
image to the rectified pinhole camera of image_geometry's convention (rotation R, intrinsics
P[:, :3]), with OpenCV maps built once per calibration. Pixel centres are at integer
coordinates, as in OpenCV, ROS and packnet_ros.geometry.camera.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

# ROS model names (sensor_msgs/distortion_models.hpp) and their number of coefficients:
# plumb_bob and rational_polynomial are OpenCV's standard model, equidistant is cv2.fisheye.
COEFFICIENTS = {'plumb_bob': 5, 'rational_polynomial': 8, 'equidistant': 4}
# Undistortion is iterative: OpenCV's default of 5 iterations leaves errors of ~0.05 px at strong distortion.
_UNDISTORT_CRITERIA = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 100, 1e-9)


def _matrix(name: str, value, shape: tuple[int, int]) -> np.ndarray:
    """A read-only float64 matrix from a flat (CameraInfo) or shaped value, so it can't change under a cache."""
    array = np.array(value, dtype=np.float64)
    if array.size != shape[0] * shape[1]:
        raise ValueError(f'{name} needs {shape[0] * shape[1]} values, got {array.size}')
    array = array.reshape(shape)
    array.flags.writeable = False
    return array


def _has_focal_length(K: np.ndarray) -> bool:
    return bool(K[0, 0] > 0 and K[1, 1] > 0)


@dataclass(frozen=True, eq=False)
class Calibration:
    """One camera's calibration as CameraInfo holds it (K [3,3], D, R [3,3], P [3,4]), validated.

    Matrices are read-only arrays and equality compares values, so a node can tell whether
    a message's calibration differs from the last one and only then rebuild its maps.
    D all zero (or empty) means no distortion whatever the model name, as in image_geometry.
    """

    width: int
    height: int
    K: np.ndarray
    D: tuple[float, ...]
    R: np.ndarray
    P: np.ndarray
    model: str = 'plumb_bob'

    def __post_init__(self):
        object.__setattr__(self, 'width', int(self.width))
        object.__setattr__(self, 'height', int(self.height))
        object.__setattr__(self, 'D', tuple(float(d) for d in np.ravel(self.D)))
        for name, shape in (('K', (3, 3)), ('R', (3, 3)), ('P', (3, 4))):
            object.__setattr__(self, name, _matrix(name, getattr(self, name), shape))
        self._validate()

    @classmethod
    def from_camera_info(cls, *, width: int, height: int, distortion_model: str, d, k, r, p) -> Calibration:
        """From CameraInfo's fields as plain values (d list, k and r 9 floats, p 12 floats, row-major)."""
        return cls(width=width, height=height, K=k, D=tuple(d), R=r, P=p, model=distortion_model)

    def _validate(self) -> None:
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f'image size must be positive, got {self.width}x{self.height}')
        for name in ('K', 'D', 'R', 'P'):
            if not np.all(np.isfinite(getattr(self, name))):
                raise ValueError(f'{name} has non-finite values: {getattr(self, name)}')
        if self.distorted and self.model not in COEFFICIENTS:
            raise ValueError(f'distortion model {self.model!r} is not supported (supported: '
                             f'{", ".join(COEFFICIENTS)}; or all-zero D for a pinhole camera)')
        expected = COEFFICIENTS.get(self.model)
        if self.distorted and len(self.D) != expected:
            raise ValueError(f'distortion model {self.model!r} needs {expected} coefficients, got {len(self.D)}')
        if self.needs_rectification and not (_has_focal_length(self.K) and _has_focal_length(self.rectified_K)):
            raise ValueError('K and P need positive focal lengths to rectify: is the camera calibrated?')

    @property
    def distorted(self) -> bool:
        return any(d != 0 for d in self.D)

    @property
    def _projection_given(self) -> bool:
        """Some drivers leave P (and R) all zero; then the rectified camera is K itself, unrotated."""
        return bool(np.any(self.P != 0))

    @property
    def rectified_K(self) -> np.ndarray:
        """Intrinsics of the rectified image: P's first three columns (image_geometry's convention)."""
        return self.P[:, :3] if self._projection_given else self.K

    @property
    def rectified_R(self) -> np.ndarray:
        """Rotation from the camera frame to the rectified frame (identity unless P and R are given)."""
        return self.R if self._projection_given and np.any(self.R != 0) else np.eye(3)

    @property
    def needs_rectification(self) -> bool:
        """False for a pinhole camera whose rectified camera is itself: its images are already rectified."""
        return (self.distorted or not np.array_equal(self.rectified_R, np.eye(3))
                or not np.array_equal(self.rectified_K, self.K))

    def _key(self) -> tuple:
        return (self.width, self.height, self.model, self.D,
                tuple(self.K.ravel().tolist()), tuple(self.R.ravel().tolist()), tuple(self.P.ravel().tolist()))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Calibration):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())


def _fisheye(calibration: Calibration) -> bool:
    return calibration.distorted and calibration.model == 'equidistant'


def _coefficients(calibration: Calibration) -> np.ndarray:
    """D for OpenCV: empty when there is no distortion (OpenCV rejects odd lengths even of zeros)."""
    return np.array(calibration.D if calibration.distorted else (), dtype=np.float64)


def _rectify_maps(calibration: Calibration) -> tuple[np.ndarray, np.ndarray]:
    """Per rectified pixel, where to sample the camera image.

    Float maps (CV_32FC1), not CV_16SC2: nearest-neighbour remaps with the fixed-point maps
    use their integer part and land up to a pixel off; float maps cost ~30 % more remap time.
    """
    args = (calibration.K, _coefficients(calibration), calibration.rectified_R, calibration.rectified_K,
            (calibration.width, calibration.height), cv2.CV_32FC1)
    if _fisheye(calibration):
        return cv2.fisheye.initUndistortRectifyMap(*args)
    return cv2.initUndistortRectifyMap(*args)


def _depth_scale(calibration: Calibration) -> np.ndarray | None:
    """Per rectified pixel, rectified z over camera z: a rotation R changes depth along the ray.

    A rectified ray r = K_rect^-1 (u, v, 1) has z = 1 and camera-frame z = R[:, 2] . r, since the
    camera point is R^T times the rectified one. None when R is the identity.
    """
    R = calibration.rectified_R
    if np.array_equal(R, np.eye(3)):
        return None
    v, u = np.mgrid[0:calibration.height, 0:calibration.width].astype(np.float64)
    rays = np.stack([u, v, np.ones_like(u)], -1) @ np.linalg.inv(calibration.rectified_K).T
    return (1.0 / (rays @ R[:, 2])).astype(np.float32)


class Rectifier:
    """Rectifies the images of one calibration; `K` is the rectified intrinsics (calibration resolution).

    The maps are built once here. A camera that needs no rectification pays nothing:
    `rectify` returns its input itself.
    """

    def __init__(self, calibration: Calibration):
        self.calibration = calibration
        self.K = calibration.rectified_K
        self._maps = _rectify_maps(calibration) if calibration.needs_rectification else None
        self._depth_scale = _depth_scale(calibration)

    def _check_size(self, image: np.ndarray) -> None:
        height, width = image.shape[:2]
        if (width, height) != (self.calibration.width, self.calibration.height):
            raise ValueError(f'image is {width}x{height} but the calibration is for '
                             f'{self.calibration.width}x{self.calibration.height}')

    def rectify(self, image: np.ndarray, interpolation: int = cv2.INTER_LINEAR) -> np.ndarray:
        """The rectified image (HxW or HxWxC, any dtype cv2.remap takes); outside the camera's view is 0."""
        self._check_size(image)
        if self._maps is None:
            return image
        return cv2.remap(image, *self._maps, interpolation, borderMode=cv2.BORDER_CONSTANT, borderValue=0)

    def rectify_depth(self, depth: np.ndarray) -> np.ndarray:
        """Rectified z-depth [H,W] float: nearest neighbour (no blending across edges; inf stays inf),
        and rescaled as z changes with the rectifying rotation. 0 where the camera does not see.
        """
        rectified = self.rectify(depth, cv2.INTER_NEAREST)
        return rectified if self._depth_scale is None else rectified * self._depth_scale


class RectifierCache:
    """The Rectifier for the latest calibration, rebuilt only when the calibration changes."""

    def __init__(self):
        self._rectifier: Rectifier | None = None

    def get(self, calibration: Calibration) -> Rectifier:
        if self._rectifier is None or self._rectifier.calibration != calibration:
            self._rectifier = Rectifier(calibration)
        return self._rectifier


def distort_image(pinhole_image: np.ndarray, K_pinhole: np.ndarray, calibration: Calibration,
                  interpolation: int = cv2.INTER_LINEAR) -> np.ndarray:
    """What the calibrated camera sees, sampled from a pinhole image of its rectified frame (intrinsics K_pinhole).

    The inverse of rectification, for synthetic data: render a pinhole view, then make the
    distorted camera image that a real lens would give. Values are resampled, not rescaled:
    for depth under a rotation R, convert rectified z to camera z first (see Rectifier.rectify_depth).
    """
    v, u = np.mgrid[0:calibration.height, 0:calibration.width].astype(np.float64)
    pixels = np.stack([u, v], -1).reshape(-1, 1, 2)  # cv2.fisheye.undistortPoints needs Nx1x2 (2-channel)
    undistort = cv2.fisheye.undistortPoints if _fisheye(calibration) else cv2.undistortPoints
    points = undistort(pixels, calibration.K, _coefficients(calibration), R=calibration.rectified_R,
                       P=np.asarray(K_pinhole, dtype=np.float64), criteria=_UNDISTORT_CRITERIA)
    maps = points.reshape(calibration.height, calibration.width, 2).astype(np.float32)
    return cv2.remap(pinhole_image, maps[..., 0], maps[..., 1], interpolation,
                     borderMode=cv2.BORDER_CONSTANT, borderValue=0)
