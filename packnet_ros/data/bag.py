"""rosbag2 I/O with the `rosbags` library (rosbag2_py is not installable from PyPI).

`write_kitti_bag` turns a KITTI raw drive (real or synthetic) into a bag with camera,
camera_info, odometry (speed in the twist) and ground-truth depth, stamped with the KITTI
timestamps. The bag is built under a temporary name and renamed when complete, so an
interrupted conversion never leaves a half-written bag under the final name.

A damaged bag (truncated storage file, broken metadata.yaml, undecodable message) is a
BagError that names the bag, whatever rosbags raised underneath.
"""
from __future__ import annotations

import math
import shutil
import sqlite3
import struct
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
from rosbags.rosbag2 import Reader, ReaderError, StoragePlugin, Writer, WriterError
from rosbags.serde import SerdeError
from rosbags.typesys import Stores, get_typestore

from packnet_ros.data.kitti import KittiDrive, KittiError
from packnet_ros.image import read_rgb

TYPESTORE = get_typestore(Stores.ROS2_JAZZY)
TOPICS = {
    'image': ('/kitti/camera/image_raw', 'sensor_msgs/msg/Image'),
    'camera_info': ('/kitti/camera/camera_info', 'sensor_msgs/msg/CameraInfo'),
    'odom': ('/kitti/odom', 'nav_msgs/msg/Odometry'),
    'depth_gt': ('/kitti/depth_gt', 'sensor_msgs/msg/Image'),
}
STORAGE = {'mcap': StoragePlugin.MCAP, 'sqlite3': StoragePlugin.SQLITE3}
EARTH_RADIUS = 6378137.0
# What rosbags raises for a damaged bag: its ReaderError, and for some damage the parsing
# errors beneath it (found by truncating and flipping bytes of an MCAP file: bad UTF-8 in a
# record, an 8-byte file, a record length beyond memory).
DAMAGED = (ReaderError, UnicodeDecodeError, TypeError, MemoryError)


class BagError(ValueError):
    """A rosbag2 cannot be read or written, or one of its messages cannot be decoded.

    `bag` is the bag concerned; None where the code that failed cannot know it (decoding
    a message taken from read_messages)."""

    def __init__(self, message: str, bag: str | Path | None = None):
        super().__init__(f'{bag}: {message}' if bag is not None else message)
        self.bag = bag


def _damaged(bag: str | Path, exc: BaseException) -> BagError:
    first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]  # YAML errors add a source excerpt
    return BagError(f'not a readable rosbag2 (truncated or corrupt?): {first_line}', bag)


def _types():
    t = TYPESTORE.types
    return (t['builtin_interfaces/msg/Time'], t['std_msgs/msg/Header'], t['sensor_msgs/msg/Image'],
            t['sensor_msgs/msg/CameraInfo'], t['sensor_msgs/msg/RegionOfInterest'], t['nav_msgs/msg/Odometry'])


def camera_frame(camera: int = 2) -> str:
    """frame_id of a KITTI colour camera's messages (the optical frame: x right, y down, z forward)."""
    return f'kitti_camera_0{camera}_optical'


def stamp_ns(seconds: float) -> int:
    return int(round(seconds * 1e9))


def header(stamp: float, frame_id: str):
    Time, Header = _types()[:2]
    ns = stamp_ns(stamp)
    return Header(stamp=Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000), frame_id=frame_id)


def image_msg(array: np.ndarray, encoding: str, stamp: float, frame_id: str):
    Image = _types()[2]
    h, w = array.shape[:2]
    data = np.ascontiguousarray(array).view(np.uint8).reshape(-1)
    return Image(header=header(stamp, frame_id), height=h, width=w, encoding=encoding, is_bigendian=0,
                 step=data.size // h, data=data)


def camera_info_msg(K: np.ndarray, width: int, height: int, stamp: float, frame_id: str):
    CameraInfo, ROI = _types()[3], _types()[4]
    P = np.hstack([K, np.zeros((3, 1))])
    return CameraInfo(header=header(stamp, frame_id), height=height, width=width, distortion_model='plumb_bob',
                      d=np.zeros(5), k=K.reshape(-1).astype(np.float64), r=np.eye(3).reshape(-1),
                      p=P.reshape(-1).astype(np.float64), binning_x=0, binning_y=0,
                      roi=ROI(x_offset=0, y_offset=0, height=0, width=0, do_rectify=False))


def quaternion(roll: float, pitch: float, yaw: float) -> tuple[float, float, float, float]:
    """(x, y, z, w) of R = Rz(yaw) Ry(pitch) Rx(roll)."""
    cr, sr = math.cos(roll / 2), math.sin(roll / 2)
    cp, sp = math.cos(pitch / 2), math.sin(pitch / 2)
    cy, sy = math.cos(yaw / 2), math.sin(yaw / 2)
    return (sr * cp * cy - cr * sp * sy, cr * sp * cy + sr * cp * sy,
            cr * cp * sy - sr * sp * cy, cr * cp * cy + sr * sp * sy)


def mercator(lat_deg: float, lon_deg: float, scale: float) -> tuple[float, float]:
    """(east, north) metres of KITTI's devkit projection; scale = cos(latitude of the first packet)."""
    return (scale * EARTH_RADIUS * math.radians(lon_deg),
            scale * EARTH_RADIUS * math.log(math.tan(math.pi / 4 + math.radians(lat_deg) / 2)))


def odometry_msg(packet, origin: tuple[float, float, float], scale: float):
    """OXTS packet -> Odometry: Mercator position (east, north, up) relative to the first packet,
    roll/pitch/yaw orientation, body-frame velocity (vf, vl, vu) and rates (wf, wl, wu)."""
    t = TYPESTORE.types
    v = packet.values
    east, north = mercator(v['lat'], v['lon'], scale)
    east, north = east - origin[0], north - origin[1]
    qx, qy, qz, qw = quaternion(v['roll'], v['pitch'], v['yaw'])
    Point, Quat, Vec = t['geometry_msgs/msg/Point'], t['geometry_msgs/msg/Quaternion'], t['geometry_msgs/msg/Vector3']
    pose = t['geometry_msgs/msg/PoseWithCovariance'](
        pose=t['geometry_msgs/msg/Pose'](position=Point(x=east, y=north, z=v['alt'] - origin[2]),
                                         orientation=Quat(x=qx, y=qy, z=qz, w=qw)),
        covariance=np.zeros(36))
    twist = t['geometry_msgs/msg/TwistWithCovariance'](
        twist=t['geometry_msgs/msg/Twist'](linear=Vec(x=v['vf'], y=v['vl'], z=v['vu']),
                                           angular=Vec(x=v['wf'], y=v['wl'], z=v['wu'])),
        covariance=np.zeros(36))
    return t['nav_msgs/msg/Odometry'](header=header(packet.stamp, 'odom'), child_frame_id='base_link',
                                      pose=pose, twist=twist)


def write_kitti_bag(drive_dir: str | Path, out_bag: str | Path, storage: str = 'mcap', camera: int = 2,
                    progress: Callable[[int, int], None] | None = None) -> Path:
    """Convert a KITTI raw drive folder into a rosbag2 directory at out_bag."""
    if storage not in STORAGE:
        raise ValueError(f'storage must be one of {sorted(STORAGE)}, got {storage!r}')
    out_bag = Path(out_bag)
    if out_bag.exists():
        raise FileExistsError(f'{out_bag} already exists; remove it or choose another name')
    drive = KittiDrive(drive_dir, camera)
    stamps, K, packets = drive.stamps(), drive.intrinsics(), drive.oxts()
    if len(packets) != len(drive.frames):
        raise KittiError(f'{len(drive.frames)} images but {len(packets)} OXTS packets in {drive.path}')
    frame_id = camera_frame(camera)
    first = packets[0].values
    scale = math.cos(math.radians(first['lat']))
    origin = (*mercator(first['lat'], first['lon'], scale), first['alt'])

    staging = out_bag.parent / f'.{out_bag.name}.partial'  # same filesystem: the final rename is atomic
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        with Writer(staging / out_bag.name, version=9, storage_plugin=STORAGE[storage]) as writer:
            conns = {key: writer.add_connection(topic, msgtype, typestore=TYPESTORE)
                     for key, (topic, msgtype) in TOPICS.items()}

            def write(key, msg, stamp):
                writer.write(conns[key], stamp_ns(stamp), TYPESTORE.serialize_cdr(msg, TOPICS[key][1]))

            for i, (frame, stamp, packet) in enumerate(zip(drive.frames, stamps, packets)):
                rgb = read_rgb(drive.image_path(frame))
                h, w = rgb.shape[:2]
                # camera_info first, as camera drivers do: a consumer knows the camera before the frame.
                write('camera_info', camera_info_msg(K, w, h, stamp, frame_id), stamp)
                write('image', image_msg(rgb, 'rgb8', stamp, frame_id), stamp)
                write('odom', odometry_msg(packet, origin, scale), packet.stamp)
                gt = drive.ground_truth(frame, (h, w))
                if gt is not None:
                    if gt.shape != (h, w):
                        raise KittiError(f'ground truth of frame {frame} is {gt.shape}, image is {(h, w)}')
                    write('depth_gt', image_msg(np.where(gt > 0, gt, np.nan).astype(np.float32), '32FC1',
                                                stamp, frame_id), stamp)
                if progress:
                    progress(i + 1, len(drive.frames))
        (staging / out_bag.name).rename(out_bag)
    except (WriterError, sqlite3.Error) as exc:  # sqlite3 says 'database or disk is full' this way
        raise BagError(f'cannot write the bag: {exc}', out_bag) from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_bag


def read_messages(bag: str | Path, topics: list[str] | None = None) -> Iterator[tuple[str, str, int, bytes]]:
    """(topic, msgtype, bag timestamp ns, serialized CDR) in time order."""
    try:
        with Reader(bag) as reader:
            connections = [c for c in reader.connections if topics is None or c.topic in topics]
            for conn, timestamp, raw in reader.messages(connections=connections):
                yield conn.topic, conn.msgtype, timestamp, raw
    except DAMAGED as exc:  # only rosbags runs here: the consumer's errors stay outside the generator
        raise _damaged(bag, exc) from exc


def playback(bag: str | Path, rate: float = 1.0, start_offset: float = 0.0
             ) -> Iterator[tuple[float, str, int, bytes]]:
    """(seconds after playback starts at which the message is due, topic, stamp ns, CDR) in bag
    order, from `start_offset` seconds into the bag, at `rate` times the recorded speed."""
    if rate <= 0:
        raise ValueError(f'rate must be positive, got {rate}')
    first = None
    for topic, _, stamp, raw in read_messages(bag):
        if first is None:
            first = stamp + int(round(start_offset * 1e9))
        if stamp >= first:
            yield (stamp - first) / 1e9 / rate, topic, stamp, raw


def header_stamp(raw: bytes) -> tuple[int, int]:
    """(sec, nanosec) of a CDR-serialized message that starts with a std_msgs/Header, read from
    its first bytes (after the 4-byte encapsulation, whose second byte says the byte order)."""
    order = '<' if raw[1] == 1 else '>'
    return struct.unpack_from(f'{order}iI', raw, 4)


def topics_of(bag: str | Path) -> dict[str, str]:
    """{topic: message type} of a rosbag2."""
    try:
        with Reader(bag) as reader:
            return {c.topic: c.msgtype for c in reader.connections}
    except DAMAGED as exc:
        raise _damaged(bag, exc) from exc


def deserialize(raw: bytes, msgtype: str):
    try:
        return TYPESTORE.deserialize_cdr(raw, msgtype)
    except SerdeError as exc:
        raise BagError(f'a {msgtype} message cannot be decoded (truncated or corrupt?): {exc}') from exc
