"""sensor_msgs <-> numpy without cv_bridge.

Decoding incoming images and camera_info is ROS-free (packnet_ros.data.decode, re-exported
here for the nodes). Outgoing arrays are handed to messages as array.array, which rclpy takes
without the per-element checks a bytes/list would trigger.
"""
from __future__ import annotations

import array

import numpy as np
from sensor_msgs.msg import CameraInfo, Image, PointCloud2, PointField
from std_msgs.msg import Header

from packnet_ros.data.decode import (  # noqa: F401  (re-exported for the nodes)
    ENCODINGS,
    MAX_IMAGE_PIXELS,
    ConversionError,
    calibration_of,
    camera_matrix,
    compressed_size,
    compressed_to_rgb,
    image_to_rgb,
    to_rgb,
)

INVALID_DEPTH = ('rep117', 'nan')


def _as_array(data: np.ndarray) -> array.array:
    out = array.array('B')
    out.frombytes(np.ascontiguousarray(data).data.cast('B'))
    return out


def limit_range(depth: np.ndarray, min_depth: float, max_depth: float, convention: str = 'rep117') -> np.ndarray:
    """Depth [H,W] metres with what lies outside [min_depth, max_depth] marked as REP 117 says
    ('rep117': -Inf too near, +Inf too far, NaN no estimate) or all NaN ('nan')."""
    if convention not in INVALID_DEPTH:
        raise ValueError(f'convention must be one of {INVALID_DEPTH}, got {convention!r}')
    out = np.array(depth, dtype=np.float32)
    with np.errstate(invalid='ignore'):
        near, far = out < min_depth, out > max_depth
    if convention == 'nan':
        out[near | far] = np.nan
    else:
        out[near], out[far] = -np.inf, np.inf
    return out


def depth_to_image(depth: np.ndarray, header: Header) -> Image:
    """float32 metres [H,W] -> sensor_msgs/Image 32FC1 (REP 117/118)."""
    depth = np.ascontiguousarray(depth, dtype=np.float32)
    h, w = depth.shape
    return Image(header=header, height=h, width=w, encoding='32FC1', is_bigendian=0,
                 step=w * 4, data=_as_array(depth))


def rgb_to_image(rgb: np.ndarray, header: Header) -> Image:
    h, w = rgb.shape[:2]
    return Image(header=header, height=h, width=w, encoding='rgb8', is_bigendian=0, step=w * 3,
                 data=_as_array(rgb))


def image_to_depth(msg: Image) -> np.ndarray:
    """32FC1 sensor_msgs/Image -> float32 [H,W] (a view of the message data); a header that
    the data does not fill is a ConversionError, not numpy's bare ValueError."""
    if msg.encoding != '32FC1':
        raise ConversionError(f'expected a 32FC1 depth image, got {msg.encoding!r}')
    if msg.width == 0 or msg.height == 0:
        raise ConversionError(f'image has zero size ({msg.width}x{msg.height})')
    if msg.step < msg.width * 4:
        raise ConversionError(f'step {msg.step} is smaller than width*4 = {msg.width * 4}')
    if len(msg.data) < msg.step * msg.height:
        raise ConversionError(f'data has {len(msg.data)} bytes, expected step*height = {msg.step * msg.height}')
    rows = np.frombuffer(msg.data, dtype=np.uint8, count=msg.step * msg.height).reshape(msg.height, msg.step)
    return rows[:, :msg.width * 4].view(np.float32)


def rectified_camera_info(info: CameraInfo, K: np.ndarray, width: int, height: int) -> CameraInfo:
    """CameraInfo of the rectified camera with intrinsics K at width x height: no distortion,
    identity rectification, P = [K | 0] (what depth and points are published for)."""
    out = CameraInfo(header=info.header, width=width, height=height, distortion_model='plumb_bob')
    out.d = [0.0] * 5
    out.k = K.reshape(-1).tolist()
    out.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    out.p = np.hstack([K, np.zeros((3, 1))]).reshape(-1).tolist()
    return out


POINT_FIELDS = [PointField(name='x', offset=0, datatype=PointField.FLOAT32, count=1),
                PointField(name='y', offset=4, datatype=PointField.FLOAT32, count=1),
                PointField(name='z', offset=8, datatype=PointField.FLOAT32, count=1),
                PointField(name='rgb', offset=12, datatype=PointField.FLOAT32, count=1)]


def points_to_cloud(points: np.ndarray, header: Header) -> PointCloud2:
    """Organised [h,w,4] float32 (x, y, z, rgb; packnet_ros.geometry.depth_to_points) -> sensor_msgs/PointCloud2."""
    h, w, _ = points.shape
    return PointCloud2(header=header, height=h, width=w, fields=POINT_FIELDS, is_bigendian=False,
                       point_step=16, row_step=16 * w, is_dense=False, data=_as_array(points))


def cloud_to_points(msg: PointCloud2) -> np.ndarray:
    """Inverse of points_to_cloud (for tests and tools)."""
    return np.frombuffer(msg.data, dtype=np.float32).reshape(msg.height, msg.width, 4)
