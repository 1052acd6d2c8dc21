"""The WindowStore cases of tests/unit/test_store_windows.py, on a real redis-server: the Lua
scripts must behave the same under Redis's Lua 5.1 as under fakeredis's lupa."""

from __future__ import annotations

import pytest
from unit.test_store_windows import *  # noqa: F403  (the same cases, collected here again)


@pytest.fixture
def r(redis_client):  # noqa: F811  (overrides the fakeredis fixture of the imported module)
    return redis_client
