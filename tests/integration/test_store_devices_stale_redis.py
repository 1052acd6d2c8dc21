"""The stale-on-arrival device cases of tests/unit/test_store_devices_stale.py on a real redis-server."""

from __future__ import annotations

import pytest
from unit.test_store_devices_stale import *  # noqa: F403


@pytest.fixture
def r(redis_client):  # noqa: F811
    return redis_client
