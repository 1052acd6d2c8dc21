"""The due-index cases of tests/unit/test_store_order_closer.py on a real redis-server and on a Redis Cluster."""

from __future__ import annotations

import pytest
from unit.test_store_order_closer import *  # noqa: F403


@pytest.fixture
def r(any_redis):  # noqa: F811  (one Redis, then the Redis Cluster)
    return any_redis
