"""The WindowStore cases of tests/unit/test_store_windows.py, on the private Redis Cluster
(3 masters + 3 replicas): one script call per station slot, MOVED-free routing by hash tag,
the same stored windows and the same counts as on one Redis."""

from __future__ import annotations

import pytest
from unit.test_store_windows import *  # noqa: F403  (the same cases, collected here again)


@pytest.fixture
def r(cluster_client):  # noqa: F811  (overrides the fakeredis fixture of the imported module)
    return cluster_client


def test_calls_grouping_stations_equal_one_call_per_station(r, monkeypatch):  # noqa: F811
    """On a cluster client every script call holds one station (or one global alias), whatever
    `call_records` says: a call never spans two slots. (The single-Redis grouping is compared
    with per-station calls in the unit case of the same name.)"""
    from parsers.catalogue import Catalogue
    from store.poll_write import PollWrite
    from store.windows import WindowStore

    groups = []
    group = PollWrite.group

    def spy(self, *args):
        out = list(group(self, *args))
        groups.extend(len(units) for units, _ in out)
        return iter(out)

    monkeypatch.setattr(PollWrite, "group", spy)
    ws = WindowStore(r, Catalogue.build(), call_records=200)
    assert ws.cluster
    msgs = [dev(f"st{i}", "H1", i, T0 + i) for i in range(40)]  # noqa: F405
    res = ws.apply(msgs, T0 + 100)  # noqa: F405
    assert res.applied == 40
    assert groups and set(groups) == {1} and len(groups) == 40
