"""KITTI split files: which frames of which drives a training or test set uses.

Two formats are common: packnet-sfm's and KITTI's (`DATE/DRIVE/image_02/data/FRAME.png`,
optionally followed by the right image) and monodepth2's (`DATE/DRIVE FRAME l|r`).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

# "2011_09_26/2011_09_26_drive_0002_sync/image_02/data/0000000069.png [right image ...]"
# (packnet-sfm, KITTI Eigen files) or "2011_09_26/2011_09_26_drive_0002_sync 69 l" (monodepth2).
_IMAGE_LINE = re.compile(r'^(?P<drive>\S+)/image_0(?P<camera>[23])/data/(?P<frame>\d+)\.\w+$')
_SIDE = {'l': 2, 'r': 3}


class SplitError(ValueError):
    """A split file that cannot be used as written."""


@dataclass(frozen=True)
class Sample:
    drive: Path
    camera: int
    frame: int


def parse_split_line(line: str) -> tuple[str, int, int] | None:
    """One split line -> (drive folder relative to the root, camera, frame); None for blanks."""
    fields = line.split()
    if not fields or fields[0].startswith('#'):
        return None
    match = _IMAGE_LINE.match(fields[0])
    if match:
        return match['drive'], int(match['camera']), int(match['frame'])
    if len(fields) >= 2 and fields[1].isdigit():
        side = fields[2].lower() if len(fields) > 2 else 'l'
        if side in _SIDE:
            return fields[0], _SIDE[side], int(fields[1])
    raise SplitError(f'cannot read split line {line.strip()!r}: expected DATE/DRIVE/image_02/data/FRAME.png '
                     f'or "DATE/DRIVE FRAME l|r"')


def read_split(root: str | Path, split: str | Path) -> list[Sample]:
    """Frames a split file names under `root`; every missing drive and image is listed at once."""
    root, split = Path(root), Path(split)
    if not split.is_file():
        raise FileNotFoundError(f'split file {split} does not exist')
    samples, missing_drives, missing_images = [], set(), []
    for number, line in enumerate(split.read_text().splitlines(), 1):
        try:
            parsed = parse_split_line(line)
        except SplitError as exc:
            raise SplitError(f'{split}:{number}: {exc}') from None
        if parsed is None:
            continue
        drive, camera, frame = parsed
        sample = Sample(root / drive, camera, frame)
        image = sample.drive / f'image_0{camera}' / 'data' / f'{frame:010d}.png'
        if not sample.drive.is_dir():
            missing_drives.add(drive)
        elif not image.is_file():
            missing_images.append(str(image.relative_to(root)))
        else:
            samples.append(sample)
    if missing_drives or missing_images:
        lines = [f'{split} names data that is not under {root}:']
        lines += [f'  missing drive {d}' for d in sorted(missing_drives)]
        lines += [f'  missing image {i}' for i in missing_images[:20]]
        if len(missing_images) > 20:
            lines.append(f'  ... and {len(missing_images) - 20} more images')
        raise SplitError('\n'.join(lines))
    if not samples:
        raise SplitError(f'{split} names no frames')
    return samples
