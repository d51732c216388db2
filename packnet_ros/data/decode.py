"""Image, camera_info, stamp and speed messages -> arrays and numbers, without ROS: rclpy's
messages and rosbags' alike.

Raw images are viewed with np.frombuffer (no copy) and only copied when a colour conversion
or a row stride forces it. Every refusal is a ConversionError that says what is wrong.
"""
from __future__ import annotations

import io
import math

import cv2
import numpy as np
from PIL import Image as PILImage

from packnet_ros.geometry.distortion import Calibration

# encoding -> (channels, dtype, cv2 conversion to RGB or None)
ENCODINGS: dict[str, tuple[int, np.dtype, int | None]] = {
    'rgb8': (3, np.dtype(np.uint8), None),
    'bgr8': (3, np.dtype(np.uint8), cv2.COLOR_BGR2RGB),
    'rgba8': (4, np.dtype(np.uint8), cv2.COLOR_RGBA2RGB),
    'bgra8': (4, np.dtype(np.uint8), cv2.COLOR_BGRA2RGB),
    'mono8': (1, np.dtype(np.uint8), cv2.COLOR_GRAY2RGB),
    'mono16': (1, np.dtype(np.uint16), cv2.COLOR_GRAY2RGB),
    # OpenCV names Bayer patterns by the 2x2 block starting at pixel (1,1), so ROS
    # 'rggb' is OpenCV 'BG'; the RGB conversions below give RGB output.
    'bayer_rggb8': (1, np.dtype(np.uint8), cv2.COLOR_BayerBG2RGB),
    'bayer_bggr8': (1, np.dtype(np.uint8), cv2.COLOR_BayerRG2RGB),
    'bayer_gbrg8': (1, np.dtype(np.uint8), cv2.COLOR_BayerGR2RGB),
    'bayer_grbg8': (1, np.dtype(np.uint8), cv2.COLOR_BayerGB2RGB),
    'bayer_rggb16': (1, np.dtype(np.uint16), cv2.COLOR_BayerBG2RGB),
    'bayer_bggr16': (1, np.dtype(np.uint16), cv2.COLOR_BayerRG2RGB),
    'bayer_gbrg16': (1, np.dtype(np.uint16), cv2.COLOR_BayerGR2RGB),
    'bayer_grbg16': (1, np.dtype(np.uint16), cv2.COLOR_BayerGB2RGB),
}


class ConversionError(ValueError):
    """A message cannot be turned into an image (bad encoding, size or data)."""


MAX_IMAGE_PIXELS = 50_000_000  # far above any camera's frame; a bigger one is an error or an attack


def _check_pixels(w: int, h: int, max_pixels: int) -> None:
    if w == 0 or h == 0:
        raise ConversionError(f'image has zero size ({w}x{h})')
    if w * h > max_pixels:
        raise ConversionError(f'image is {w}x{h} = {w * h} pixels, above the limit of {max_pixels} '
                              '(parameter max_image_pixels)')


def image_to_rgb(msg, max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """sensor_msgs/Image (rclpy's or rosbags') -> RGB uint8 [H,W,3]. 16-bit data is scaled to 8 bits."""
    if msg.encoding not in ENCODINGS:
        raise ConversionError(f'unsupported encoding {msg.encoding!r}; supported: {", ".join(ENCODINGS)}')
    channels, dtype, code = ENCODINGS[msg.encoding]
    h, w = msg.height, msg.width
    _check_pixels(w, h, max_pixels)
    row_bytes = w * channels * dtype.itemsize
    if msg.step < row_bytes:
        raise ConversionError(f'step {msg.step} is smaller than width*channels*bytes = {row_bytes}')
    if len(msg.data) < msg.step * h:
        raise ConversionError(f'data has {len(msg.data)} bytes, expected step*height = {msg.step * h}')
    buf = np.frombuffer(msg.data, dtype=np.uint8, count=msg.step * h).reshape(h, msg.step)[:, :row_bytes]
    pixels = buf.view(dtype)
    if dtype.itemsize > 1 and bool(msg.is_bigendian) == np.little_endian:
        pixels = pixels.byteswap()
    pixels = pixels.reshape(h, w, channels) if channels > 1 else pixels.reshape(h, w)
    if dtype == np.uint16:
        pixels = (pixels >> 8).astype(np.uint8)
    if code is None:
        return pixels
    return cv2.cvtColor(np.ascontiguousarray(pixels), code)


def compressed_size(data: bytes | memoryview) -> tuple[int, int]:
    """(width, height) from a compressed image's header, without decoding its pixels."""
    try:
        with PILImage.open(io.BytesIO(data)) as header:
            return header.size
    except PILImage.DecompressionBombError as exc:
        raise ConversionError(f'compressed image refused before decoding: {exc}') from exc
    except (OSError, ValueError, SyntaxError) as exc:  # what Pillow raises for unknown or broken data
        raise ConversionError(f'cannot decode compressed image ({len(data)} bytes): {exc}') from exc


def compressed_to_rgb(msg, max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """sensor_msgs/CompressedImage (jpeg/png) -> RGB uint8 [H,W,3].

    The size is read from the header first: a small file can claim a huge image (a
    decompression bomb), which is refused before any pixel is decoded.
    """
    data = np.frombuffer(msg.data, dtype=np.uint8)
    if not data.size:
        raise ConversionError(f'compressed image is empty (format {msg.format!r})')
    try:
        _check_pixels(*compressed_size(data.tobytes()), max_pixels)
    except ConversionError as exc:
        raise ConversionError(f'compressed image refused before decoding: {exc}') from exc
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if bgr is None:
        raise ConversionError(f'cannot decode compressed image (format {msg.format!r}, {data.size} bytes)')
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def to_rgb(msg, max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """Raw or compressed image message -> RGB uint8 [H,W,3]."""
    if hasattr(msg, 'format'):  # CompressedImage; Image has 'encoding'
        return compressed_to_rgb(msg, max_pixels)
    return image_to_rgb(msg, max_pixels)


# Focal lengths per pixel of image size that a real camera has: 0.04 is a field of view of
# ~170 degrees (wider is not a pinhole camera), 100 one of ~0.6 degrees (a telescope).
FOCAL_PER_PIXEL = (0.04, 100.0)


def camera_matrix(info) -> np.ndarray:
    """3x3 intrinsics of the (rectified) image: P's left block when set, else K.

    Each field is checked, and the error names the one at fault.
    """
    if info.width == 0 or info.height == 0:
        raise ConversionError(f'camera_info has zero size ({info.width}x{info.height})')
    P = np.asarray(info.p, dtype=np.float64).reshape(3, 4)
    use_p = bool(P[0, 0] != 0 or P[1, 1] != 0)
    K = P[:, :3] if use_p else np.asarray(info.k, dtype=np.float64).reshape(3, 3)
    name = 'P' if use_p else 'K'
    entries = {'fx': K[0, 0], 'fy': K[1, 1], 'cx': K[0, 2], 'cy': K[1, 2]}
    bad = [f'{k}={v}' for k, v in entries.items() if not np.isfinite(v)]
    if bad:
        raise ConversionError(f'camera_info {name} has non-finite ' + ', '.join(bad))
    low, high = FOCAL_PER_PIXEL
    if not (low * info.width <= K[0, 0] <= high * info.width and low * info.height <= K[1, 1] <= high * info.height):
        raise ConversionError(f'camera_info {name} has invalid focal lengths fx={K[0, 0]:g}, fy={K[1, 1]:g} for a '
                              f'{info.width}x{info.height} image (a real camera has {low:g} to {high:g} times '
                              'the image width and height)')
    if not (0 <= K[0, 2] <= info.width and 0 <= K[1, 2] <= info.height):
        raise ConversionError(f'camera_info {name} has its principal point cx={K[0, 2]:g}, cy={K[1, 2]:g} outside '
                              f'the {info.width}x{info.height} image')
    return K


def calibration_of(info) -> Calibration:
    """camera_info (rclpy's or rosbags') -> its validated Calibration: distortion model and
    coefficients, rectification and projection. The rectified intrinsics pass the same checks
    as camera_matrix(); every refusal is a ConversionError naming the field."""
    camera_matrix(info)
    try:
        calibration = Calibration.from_camera_info(width=info.width, height=info.height,
                                                   distortion_model=info.distortion_model, d=list(info.d),
                                                   k=list(info.k), r=list(info.r), p=list(info.p))
    except ValueError as exc:
        raise ConversionError(f'camera_info: {exc}') from exc
    return calibration


def stamp_seconds(header) -> float:
    """A std_msgs/Header's stamp in seconds."""
    return header.stamp.sec + header.stamp.nanosec * 1e-9


def speed_of(msg) -> float:
    """Speed (m/s) of an Odometry, TwistStamped or TwistWithCovarianceStamped message."""
    twist = msg.twist.twist if hasattr(msg.twist, 'covariance') else msg.twist
    v = twist.linear
    return math.hypot(v.x, v.y, v.z)  # no overflow for huge components: those are refused as invalid
