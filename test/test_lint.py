"""The code style check, as ROS 2 packages run ament_flake8 and ament_pep257 from their tests."""
import shutil
import subprocess
import sys
from pathlib import Path

from helpers import REPO


def test_ruff_finds_nothing():
    ruff = shutil.which('ruff', path=str(Path(sys.executable).parent)) or shutil.which('ruff')
    assert ruff, 'ruff is not installed (requirements.txt pins it)'
    result = subprocess.run([ruff, 'check', '--no-cache', str(REPO)], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stdout + result.stderr
