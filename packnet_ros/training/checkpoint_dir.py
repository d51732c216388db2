"""The training run's checkpoint folder: step-numbered files, newest valid first, rotation."""
from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from packnet_ros.model.checkpoints import Checkpoint, CheckpointError, load_checkpoint

NAME = re.compile(r'^step_(\d+)\.ckpt$')


class CheckpointDirectory:
    """`step_NNNNNNNNN.ckpt` files in one folder.

    Only names we write count (resume and rotation see the same files); temp files left by
    a write that a crash interrupted are removed when the folder is opened.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path).expanduser()
        self.path.mkdir(parents=True, exist_ok=True)
        for stale in self.path.glob('.*.tmp'):
            stale.unlink()

    def path_for(self, step: int) -> Path:
        return self.path / f'step_{step:09d}.ckpt'

    def checkpoints(self) -> list[Path]:
        """Our checkpoints, newest (highest step) first."""
        found = [(int(m.group(1)), p) for p in self.path.iterdir() if (m := NAME.match(p.name))]
        return [p for _, p in sorted(found, reverse=True)]

    def newest_valid(self) -> tuple[Checkpoint | None, list[str]]:
        """The newest checkpoint that loads, verifies and builds its networks, and the
        reasons each newer one was passed over: whatever a file makes the loader raise, a
        valid one beside it is resumed (a run that cannot start would restart into the same)."""
        rejected = []
        for path in self.checkpoints():
            try:
                ckpt = load_checkpoint(path)
                ckpt.networks()
                return ckpt, rejected
            except CheckpointError as exc:
                rejected.append(str(exc))
            except Exception as exc:  # noqa: BLE001 - e.g. MemoryError for sizes the checks let through
                rejected.append(f'{path}: {exc!r}')
        return None, rejected

    def prune(self, keep_last: int, protect: Iterable[Path | None] = ()) -> list[Path]:
        """Delete all but the newest `keep_last`, never a protected one; returns the deleted."""
        keep = {p for p in protect if p is not None}
        deleted = [p for p in self.checkpoints()[max(keep_last, 1):] if p not in keep]
        for path in deleted:
            path.unlink(missing_ok=True)
        return deleted
