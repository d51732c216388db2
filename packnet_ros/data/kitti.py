"""Reader for KITTI raw drive folders (the `*_sync` layout).

    DATE/calib_cam_to_cam.txt
    DATE/DATE_drive_NNNN_sync/image_0{2,3}/{data/*.png, timestamps.txt}
    DATE/DATE_drive_NNNN_sync/oxts/{data/*.txt, timestamps.txt}
    DATE/DATE_drive_NNNN_sync/proj_depth/velodyne/image_0{2,3}/*.npz   (packnet-sfm, optional)

Frames are identified by their file number; timestamps.txt lists every frame of the
full drive, so a subset of images (as in KITTI_tiny) still gets the right stamps. A file that
cannot be parsed is a KittiError naming it.
"""
from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path

import numpy as np

OXTS_FIELDS = ('lat', 'lon', 'alt', 'roll', 'pitch', 'yaw', 'vn', 've', 'vf', 'vl', 'vu',
               'ax', 'ay', 'az', 'af', 'al', 'au', 'wx', 'wy', 'wz', 'wf', 'wl', 'wu')


class KittiError(ValueError):
    """A KITTI drive folder is incomplete or malformed."""


def parse_timestamp(text: str) -> float:
    """'2011-09-26 13:17:59.293761040' -> POSIX seconds (UTC), keeping nanoseconds."""
    date, _, frac = text.strip().partition('.')
    base = datetime.datetime.strptime(date, '%Y-%m-%d %H:%M:%S').replace(tzinfo=datetime.timezone.utc)
    return base.timestamp() + (float('0.' + frac) if frac else 0.0)


def read_timestamps(path: Path) -> list[float]:
    if not path.is_file():
        raise KittiError(f'missing timestamps file {path}')
    stamps = []
    for number, line in enumerate(path.read_text(errors='replace').splitlines(), 1):
        if line.strip():
            try:
                stamps.append(parse_timestamp(line))
            except ValueError as exc:
                raise KittiError(f'{path} line {number}: {exc}') from exc
    return stamps


def read_calib(path: Path) -> dict[str, np.ndarray]:
    """KITTI 'key: numbers' calibration file -> {key: float64 array}."""
    if not path.is_file():
        raise KittiError(f'missing calibration file {path}')
    calib = {}
    for line in path.read_text().splitlines():
        key, sep, value = line.partition(':')
        if not sep:
            continue
        try:
            calib[key.strip()] = np.array([float(x) for x in value.split()])
        except ValueError:
            continue  # calib_time and similar non-numeric entries
    return calib


@dataclass(frozen=True)
class OxtsPacket:
    """One GPS/IMU sample; speeds in m/s (vehicle frame), rates in rad/s."""

    stamp: float
    values: dict[str, float]

    @property
    def speed(self) -> float:
        """Ground speed: norm of the (forward, left, up) velocity."""
        return float(np.linalg.norm([self.values['vf'], self.values['vl'], self.values['vu']]))


class KittiDrive:
    """A KITTI raw drive: images, rectified intrinsics, timestamps, OXTS and projected depth."""

    def __init__(self, drive_dir: str | Path, camera: int = 2):
        self.path = Path(drive_dir)
        if camera not in (2, 3):
            raise KittiError(f'camera must be 2 or 3 (the colour cameras), got {camera}')
        self.camera = camera
        self.image_dir = self.path / f'image_0{camera}' / 'data'
        if not self.image_dir.is_dir():
            raise KittiError(f'{self.path} is not a KITTI drive folder: no {self.image_dir}')
        self.frames = sorted(int(p.stem) for p in self.image_dir.glob('*.png'))
        if not self.frames:
            raise KittiError(f'no PNG images in {self.image_dir}')

    @staticmethod
    def is_drive(path: str | Path) -> bool:
        return any((Path(path) / f'image_0{c}' / 'data').is_dir() for c in (2, 3))

    def image_path(self, frame: int) -> Path:
        return self.image_dir / f'{frame:010d}.png'

    def stamps(self) -> list[float]:
        """Timestamp of each frame in self.frames (seconds)."""
        stamps = read_timestamps(self.path / f'image_0{self.camera}' / 'timestamps.txt')
        if self.frames[-1] >= len(stamps):
            raise KittiError(f'timestamps.txt has {len(stamps)} lines but frame {self.frames[-1]} exists')
        return [stamps[f] for f in self.frames]

    def intrinsics(self) -> np.ndarray:
        """Rectified 3x3 intrinsics from P_rect_0X of the date folder's calib_cam_to_cam.txt."""
        calib = read_calib(self.path.parent / 'calib_cam_to_cam.txt')
        key = f'P_rect_0{self.camera}'
        if key not in calib or calib[key].size != 12:
            raise KittiError(f'{self.path.parent / "calib_cam_to_cam.txt"} lacks a 3x4 {key}')
        return calib[key].reshape(3, 4)[:, :3].copy()

    def oxts(self) -> list[OxtsPacket]:
        """OXTS packets for self.frames (same index as the images)."""
        stamps = read_timestamps(self.path / 'oxts' / 'timestamps.txt')
        if self.frames[-1] >= len(stamps):
            raise KittiError(f'oxts/timestamps.txt has {len(stamps)} lines but frame {self.frames[-1]} exists')
        packets = []
        for f in self.frames:
            path = self.path / 'oxts' / 'data' / f'{f:010d}.txt'
            if not path.is_file():
                raise KittiError(f'missing OXTS packet {path}')
            try:
                values = [float(x) for x in path.read_text(errors='replace').split()]
            except ValueError as exc:
                raise KittiError(f'{path}: {exc}') from exc
            if len(values) < len(OXTS_FIELDS):
                raise KittiError(f'{path} has {len(values)} values, expected at least {len(OXTS_FIELDS)}')
            packets.append(OxtsPacket(stamps[f], dict(zip(OXTS_FIELDS, values))))
        return packets

    def projected_depth(self, frame: int) -> np.ndarray | None:
        """packnet-sfm's projected velodyne depth (metres, 0 = no return), if present."""
        path = self.path / 'proj_depth' / 'velodyne' / f'image_0{self.camera}' / f'{frame:010d}.npz'
        if not path.is_file():
            return None
        try:
            with np.load(path) as data:
                return data['velodyne_depth'].astype(np.float32)
        except Exception as exc:  # damage surfaces as BadZipFile, zlib.error, EOFError, KeyError, ValueError ...
            raise KittiError(f'ground truth {path} is unreadable (truncated or corrupt?): {exc!r}') from exc

    def velodyne_to_image(self) -> np.ndarray:
        """3x4 matrix taking homogeneous velodyne points to homogeneous rectified pixels:
        P_rect_0X @ R_rect_00 @ Tr_velo_to_cam (the KITTI raw devkit chain)."""
        cam = read_calib(self.path.parent / 'calib_cam_to_cam.txt')
        velo = read_calib(self.path.parent / 'calib_velo_to_cam.txt')
        for key, calib, name in (('R', velo, 'calib_velo_to_cam'), ('T', velo, 'calib_velo_to_cam'),
                                 ('R_rect_00', cam, 'calib_cam_to_cam'),
                                 (f'P_rect_0{self.camera}', cam, 'calib_cam_to_cam')):
            if key not in calib:
                raise KittiError(f'{name}.txt in {self.path.parent} lacks {key}')
        Tr = np.eye(4)
        Tr[:3, :3], Tr[:3, 3] = velo['R'].reshape(3, 3), velo['T']
        R_rect = np.eye(4)
        R_rect[:3, :3] = cam['R_rect_00'].reshape(3, 3)
        return cam[f'P_rect_0{self.camera}'].reshape(3, 4) @ R_rect @ Tr

    def lidar_depth(self, frame: int, shape: tuple[int, int]) -> np.ndarray | None:
        """Depth from velodyne_points/data/FRAME.bin projected into the camera (0 = no return);
        where several points land on one pixel the nearest wins."""
        path = self.path / 'velodyne_points' / 'data' / f'{frame:010d}.bin'
        if not path.is_file():
            return None
        points = np.fromfile(path, dtype=np.float32)
        if points.size % 4:
            raise KittiError(f'{path} is not a list of (x, y, z, reflectance) float32 points')
        points = points.reshape(-1, 4)
        points = points[points[:, 0] > 0]  # in front of the car
        uvw = self.velodyne_to_image() @ np.hstack([points[:, :3], np.ones((len(points), 1))]).T
        z = uvw[2]
        u, v = np.round(uvw[0] / z).astype(int), np.round(uvw[1] / z).astype(int)
        h, w = shape
        keep = (z > 0) & (u >= 0) & (u < w) & (v >= 0) & (v < h)
        depth = np.full(shape, np.inf, dtype=np.float32)
        np.minimum.at(depth, (v[keep], u[keep]), z[keep].astype(np.float32))
        depth[np.isinf(depth)] = 0
        return depth

    def ground_truth(self, frame: int, shape: tuple[int, int]) -> np.ndarray | None:
        """Ground-truth depth: packnet-sfm's projected depth when present, else projected lidar."""
        depth = self.projected_depth(frame)
        return depth if depth is not None else self.lidar_depth(frame, shape)
