"""workers.heartbeat.hold: claimed ticks are never scheduled by a sweeper (the demo's last
drain relies on it, so that no heartbeat batch is created while its workers stop)."""

from __future__ import annotations

from parsers.catalogue import Catalogue
from workers import heartbeat

CAT = Catalogue.build(module_overrides={"customer_mining": {"heartbeat_s": 5}})


def test_held_ticks_are_scheduled_by_no_process(fake_redis) -> None:
    assert heartbeat.hold(fake_redis, CAT, "sf", now_s=1002.0, span_s=20) == 5  # 1000, 1005, ... 1020
    for now in (1002.0, 1007.5, 1019.9, 1020.0):
        assert heartbeat.tick(fake_redis, CAT, now).ticks == []
    assert heartbeat.hold(fake_redis, CAT, "sf", now_s=1002.0, span_s=20) == 0  # already held


def test_the_first_tick_after_the_held_span_is_scheduled(fake_redis) -> None:
    heartbeat.hold(fake_redis, CAT, "sf", now_s=1002.0, span_s=20)
    assert heartbeat.tick(fake_redis, CAT, 1025.0).ticks == ["customer_mining:heartbeat:0:1025"]
