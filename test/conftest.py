"""Session-wide test settings."""
import os

import pytest


@pytest.fixture(scope='session', autouse=True)
def private_cache(tmp_path_factory):
    """Automatic ONNX exports (onnxruntime backend) go to a per-run cache, not the user's;
    node processes started by the tests inherit it."""
    previous = os.environ.get('XDG_CACHE_HOME')
    os.environ['XDG_CACHE_HOME'] = str(tmp_path_factory.mktemp('cache'))
    yield
    if previous is None:
        os.environ.pop('XDG_CACHE_HOME', None)
    else:
        os.environ['XDG_CACHE_HOME'] = previous
