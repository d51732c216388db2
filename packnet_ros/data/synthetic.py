"""Procedural driving world, ray-cast: exact depth, speed and pose for every frame.

The world is a straight street in the camera's optical frame (x right, y down, z forward):
asphalt road with lane markings, kerbs, pavements, building facades with windows, poles,
parked cars, and sky at infinity. Every surface's colour is a function of its world
position only (no lighting, no view dependence), so warping one frame into another with
the true depth and pose reproduces it except at occlusions: the self-supervised loss has
an exact answer. The camera drives forward with a speed profile that includes a stop.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

ROAD_Y = 1.65                 # the road plane, y down; a rig mounted at 1.65 m (KITTI's height) sits at y = 0
ROAD_HALF_WIDTH = 4.0
KERB_HEIGHT = 0.15
VIEW_DISTANCE = 150.0      # metres; rays stop here and the street is generated this far ahead
SKY_TOP = np.array([0.35, 0.55, 0.85])
SKY_HORIZON = np.array([0.80, 0.86, 0.92])


def _hash(ix: np.ndarray, iy: np.ndarray, seed: int) -> np.ndarray:
    """Deterministic pseudo-random value in [0,1) per integer lattice point."""
    h = (ix.astype(np.int64) * 73856093) ^ (iy.astype(np.int64) * 19349663) ^ (seed * 83492791)
    h = (h ^ (h >> 13)) * 1274126177
    return ((h ^ (h >> 16)) & 0xFFFF).astype(np.float64) / 65536.0


def value_noise(u: np.ndarray, v: np.ndarray, scale: float, seed: int) -> np.ndarray:
    """Smooth noise in [0,1) with features of size `scale` (metres)."""
    u, v = u / scale, v / scale
    iu, iv = np.floor(u), np.floor(v)
    fu, fv = u - iu, v - iv
    fu, fv = fu * fu * (3 - 2 * fu), fv * fv * (3 - 2 * fv)
    a, b = _hash(iu, iv, seed), _hash(iu + 1, iv, seed)
    c, d = _hash(iu, iv + 1, seed), _hash(iu + 1, iv + 1, seed)
    return (a * (1 - fu) + b * fu) * (1 - fv) + (c * (1 - fu) + d * fu) * fv


@dataclass
class Box:
    """Axis-aligned box [lo, hi] with a base colour and a surface style."""

    lo: np.ndarray
    hi: np.ndarray
    colour: np.ndarray
    style: str  # 'building', 'car', 'pole', 'kerb'


@dataclass
class World:
    boxes: list[Box] = field(default_factory=list)
    seed: int = 0
    length: float = 0.0

    @classmethod
    def generate(cls, length: float, seed: int) -> 'World':
        world = cls(seed=seed, length=length)
        ground = ROAD_Y
        for side in (-1, 1):
            # One generator per side and kind, so a longer drive extends the same street.
            rngs = [np.random.default_rng([seed, side + 1, kind]) for kind in range(3)]
            # kerbs: one long low box per side
            x0, x1 = sorted((side * ROAD_HALF_WIDTH, side * (ROAD_HALF_WIDTH + 0.3)))
            world.boxes.append(Box(np.array([x0, ground - KERB_HEIGHT, -20.0]),
                                   np.array([x1, ground, 1e6]), np.array([0.6, 0.6, 0.58]), 'kerb'))
            rng, z = rngs[0], -20.0
            while z < length + VIEW_DISTANCE + 30:  # building blocks with gaps
                size = rng.uniform(8, 25)
                setback = rng.uniform(7.0, 10.0)
                height = rng.uniform(6, 22)
                x0, x1 = sorted((side * setback, side * (setback + 12)))
                colour = rng.uniform(0.35, 0.85, 3) * np.array([1.0, 0.95, 0.85])
                world.boxes.append(Box(np.array([x0, ground - height, z]), np.array([x1, ground, z + size]),
                                       colour, 'building'))
                z += size + (rng.uniform(2, 8) if rng.random() < 0.4 else 0.3)
            rng = rngs[1]
            z = rng.uniform(0, 15)
            while z < length + VIEW_DISTANCE + 30:  # poles
                x = side * (ROAD_HALF_WIDTH + 0.6)
                world.boxes.append(Box(np.array([x - 0.08, ground - 5.0, z]), np.array([x + 0.08, ground, z + 0.16]),
                                       np.array([0.25, 0.25, 0.28]), 'pole'))
                z += rng.uniform(12, 25)
            rng = rngs[2]
            z = rng.uniform(5, 20)
            while z < length + VIEW_DISTANCE + 30:  # parked cars in the parking lane
                x = side * (ROAD_HALF_WIDTH - 1.2)
                world.boxes.append(Box(np.array([x - 0.9, ground - 1.5, z]), np.array([x + 0.9, ground, z + 4.2]),
                                       rng.uniform(0.1, 0.9, 3), 'car'))
                z += 4.2 + rng.uniform(2, 30)
        return world

    # ------------------------------------------------------------------ ray casting

    def cast(self, origin: np.ndarray, camera: 'CameraRig', offset: tuple[float, float] = (0.0, 0.0),
             max_depth: float = VIEW_DISTANCE, shade: bool = True):
        """Cast one ray per pixel (at pixel centre + offset) from a camera at `origin`.

        Rays have unit z component, so the hit parameter is the depth. Each box is tested
        only against the pixels inside its projected screen rectangle. Returns (depth [H,W]
        with inf for sky, colour [H,W,3] in [0,1]).
        """
        h, w = camera.height, camera.width
        dirs = camera.rays(offset).reshape(h, w, 3)
        depth = np.full((h, w), np.inf)
        kind = np.full((h, w), -1)  # -1 sky, -2 ground, >= 0 box index
        face = np.zeros((h, w), dtype=np.int64)
        with np.errstate(divide='ignore', invalid='ignore'):
            t_ground = (ROAD_Y - origin[1]) / dirs[..., 1]
        hit = (dirs[..., 1] > 1e-9) & (t_ground < max_depth)
        depth[hit], kind[hit] = t_ground[hit], -2
        K = camera.K
        # Rays have unit z, so each box's z-slab is the same for every ray (a scalar), and
        # the x/y slabs need only the reciprocals of the ray x/y components.
        with np.errstate(divide='ignore'):
            inv_x = 1.0 / np.where(np.abs(dirs[..., 0]) < 1e-12, 1e-12, dirs[..., 0])
            inv_y = 1.0 / np.where(np.abs(dirs[..., 1]) < 1e-12, 1e-12, dirs[..., 1])
        for i, box in enumerate(self.boxes):
            rect = _screen_rect(box, origin, K, w, h, max_depth)
            if rect is None:
                continue
            u0, u1, v0, v1 = rect
            ix, iy = inv_x[v0:v1, u0:u1], inv_y[v0:v1, u0:u1]
            ax, bx = (box.lo[0] - origin[0]) * ix, (box.hi[0] - origin[0]) * ix
            ay, by = (box.lo[1] - origin[1]) * iy, (box.hi[1] - origin[1]) * iy
            z_enter, z_exit = box.lo[2] - origin[2], box.hi[2] - origin[2]
            x_enter, y_enter = np.minimum(ax, bx), np.minimum(ay, by)
            t_enter = np.maximum(np.maximum(x_enter, y_enter), z_enter)
            t_exit = np.minimum(np.minimum(np.maximum(ax, bx), np.maximum(ay, by)), z_exit)
            sub = depth[v0:v1, u0:u1]
            hit = (t_enter <= t_exit) & (t_enter > 1e-3) & (t_enter < sub)
            sub[hit] = t_enter[hit]
            kind[v0:v1, u0:u1][hit] = i
            # the entering face is the slab that was entered last: 0 = x, 1 = y, 2 = z
            entered = np.where(x_enter >= y_enter, 0, 1)
            entered = np.where(z_enter >= np.maximum(x_enter, y_enter), 2, entered)
            face[v0:v1, u0:u1][hit] = entered[hit]
        if not shade:
            return depth, None
        flat_dirs, flat_depth = dirs.reshape(-1, 3), depth.reshape(-1)
        points = origin + flat_dirs * np.where(np.isfinite(flat_depth), flat_depth, 0)[:, None]
        colour = self._shade(points, kind.reshape(-1), face.reshape(-1), flat_dirs)
        return depth, colour.reshape(h, w, 3)

    def _table(self, attribute: str) -> np.ndarray:
        """Per-box attribute as an array, for vectorised look-up by box index."""
        key = f'_{attribute}_table'
        if getattr(self, key, None) is None or len(getattr(self, key)) != len(self.boxes):
            setattr(self, key, np.array([getattr(b, attribute) for b in self.boxes]))
        return getattr(self, key)

    def _shade(self, p: np.ndarray, kind: np.ndarray, face: np.ndarray, dirs: np.ndarray) -> np.ndarray:
        seed = self.seed
        colour = np.zeros((len(p), 3))
        sky = kind == -1
        elevation = np.clip(-dirs[sky, 1] / np.linalg.norm(dirs[sky], axis=1) * 3, 0, 1)[:, None]
        colour[sky] = SKY_HORIZON * (1 - elevation) + SKY_TOP * elevation

        g = kind == -2
        x, z = p[g, 0], p[g, 2]
        grain = 0.6 * value_noise(x, z, 0.35, seed) + 0.4 * value_noise(x, z, 0.09, seed + 1)
        road = np.abs(x) < ROAD_HALF_WIDTH
        base = np.where(road[:, None], (0.22 + 0.16 * grain)[:, None] * np.ones(3),
                        (0.55 + 0.2 * grain)[:, None] * np.array([1.0, 0.97, 0.9]))
        tiles = (~road) & ((np.abs(np.mod(x, 1.0) - 0.5) > 0.47) | (np.abs(np.mod(z, 1.0) - 0.5) > 0.47))
        base[tiles] *= 0.7
        centre = (np.abs(x) < 0.08) & (np.mod(z, 9.0) < 3.0)
        edges = np.abs(np.abs(x) - (ROAD_HALF_WIDTH - 0.25)) < 0.07
        base[centre | edges] = 0.92
        colour[g] = base

        boxes = kind >= 0
        if boxes.any():
            idx = kind[boxes]
            pts, fc = p[boxes], face[boxes]
            # in-face texture coordinates: the two axes other than the face normal
            u = np.where(fc == 0, pts[:, 2], pts[:, 0])
            v = np.where(fc == 1, pts[:, 2], pts[:, 1])
            noise = 0.65 * value_noise(u, v, 0.5, seed + 2) + 0.35 * value_noise(u, v, 0.12, seed + 3)
            base = self._table('colour')[idx]
            styles = self._table('style')[idx]
            shade = 0.75 + 0.5 * noise
            building = styles == 'building'
            windows = building & (np.mod(u, 3.0) > 0.9) & (np.mod(u, 3.0) < 2.3) \
                & (np.mod(v, 3.2) > 1.0) & (np.mod(v, 3.2) < 2.6) & (fc != 1)
            car_glass = (styles == 'car') & (pts[:, 1] < ROAD_Y - 1.0)
            out = base * shade[:, None]
            out[windows] = np.array([0.12, 0.16, 0.22]) + 0.15 * noise[windows, None]
            out[car_glass] = np.array([0.1, 0.12, 0.15]) + 0.1 * noise[car_glass, None]
            colour[boxes] = out
        return np.clip(colour, 0, 1)


def speed_profile(t: np.ndarray, cruise: float = 8.0) -> np.ndarray:
    """Speed (m/s) over time: accelerate, cruise, brake to a 2 s stop, drive on."""
    t = np.asarray(t, dtype=np.float64)
    accel = np.clip(t / 3.0, 0, 1) * cruise
    brake_start, stop_start, stop_end = 12.0, 15.0, 17.0
    v = accel.copy()
    braking = (t >= brake_start) & (t < stop_start)
    v[braking] = cruise * (stop_start - t[braking]) / (stop_start - brake_start)
    v[(t >= stop_start) & (t < stop_end)] = 0.0
    after = t >= stop_end
    v[after] = np.clip((t[after] - stop_end) / 3.0, 0, 1) * cruise
    # a gentle, smooth variation so speed is never exactly constant
    return v * (1 + 0.05 * np.sin(0.7 * t))


def positions(t: np.ndarray, cruise: float = 8.0, dt: float = 1e-3) -> np.ndarray:
    """Distance travelled from t=0 (integral of speed_profile, fine trapezoid)."""
    grid = np.arange(0, float(np.max(t)) + 2 * dt, dt)
    v = speed_profile(grid, cruise)
    s = np.concatenate([[0.0], np.cumsum((v[1:] + v[:-1]) * dt / 2)])
    return np.interp(t, grid, s)


@dataclass(frozen=True)
class CameraRig:
    """The synthetic camera: image size, horizontal field of view, and height above the road.

    Another rig (field of view, mounting height) is another camera for the learner: the
    same world looks different and metric scale must be learnt again.
    """

    width: int = 640
    height: int = 192
    fov_x_deg: float = 80.0
    mount_height: float = 1.65

    @property
    def K(self) -> np.ndarray:
        f = self.width / 2 / np.tan(np.radians(self.fov_x_deg) / 2)
        return np.array([[f, 0, (self.width - 1) / 2], [0, f, (self.height - 1) / 2 - self.height * 0.05],
                         [0, 0, 1.0]])

    def rays(self, offset: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
        K = self.K
        v, u = np.mgrid[0:self.height, 0:self.width].astype(np.float64)
        x = (u + offset[0] - K[0, 2]) / K[0, 0]
        y = (v + offset[1] - K[1, 2]) / K[1, 1]
        return np.stack([x, y, np.ones_like(x)], -1)


def _screen_rect(box: Box, origin: np.ndarray, K: np.ndarray, w: int, h: int, max_depth: float):
    """Pixel rectangle (u0, u1, v0, v1) that can see the box, or None if it cannot be seen."""
    lo, hi = box.lo - origin, box.hi - origin
    if hi[2] <= 1e-3 or lo[2] > max_depth:
        return None
    if lo[2] <= 0.05:  # box reaches behind the camera: no safe projection, test every pixel
        return 0, w, 0, h
    corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
    u = K[0, 0] * corners[:, 0] / corners[:, 2] + K[0, 2]
    v = K[1, 1] * corners[:, 1] / corners[:, 2] + K[1, 2]
    u0, u1 = max(int(np.floor(u.min())) - 1, 0), min(int(np.ceil(u.max())) + 2, w)
    v0, v1 = max(int(np.floor(v.min())) - 1, 0), min(int(np.ceil(v.max())) + 2, h)
    return (u0, u1, v0, v1) if u0 < u1 and v0 < v1 else None


SUPERSAMPLE = ((-0.25, -0.25), (0.25, -0.25), (-0.25, 0.25), (0.25, 0.25))


def render(world: World, camera: CameraRig, z: float) -> tuple[np.ndarray, np.ndarray]:
    """RGB uint8 [H,W,3] (4x supersampled) and depth float32 [H,W] (inf = sky) at position z."""
    origin = np.array([0.0, ROAD_Y - camera.mount_height, z])
    colour = sum(world.cast(origin, camera, offset)[1] for offset in SUPERSAMPLE) / len(SUPERSAMPLE)
    depth = world.cast(origin, camera, shade=False)[0]
    return (colour * 255 + 0.5).astype(np.uint8), depth.astype(np.float32)


@dataclass(frozen=True)
class SyntheticFrame:
    stamp: float
    rgb: np.ndarray
    depth: np.ndarray
    speed: float
    position: float  # metres along the street (camera z)


def drive(frames: int, seed: int, camera: CameraRig | None = None, rate_hz: float = 10.0,
          start_time: float = 0.0, cruise: float = 8.0):
    """Yield frames of a drive; the world is long enough for all of them."""
    camera = camera or CameraRig()
    stamps = start_time + np.arange(frames) / rate_hz
    zs = positions(stamps, cruise)
    world = World.generate(float(zs[-1]) + 10, seed)
    for t, z in zip(stamps, zs):
        rgb, depth = render(world, camera, float(z))
        yield SyntheticFrame(float(t), rgb, depth, float(speed_profile(np.array([t]), cruise)[0]), float(z))


# ---------------------------------------------------------------------- KITTI-style output

DATE = '2000_01_01'
EPOCH = 946684800.0  # 2000-01-01T00:00:00Z, the synthetic drive's time origin
LAT0, LON0, ALT0 = 49.0, 8.4, 115.0
EARTH_RADIUS = 6378137.0


def kitti_timestamp(stamp: float) -> str:
    import datetime
    whole = int(np.floor(stamp))
    nanos = int(round((stamp - whole) * 1e9))
    if nanos == 1_000_000_000:
        whole, nanos = whole + 1, 0
    base = datetime.datetime.fromtimestamp(EPOCH + whole, datetime.timezone.utc)
    return base.strftime('%Y-%m-%d %H:%M:%S') + f'.{nanos:09d}'


def position_to_latlon(north: float) -> tuple[float, float]:
    """Inverse of KITTI's Mercator projection for a drive heading due north from (LAT0, LON0)."""
    scale = np.cos(np.radians(LAT0))
    y0 = scale * EARTH_RADIUS * np.log(np.tan(np.pi / 4 + np.radians(LAT0) / 2))
    lat = 2 * np.arctan(np.exp((y0 + north) / (scale * EARTH_RADIUS))) - np.pi / 2
    return float(np.degrees(lat)), LON0


def _render_frame(args):
    world, camera, z = args
    return render(world, camera, z)


def write_kitti_drive(out_dir, frames: int, seed: int, camera: CameraRig | None = None,
                      rate_hz: float = 10.0, workers: int = 2, progress=None):
    """Write a synthetic drive in the KITTI raw layout (camera 2 only) and return its path.

    Written: image_02/{data/*.png, timestamps.txt, poses.txt}, oxts/{data, timestamps.txt},
    proj_depth/velodyne/image_02/*.npz (exact depth, 0 = sky) and the date folder's
    calib_cam_to_cam.txt. OXTS vf/vn is the true speed, lat/lon the true position.
    """
    from multiprocessing import get_context
    from pathlib import Path

    camera = camera or CameraRig()
    width, height = camera.width, camera.height
    root = Path(out_dir) / DATE
    drive_dir = root / f'{DATE}_drive_{seed:04d}_sync'
    for sub in ('image_02/data', 'oxts/data', 'proj_depth/velodyne/image_02'):
        (drive_dir / sub).mkdir(parents=True, exist_ok=True)
    stamps = np.arange(frames) / rate_hz
    zs = positions(stamps)
    speeds = speed_profile(stamps)
    accel = np.gradient(speeds, stamps) if frames > 1 else np.zeros(frames)
    world = World.generate(float(zs[-1]) + 10, seed)
    K = camera.K
    P = np.hstack([K, np.zeros((3, 1))])
    calib = [f'calib_time: synthetic seed {seed}', 'corner_dist: 0']
    for cam in range(4):
        calib += [f'S_rect_0{cam}: {width:e} {height:e}',
                  f'R_rect_0{cam}: ' + ' '.join(f'{v:e}' for v in np.eye(3).ravel()),
                  f'P_rect_0{cam}: ' + ' '.join(f'{v:e}' for v in P.ravel())]
    (root / 'calib_cam_to_cam.txt').write_text('\n'.join(calib) + '\n')
    pool = get_context('fork').Pool(workers) if workers > 1 else None
    try:
        results = (pool.imap if pool else map)(_render_frame, [(world, camera, float(z)) for z in zs])
        poses = []
        for i, (rgb, depth) in enumerate(results):
            cv2.imwrite(str(drive_dir / 'image_02' / 'data' / f'{i:010d}.png'), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
            np.savez_compressed(drive_dir / 'proj_depth' / 'velodyne' / 'image_02' / f'{i:010d}.npz',
                                velodyne_depth=np.where(np.isfinite(depth), depth, 0).astype(np.float32))
            lat, lon = position_to_latlon(float(zs[i]))
            oxts = [lat, lon, ALT0, 0.0, 0.0, np.pi / 2, speeds[i], 0.0, speeds[i], 0.0, 0.0,
                    accel[i], 0.0, 9.81, accel[i], 0.0, 9.81, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.02, 0.02, 4, 10, 5, 5, 5]
            (drive_dir / 'oxts' / 'data' / f'{i:010d}.txt').write_text(' '.join(f'{v:.12g}' for v in oxts) + '\n')
            pose = np.hstack([np.eye(3), [[0.0], [0.0], [zs[i]]]])
            poses.append(' '.join(f'{v:e}' for v in pose.ravel()))
            if progress:
                progress(i + 1, frames)
    finally:
        if pool:
            pool.close()
            pool.join()
    times = '\n'.join(kitti_timestamp(t) for t in stamps) + '\n'
    (drive_dir / 'image_02' / 'timestamps.txt').write_text(times)
    (drive_dir / 'oxts' / 'timestamps.txt').write_text(times)
    (drive_dir / 'image_02' / 'poses.txt').write_text('\n'.join(poses) + '\n')
    return drive_dir
