"""The batch-tracker cases of tests/unit/test_tracker.py on a real redis-server and on the
private Redis Cluster (batch hashes and the due index live in different slots there)."""

from __future__ import annotations

import pytest
from unit.test_tracker import *  # noqa: F403


@pytest.fixture
def fake_redis(any_redis):  # noqa: F811  (overrides conftest's fakeredis for these cases)
    return any_redis
