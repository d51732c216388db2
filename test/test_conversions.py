"""Message <-> array conversions of the ROS adapters."""
import cv2
import numpy as np
import pytest
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header

from packnet_ros.ros.nodes.conversions import (
    ConversionError,
    calibration_of,
    camera_matrix,
    cloud_to_points,
    compressed_to_rgb,
    depth_to_image,
    image_to_depth,
    image_to_rgb,
    limit_range,
    points_to_cloud,
    rectified_camera_info,
)

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, size=(6, 8, 3), dtype=np.uint8)


def msg(data, encoding, step=None, bigendian=False):
    h, w = data.shape[:2]
    row = data.reshape(h, -1).view(np.uint8)
    step = step or row.shape[1]
    padded = np.zeros((h, step), np.uint8)
    padded[:, :row.shape[1]] = row
    return Image(height=h, width=w, encoding=encoding, step=step, is_bigendian=bigendian, data=padded.tobytes())


@pytest.mark.parametrize('encoding,data', [
    ('rgb8', RGB), ('bgr8', RGB[..., ::-1]),
    ('rgba8', np.dstack([RGB, np.full(RGB.shape[:2], 7, np.uint8)])),
    ('bgra8', np.dstack([RGB[..., ::-1], np.full(RGB.shape[:2], 7, np.uint8)])),
])
def test_colour_encodings_give_rgb(encoding, data):
    np.testing.assert_array_equal(image_to_rgb(msg(np.ascontiguousarray(data), encoding)), RGB)


def test_row_padding_is_ignored():
    np.testing.assert_array_equal(image_to_rgb(msg(RGB, 'rgb8', step=8 * 3 + 5)), RGB)


def test_mono_encodings():
    gray = RGB[..., 0]
    out = image_to_rgb(msg(gray, 'mono8'))
    assert out.shape == (6, 8, 3) and np.array_equal(out[..., 1], gray)
    wide = gray.astype(np.uint16) << 8 | 0x55
    np.testing.assert_array_equal(image_to_rgb(msg(wide, 'mono16'))[..., 0], gray)
    np.testing.assert_array_equal(image_to_rgb(msg(wide.byteswap(), 'mono16', bigendian=True))[..., 0], gray)


def test_bayer_rggb_demosaics_a_flat_colour():
    # A flat colour sampled on an RGGB mosaic must come back as that colour.
    colour = (200, 100, 50)
    mosaic = np.empty((8, 8), np.uint8)
    mosaic[0::2, 0::2], mosaic[0::2, 1::2] = colour[0], colour[1]
    mosaic[1::2, 0::2], mosaic[1::2, 1::2] = colour[1], colour[2]
    out = image_to_rgb(msg(mosaic, 'bayer_rggb8'))
    np.testing.assert_array_equal(out[2:-2, 2:-2].reshape(-1, 3), np.tile(colour, (16, 1)))
    bggr = image_to_rgb(msg(mosaic, 'bayer_bggr8'))
    assert tuple(bggr[3, 3]) == colour[::-1]


@pytest.mark.parametrize('mutate,match', [
    (lambda m: setattr(m, 'encoding', '8UC3'), 'unsupported encoding'),
    (lambda m: setattr(m, 'data', m.data[:-1]), 'expected step\\*height'),
    (lambda m: setattr(m, 'step', 3), 'step 3 is smaller'),
    (lambda m: (setattr(m, 'height', 0), setattr(m, 'width', 0)), 'zero size'),
])
def test_bad_images_raise_clear_errors(mutate, match):
    m = msg(RGB, 'rgb8')
    mutate(m)
    with pytest.raises(ConversionError, match=match):
        image_to_rgb(m)


def test_compressed_png_and_garbage():
    ok, png = cv2.imencode('.png', RGB[..., ::-1])
    np.testing.assert_array_equal(compressed_to_rgb(CompressedImage(format='png', data=png.tobytes())), RGB)
    with pytest.raises(ConversionError, match='cannot decode'):
        compressed_to_rgb(CompressedImage(format='jpeg', data=b'\xff\xd8 not a jpeg'))


def test_depth_image_round_trip_keeps_nan():
    depth = RNG.uniform(1, 50, size=(4, 5)).astype(np.float32)
    depth[1, 2] = np.nan
    m = depth_to_image(depth, Header(frame_id='cam'))
    assert (m.encoding, m.step, m.header.frame_id) == ('32FC1', 20, 'cam')
    np.testing.assert_array_equal(image_to_depth(m), depth)


def test_a_cloud_holds_the_points_it_was_made_of():
    points = RNG.uniform(-5, 5, size=(6, 8, 4)).astype(np.float32)
    points[0, 0, :3] = np.nan
    cloud = points_to_cloud(points, Header(frame_id='cam'))
    assert [f.name for f in cloud.fields] == ['x', 'y', 'z', 'rgb'] and (cloud.height, cloud.width) == (6, 8)
    np.testing.assert_array_equal(cloud_to_points(cloud), points)


def test_camera_matrix_prefers_rectified_projection():
    info = CameraInfo(width=8, height=6)
    info.k = [5.0, 0, 4, 0, 5, 3, 0, 0, 1]
    assert camera_matrix(info)[0, 0] == 5.0
    info.p = [7.0, 0, 4, 0, 0, 7, 3, 0, 0, 0, 1, 0]
    assert camera_matrix(info)[0, 0] == 7.0
    with pytest.raises(ConversionError, match='focal'):
        camera_matrix(CameraInfo(width=8, height=6))


def test_out_of_range_depth_follows_rep117_or_nan():
    depth = np.array([[0.2, 0.5, 3.0], [80.0, 81.0, np.nan]], dtype=np.float32)
    np.testing.assert_array_equal(limit_range(depth, 0.5, 80.0),
                                  [[-np.inf, 0.5, 3.0], [80.0, np.inf, np.nan]])
    np.testing.assert_array_equal(limit_range(depth, 0.5, 80.0, 'nan'),
                                  [[np.nan, 0.5, 3.0], [80.0, np.nan, np.nan]])
    assert np.isnan(depth[1, 2]) and depth[0, 0] == np.float32(0.2)  # the input is left alone
    with pytest.raises(ValueError, match='convention'):
        limit_range(depth, 0.5, 80.0, 'zero')


def test_calibration_of_camera_info_reads_distortion_and_rectified_intrinsics():
    info = CameraInfo(width=640, height=480, distortion_model='plumb_bob')
    info.k = [500.0, 0, 320, 0, 500, 240, 0, 0, 1]
    info.d = [-0.3, 0.1, 0.001, 0.0, 0.0]
    info.r = [1.0, 0, 0, 0, 1, 0, 0, 0, 1]
    info.p = [450.0, 0, 322, 0, 0, 450, 238, 0, 0, 0, 1, 0]
    calibration = calibration_of(info)
    assert calibration.distorted and calibration.needs_rectification and calibration.D == (-0.3, 0.1, 0.001, 0, 0)
    np.testing.assert_array_equal(calibration.rectified_K, [[450, 0, 322], [0, 450, 238], [0, 0, 1]])
    out = rectified_camera_info(info, calibration.rectified_K, 640, 480)
    assert list(out.d) == [0.0] * 5 and list(out.p) == [450.0, 0, 322, 0, 0, 450, 238, 0, 0, 0, 1, 0]
    info.distortion_model = 'fisheye_kannala'
    with pytest.raises(ConversionError, match="'fisheye_kannala' is not supported"):
        calibration_of(info)
    info.distortion_model, info.d = 'equidistant', [0.1, 0.0]
    with pytest.raises(ConversionError, match='needs 4 coefficients'):
        calibration_of(info)
