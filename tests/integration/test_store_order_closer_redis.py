"""The due-index cases of tests/unit/test_store_order_closer.py on a real redis-server."""

from __future__ import annotations

import pytest
from unit.test_store_order_closer import *  # noqa: F403


@pytest.fixture
def r(redis_client):  # noqa: F811
    return redis_client
