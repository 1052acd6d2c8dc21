"""kafka.static_membership / kafka.assignor: validation in the settings, how "auto" follows
the broker (and stays off static membership on Tansu, whose coordinator can stall a group of
static members), and the consumer kwargs that result."""

from __future__ import annotations

from pathlib import Path

import pytest
from kafka import KafkaConsumer

from ingest.consumer import (
    GroupFeatures,
    consumer_config,
    features_from_versions,
    looks_like_tansu,
    resolve_policy,
)
from stationflow.settings import ConfigError, Settings

pytestmark = pytest.mark.unit

#: ApiVersions of the bundled broker (Tansu 0.6.0), as kafka-python sees them
TANSU_API_VERSIONS = {
    0: (0, 11), 1: (0, 17), 2: (0, 9), 3: (0, 12), 8: (0, 9), 9: (0, 9), 10: (0, 6), 11: (0, 9),
    12: (0, 4), 13: (0, 5), 14: (0, 5), 15: (0, 5), 16: (0, 5), 17: (0, 1), 18: (0, 4), 19: (0, 7),
    20: (0, 6), 21: (0, 2), 22: (0, 5), 24: (0, 5), 25: (0, 4), 26: (0, 4), 28: (0, 4), 29: (0, 3),
    30: (0, 3), 32: (0, 4), 36: (0, 2), 42: (0, 2), 44: (0, 1), 46: (0, 0), 50: (0, 0), 51: (0, 0),
    60: (0, 1), 69: (0, 0), 71: (0, 0), 75: (0, 0),
}
#: the client-facing keys of an Apache Kafka 3.9 broker that matter here
KAFKA_39_API_VERSIONS = {0: (0, 11), 1: (0, 17), 3: (0, 12), 11: (0, 9), 14: (0, 5), 23: (0, 4)}
BASE = {"bootstrap_servers": "h:9092", "group_id": "g", "enable_auto_commit": False}


# ---- settings ------------------------------------------------------------------------------


def test_defaults_are_auto_and_travel_with_the_consumer_kwargs() -> None:
    s = Settings.from_dict({})
    assert (s.kafka.static_membership, s.kafka.assignor) == ("auto", "auto")
    cfg = s.kafka.consumer_config()
    assert (cfg.static_membership, cfg.assignor) == ("auto", "auto")
    # attributes, not keys: the dict still goes straight into KafkaConsumer
    assert "static_membership" not in cfg and "assignor" not in cfg
    assert set(cfg) <= set(KafkaConsumer.DEFAULT_CONFIG)
    assert "static_membership" not in s.kafka.producer_config()


def test_values_from_toml_env_and_booleans(tmp_path: Path) -> None:
    p = tmp_path / "sf.toml"
    p.write_text('[kafka]\nstatic_membership = "off"\nassignor = "range"\n')
    s = Settings.load(p, env={})
    assert (s.kafka.static_membership, s.kafka.assignor) == ("off", "range")
    cfg = s.kafka.consumer_config()
    assert (cfg.static_membership, cfg.assignor) == ("off", "range")
    s = Settings.load(p, env={"STATIONFLOW_KAFKA_STATIC_MEMBERSHIP": "on",
                              "STATIONFLOW_KAFKA_ASSIGNOR": "cooperative-sticky"})
    assert (s.kafka.static_membership, s.kafka.assignor) == ("on", "cooperative-sticky")
    assert set(s.env_applied) == {"STATIONFLOW_KAFKA_STATIC_MEMBERSHIP", "STATIONFLOW_KAFKA_ASSIGNOR"}
    assert Settings.from_dict({"kafka": {"static_membership": False}}).kafka.static_membership == "off"
    assert Settings.from_dict({"kafka": {"static_membership": True}}).kafka.static_membership == "on"


def test_round_trip_through_toml() -> None:
    s = Settings.from_dict({"kafka": {"static_membership": "off", "assignor": "roundrobin"}})
    d = s.to_dict(masked=False)
    assert (d["kafka"]["static_membership"], d["kafka"]["assignor"]) == ("off", "roundrobin")
    assert Settings.from_dict(d).kafka == s.kafka


@pytest.mark.parametrize(("kafka", "message"), [
    ({"static_membership": "of"}, "kafka.static_membership: must be one of auto, on, off, got 'of' "
                                  "(did you mean 'off'?)"),
    ({"static_membership": 1}, "kafka.static_membership: expected a string, got integer 1"),
    ({"assignor": "sticky"}, "kafka.assignor: must be one of auto, cooperative-sticky, range, roundrobin, "
                             "got 'sticky' (did you mean 'cooperative-sticky'?)"),
    ({"consumer": {"assignor": "range"}}, "kafka.consumer.assignor: set it in [kafka] (kafka.assignor)"),
    ({"producer": {"static_membership": "off"}}, "kafka.producer.static_membership: set it in [kafka]"),
])
def test_invalid_values_name_the_key(kafka: dict, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        Settings.from_dict({"kafka": kafka})
    assert str(e.value).startswith(message)


def test_invalid_env_value_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="kafka.assignor: must be one of"):
        Settings.load(env={"STATIONFLOW_KAFKA_ASSIGNOR": "sticky"})


# ---- what the broker supports ----------------------------------------------------------------


def test_tansu_is_recognised_by_its_api_versions() -> None:
    assert looks_like_tansu(TANSU_API_VERSIONS)
    assert not looks_like_tansu(KAFKA_39_API_VERSIONS)
    assert not looks_like_tansu({11: (0, 9)})  # too little to tell: not Tansu
    assert not looks_like_tansu(None)
    tansu = features_from_versions((3, 9), TANSU_API_VERSIONS)
    assert not tansu.static_membership and tansu.cooperative
    assert "Tansu" in (tansu.note or "")
    kafka = features_from_versions((3, 9), KAFKA_39_API_VERSIONS)
    assert kafka == GroupFeatures((3, 9), True, True)


def test_auto_follows_the_broker_and_on_off_win() -> None:
    tansu = features_from_versions((3, 9), TANSU_API_VERSIONS)
    kafka = features_from_versions((3, 9), KAFKA_39_API_VERSIONS)
    old = GroupFeatures((2, 0), False, False)
    assert resolve_policy(kafka).static_membership
    assert not resolve_policy(tansu).static_membership
    assert "Tansu" in resolve_policy(tansu).static_reason
    assert not resolve_policy(old).static_membership
    assert resolve_policy(tansu, "on").static_membership  # the operator's call
    assert "Tansu" in resolve_policy(tansu, "on").static_reason
    assert not resolve_policy(kafka, "off").static_membership
    assert resolve_policy(kafka).assignor == "cooperative-sticky"
    assert resolve_policy(tansu).assignor == "cooperative-sticky"
    assert resolve_policy(old).assignor is None  # kafka-python's default
    assert resolve_policy(old, assignor="cooperative-sticky").assignor == "cooperative-sticky"
    assert resolve_policy(kafka, assignor="range").assignor == "range"
    with pytest.raises(ValueError, match="kafka.static_membership"):
        resolve_policy(kafka, "yes")
    with pytest.raises(ValueError, match="kafka.assignor"):
        resolve_policy(kafka, assignor="sticky")


# ---- the consumer kwargs -----------------------------------------------------------------------


def _strategy(cfg: dict) -> list[str]:
    return [a.name for a in cfg.get("partition_assignment_strategy", ())]


def test_consumer_kwargs_on_tansu_and_on_kafka() -> None:
    tansu = features_from_versions((3, 9), TANSU_API_VERSIONS)
    kafka = features_from_versions((3, 9), KAFKA_39_API_VERSIONS)
    on_tansu = consumer_config(BASE, tansu, instance_id="ingest-1")
    assert "group_instance_id" not in on_tansu
    assert _strategy(on_tansu) == ["cooperative-sticky"]
    on_kafka = consumer_config(BASE, kafka, instance_id="ingest-1")
    assert on_kafka["group_instance_id"] == "ingest-1"
    forced = consumer_config(BASE, tansu, instance_id="ingest-1", static_membership="on", assignor="range")
    assert forced["group_instance_id"] == "ingest-1" and _strategy(forced) == ["range"]
    rr = consumer_config(BASE, kafka, instance_id="ingest-1", static_membership="off", assignor="roundrobin")
    assert "group_instance_id" not in rr and _strategy(rr) == ["roundrobin"]


def test_consumer_kwargs_follow_the_settings_policy() -> None:
    kafka = features_from_versions((3, 9), KAFKA_39_API_VERSIONS)
    base = Settings.from_dict({"kafka": {"static_membership": "off", "assignor": "range",
                                         "group_instance_id": "from-config"}}).kafka.consumer_config()
    cfg = consumer_config(base, kafka, instance_id="ingest-1")
    assert "group_instance_id" not in cfg and _strategy(cfg) == ["range"]
    # explicit arguments win over what the settings carry
    cfg = consumer_config(base, kafka, instance_id="ingest-1", static_membership="auto", assignor="auto")
    assert cfg["group_instance_id"] == "ingest-1" and _strategy(cfg) == ["cooperative-sticky"]
    assert set(cfg) <= set(KafkaConsumer.DEFAULT_CONFIG)
