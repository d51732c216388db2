"""Training triplets from recorded data: KITTI raw drives (real or synthetic) and rosbag2.

A drive folder is planned up front (which frames make triplets, and the distances between
them, from OXTS speed) and its images are read lazily, one triplet per item, so a data set
of many drives needs no more memory than a batch, by the rules (TripletRules, SpeedTrack,
choose_context, NetworkSize) the online stream applies. A bag is replayed through the
TripletStream the online node feeds, so its triplets are the ones the node would make.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from packnet_ros.data.camera_stream import TripletStream
from packnet_ros.data.decode import calibration_of, speed_of, stamp_seconds, to_rgb
from packnet_ros.data.kitti import KittiDrive
from packnet_ros.data.split import SplitError, read_split
from packnet_ros.data.stream import NetworkSize, Skip, SpeedTrack, Triplet, TripletRules, choose_context
from packnet_ros.image import read_rgb


@dataclass(frozen=True)
class PlannedTriplet:
    frames: tuple[int, int, int]  # positions in the drive's frame list: previous, target, next
    distances: tuple[float, float]
    stamp: float


def plan_triplets(stamps: list[float], speed_samples: list[tuple[float, float]], rules: TripletRules | None = None
                  ) -> tuple[list[PlannedTriplet], Counter[Skip]]:
    """Triplets a recorded drive offers, with the online stream's rules (speed coverage, frame
    gaps, context choice, static context) and the same skip reasons; by distance, also the
    targets the online window cannot centre (the first and last `stride` frames)."""
    rules = rules or TripletRules()
    stride = rules.stride
    track = SpeedTrack.for_rules(rules, max_samples=len(speed_samples) + 1)
    skipped: Counter[Skip] = Counter()
    for stamp, speed in sorted(speed_samples):
        reason = track.add(stamp, speed)
        if reason:
            skipped[reason] += 1
    plans = []
    # By distance, targets near the ends of a recording take what context there is.
    edge = 1 if rules.context_distance > 0 else stride
    for i in range(edge, len(stamps) - edge):
        reach = (min(stride, i), min(stride, len(stamps) - 1 - i))
        if rules.broken(stamps[i - reach[0]:i + reach[1] + 1]):
            skipped[Skip.GAP] += 1
            continue
        context = choose_context(track, stamps, i, rules, reach)
        if context.skip:
            skipped[Skip.NO_SPEED if context.skip is Skip.PENDING else context.skip] += 1  # offline, none is coming
        else:
            previous, following = context.offsets
            plans.append(PlannedTriplet((i + previous, i, i + following), context.distances, stamps[i]))
    return plans, skipped


class DriveTriplets(Dataset):
    """A KITTI-layout drive folder (KITTI raw, or `packnet-ros synth`) as lazily read triplets."""

    def __init__(self, drive_dir: str | Path, height: int, width: int, camera: int = 2,
                 rules: TripletRules | None = None, targets: set[int] | None = None):
        """targets: frame numbers allowed as triplet targets (a split file's), None for all."""
        self.drive = KittiDrive(drive_dir, camera)
        self.size = NetworkSize(height, width)
        stamps = self.drive.stamps()
        samples = [(p.stamp, p.speed) for p in self.drive.oxts()]
        self.plans, self.skipped = plan_triplets(stamps, samples, rules)
        if targets is not None:
            self.plans = [p for p in self.plans if self.drive.frames[p.frames[1]] in targets]
        image_h, image_w = read_rgb(self.drive.image_path(self.drive.frames[0])).shape[:2]
        self.K = self.size.intrinsics(self.drive.intrinsics(), image_w, image_h)

    def __len__(self) -> int:
        return len(self.plans)

    def __getitem__(self, index: int) -> Triplet:
        plan = self.plans[index]
        images = [self.size.fit(read_rgb(self.drive.image_path(self.drive.frames[f]))) for f in plan.frames]
        return Triplet(np.stack(images), np.array(plan.distances, np.float32), plan.stamp, self.K)

    def ground_truth(self, index: int) -> np.ndarray | None:
        """Ground-truth depth [H,W] (metres, 0 = none) of triplet `index`'s target frame, if the drive has it."""
        frame = self.drive.frames[self.plans[index].frames[1]]
        shape = read_rgb(self.drive.image_path(frame)).shape[:2]
        return self.drive.ground_truth(frame, shape)


class TripletList(Dataset):
    def __init__(self, triplets: list[Triplet]):
        self.triplets = triplets

    def __len__(self) -> int:
        return len(self.triplets)

    def __getitem__(self, index: int) -> Triplet:
        return self.triplets[index]


@dataclass(frozen=True)
class BagTopics:
    image: str = '/kitti/camera/image_raw'
    camera_info: str = '/kitti/camera/camera_info'
    speed: str = '/kitti/odom'  # nav_msgs/Odometry, TwistStamped or TwistWithCovarianceStamped


def bag_triplets(bag: str | Path, height: int, width: int, topics: BagTopics | None = None,
                 rules: TripletRules | None = None) -> tuple[list[Triplet], Counter[Skip]]:
    """Replay a rosbag2 (mcap or sqlite3) through the online TripletStream: frames at network
    size, rectified where the camera is distorted, each with its intrinsics."""
    from packnet_ros.data.bag import deserialize, read_messages, topics_of

    topics = topics or BagTopics()
    available = topics_of(bag)
    missing = [t for t in (topics.image, topics.camera_info, topics.speed) if t not in available]
    if missing:
        raise ValueError(f'{bag} lacks {missing}; it has: ' + ', '.join(f'{t} ({m})' for t, m in available.items()))
    stream = TripletStream(height, width, rules, carry_intrinsics=True)
    triplets = []
    for topic, msgtype, _, raw in read_messages(bag, [topics.image, topics.camera_info, topics.speed]):
        msg = deserialize(raw, msgtype)
        if topic == topics.camera_info:
            stream.set_camera(lambda: calibration_of(msg))
        elif topic == topics.speed:
            triplets += stream.add_speed(stamp_seconds(msg.header), speed_of(msg))
        else:
            triplets += stream.add_frame(stamp_seconds(msg.header), lambda: to_rgb(msg))
    return triplets, stream.skipped


def split_triplets(split: str | Path, height: int, width: int, rules: TripletRules | None = None
                   ) -> list[DriveTriplets]:
    """The drives a KITTI split file lists (packnet-sfm's, KITTI's or monodepth2's format), with
    only the listed frames as targets. Paths are relative to the split file's folder or, as
    packnet-sfm keeps them in KITTI_raw/data_splits/, to its parent; missing data is listed."""
    split = Path(split)
    roots = [split.parent, split.parent.parent]
    errors = []
    for root in roots:
        try:
            samples = read_split(root, split)
            break
        except SplitError as exc:
            errors.append(str(exc))
    else:
        raise SplitError(errors[0] if len(errors) == 1 else '\n'.join(errors))
    frames: dict[tuple[Path, int], set[int]] = {}
    for sample in samples:
        frames.setdefault((sample.drive, sample.camera), set()).add(sample.frame)
    return [DriveTriplets(drive, height, width, camera, rules, targets) for (drive, camera), targets in frames.items()]


def open_source(path: str | Path, height: int, width: int, topics: BagTopics | None = None,
                rules: TripletRules | None = None) -> list[Dataset]:
    """A drive folder, a split file or a rosbag2 directory as Datasets of triplets."""
    path = Path(path)
    if path.is_file():
        return list(split_triplets(path, height, width, rules))
    if (path / 'metadata.yaml').is_file():
        return [TripletList(bag_triplets(path, height, width, topics, rules)[0])]
    if KittiDrive.is_drive(path):
        return [DriveTriplets(path, height, width, rules=rules)]
    raise FileNotFoundError(f'{path} is neither a KITTI-layout drive folder (image_02/data), a split file '
                            'listing frames, nor a rosbag2 (metadata.yaml)')


def spread_frames(datasets: list[Dataset], count: int) -> list[np.ndarray]:
    """Up to `count` target frames (RGB uint8 at the data sets' size), evenly spread over all
    triplets: calibration frames that see the whole drive, not its first seconds."""
    index = [(d, i) for d in datasets for i in range(len(d))]
    if not index:
        return []
    picks = np.unique(np.linspace(0, len(index) - 1, min(count, len(index))).round().astype(int))
    return [index[k][0][index[k][1]].images[1] for k in picks]
