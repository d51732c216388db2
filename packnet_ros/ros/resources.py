"""The package's installed resources: config files, shipped models, the output folder, Fast DDS's profile."""
from __future__ import annotations

import os
from pathlib import Path

SOURCE_CONFIG = Path(__file__).resolve().parents[2] / 'config'
FASTDDS_PROFILE_VARIABLE = 'FASTRTPS_DEFAULT_PROFILES_FILE'


def config_dir() -> Path:
    """config/ of the source tree, else the installed share/packnet_ros/config."""
    if (SOURCE_CONFIG / 'depth.yaml').is_file():
        return SOURCE_CONFIG
    from ament_index_python.packages import get_package_share_directory
    return Path(get_package_share_directory('packnet_ros')) / 'config'


def shipped_model(name: str = 'synthetic_scale_free.ckpt') -> Path:
    """A model shipped with the package: models/ of the source tree, else share/packnet_ros/models."""
    source = SOURCE_CONFIG.parent / 'models' / name
    if source.is_file():
        return source
    from ament_index_python.packages import get_package_share_directory
    return Path(get_package_share_directory('packnet_ros')) / 'models' / name


def output_dir(environ: dict | None = None) -> Path:
    """Where nodes write what they keep (checkpoints, metrics) unless told otherwise:
    $ROS_HOME/packnet_ros, ROS_HOME defaulting to ~/.ros as for ROS 2's own logs. Not the
    working directory, which under `ros2 launch` is wherever the user happened to be."""
    environ = os.environ if environ is None else environ
    return Path(environ.get('ROS_HOME') or Path.home() / '.ros').expanduser() / 'packnet_ros'


def use_fastdds_profile(environ: dict | None = None) -> str:
    """Point Fast DDS at our profile (large shared-memory segments) unless the user chose one.

    Must run before the first DDS participant of the process is created. Returns the profile
    in effect ('' when the user's own DEFAULT_FASTRTPS_PROFILES.xml in the working directory
    applies).
    """
    environ = os.environ if environ is None else environ
    if not environ.get(FASTDDS_PROFILE_VARIABLE) and not Path('DEFAULT_FASTRTPS_PROFILES.xml').is_file():
        environ[FASTDDS_PROFILE_VARIABLE] = str(config_dir() / 'fastdds.xml')
    return environ.get(FASTDDS_PROFILE_VARIABLE, '')
