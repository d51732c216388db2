"""Configuration files are found, and Fast DDS gets our profile unless the user chose one."""
from packnet_ros.ros.resources import FASTDDS_PROFILE_VARIABLE, config_dir, use_fastdds_profile

from helpers import REPO


def test_config_dir_is_the_source_tree_config():
    assert config_dir() == REPO / 'config' and (config_dir() / 'fastdds.xml').is_file()


def test_our_profile_unless_one_is_set(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    environ = {}
    assert use_fastdds_profile(environ) == str(REPO / 'config' / 'fastdds.xml') == environ[FASTDDS_PROFILE_VARIABLE]
    mine = {FASTDDS_PROFILE_VARIABLE: '/etc/my_profile.xml'}
    assert use_fastdds_profile(mine) == '/etc/my_profile.xml'
    (tmp_path / 'DEFAULT_FASTRTPS_PROFILES.xml').write_text('<profiles/>')  # Fast DDS reads this one itself
    assert use_fastdds_profile({}) == ''
