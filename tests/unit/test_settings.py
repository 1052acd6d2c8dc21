"""Settings: defaults, TOML + environment precedence, kafka kwargs, validation messages,
secret masking, the TOML writer and the example file."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from kafka import KafkaConsumer, KafkaProducer
from kafka import codec as kafka_codec

from stationflow.settings import (
    ENV_OVERRIDES,
    SECTIONS,
    ConfigError,
    Settings,
    dump_toml,
    mask_url,
)
from workers.scheduling import ScheduleOptions

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "stationflow.example.toml"


def write(tmp_path: Path, text: str, name: str = "sf.toml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


# ---- defaults ----------------------------------------------------------------------------


def test_defaults_without_any_file() -> None:
    s = Settings.load(env={})
    assert (s.prefix, s.max_depth, s.dlq_raw_max_bytes, s.dlq_maxlen, s.outputs_keep) == (
        "sf", 32, 65536, 100000, 10
    )
    assert s.redis.url == "redis://127.0.0.1:6379/0"
    assert s.kafka.bootstrap_servers == "127.0.0.1:9092"
    assert s.kafka.group_id == "stationflow"
    assert (s.queue.name, s.queue.high_water, s.queue.low_water) == ("stationflow", 10000, 5000)
    assert (s.queue.result_ttl_s, s.queue.failure_ttl_s, s.queue.retries) == (60, 86400, 2)
    assert s.queue.group_size == 16 and ScheduleOptions.from_settings(s).group_size == 16
    one = Settings.from_dict({"queue": {"group_size": 1}})
    assert one.queue.group_size == 1 and ScheduleOptions.from_settings(one).group_size == 1
    with pytest.raises(ConfigError):
        Settings.from_dict({"queue": {"group_size": 0}})
    assert s.batch.sweep_interval_s == 1.0
    assert s.source is None and s.env_applied == ()
    assert len(s.catalogue.topics) == 22


def test_default_kafka_kwargs() -> None:
    k = Settings.from_dict({}).kafka
    c, p = k.consumer_config(), k.producer_config()
    assert c["max_poll_records"] == 10000
    assert c["auto_offset_reset"] == "earliest"
    assert c["enable_auto_commit"] is False
    assert c["group_id"] == "stationflow"
    assert "group_id" not in p
    assert (p["acks"], p["linger_ms"], p["enable_idempotence"]) == ("all", 5, True)
    assert "compression_type" not in p  # unset: kafka-python's own default (none)
    # every key is one kafka-python accepts for that client
    assert set(c) <= set(KafkaConsumer.DEFAULT_CONFIG)
    assert set(p) <= set(KafkaProducer.DEFAULT_CONFIG)


def test_settings_are_frozen_and_configs_are_copies() -> None:
    s = Settings.from_dict({})
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.prefix = "x"  # type: ignore[misc]
    c = s.kafka.consumer_config()
    c["value_deserializer"] = bytes
    assert "value_deserializer" not in s.kafka.consumer_config()
    with pytest.raises(TypeError):
        s.kafka.consumer["group_id"] = "other"  # type: ignore[index]


# ---- kafka: flat vs nested, precedence -----------------------------------------------------


def test_flat_and_nested_kafka_config_are_equivalent() -> None:
    flat = Settings.from_dict({"kafka": {
        "max_poll_records": 10, "linger_ms": 0, "session_timeout_ms": 20000, "compression_type": "gzip",
        "fetch_min_bytes": 1024,
    }})
    nested = Settings.from_dict({"kafka": {
        "consumer": {"max_poll_records": 10, "session_timeout_ms": 20000, "fetch_min_bytes": 1024},
        "producer": {"linger_ms": 0, "compression_type": "gzip"},
    }})
    assert flat.kafka.consumer_config() == nested.kafka.consumer_config()
    assert flat.kafka.producer_config() == nested.kafka.producer_config()
    assert flat.kafka.consumer_config()["max_poll_records"] == 10
    assert "max_poll_records" not in flat.kafka.producer_config()
    assert flat.kafka.producer_config()["compression_type"] == "gzip"
    assert "compression_type" not in flat.kafka.consumer_config()


def test_section_keys_win_over_shared_ones() -> None:
    s = Settings.from_dict({"kafka": {
        "client_id": "shared", "request_timeout_ms": 40000, "max_poll_records": 7,
        "consumer": {"client_id": "ingester", "max_poll_records": 9},
        "producer": {"request_timeout_ms": 50000},
    }})
    c, p = s.kafka.consumer_config(), s.kafka.producer_config()
    assert (c["client_id"], p["client_id"]) == ("ingester", "shared")
    assert (c["request_timeout_ms"], p["request_timeout_ms"]) == (40000, 50000)
    assert c["max_poll_records"] == 9


def test_group_id_only_for_the_consumer() -> None:
    s = Settings.from_dict({"kafka": {"group_id": "g1"}})
    assert s.kafka.consumer_config()["group_id"] == "g1"
    assert "group_id" not in s.kafka.producer_config()
    with pytest.raises(ConfigError, match=r"kafka\.producer\.group_id: unknown key"):
        Settings.from_dict({"kafka": {"producer": {"group_id": "g1"}}})


def test_bootstrap_servers_list_or_comma_string() -> None:
    a = Settings.from_dict({"kafka": {"bootstrap_servers": ["k1:9092", "k2:9093"]}})
    b = Settings.from_dict({"kafka": {"bootstrap_servers": "k1:9092, k2:9093"}})
    assert a.kafka.bootstrap_servers == b.kafka.bootstrap_servers == "k1:9092,k2:9093"
    with pytest.raises(ConfigError, match=r"kafka\.bootstrap_servers: 'k1:port' is not host\[:port\]"):
        Settings.from_dict({"kafka": {"bootstrap_servers": "k1:port"}})
    with pytest.raises(ConfigError, match=r"kafka\.bootstrap_servers: empty broker address"):
        Settings.from_dict({"kafka": {"bootstrap_servers": "k1:9092,"}})


def test_api_version_string_becomes_tuple() -> None:
    s = Settings.from_dict({"kafka": {"api_version": "3.0"}})
    assert s.kafka.consumer_config()["api_version"] == (3, 0)
    assert s.kafka.producer_config()["api_version"] == (3, 0)
    with pytest.raises(ConfigError, match="kafka.api_version: expected a version"):
        Settings.from_dict({"kafka": {"api_version": "three"}})


def test_kafka_safety_rules() -> None:
    with pytest.raises(ConfigError, match=r"kafka\.consumer\.enable_auto_commit: must be false"):
        Settings.from_dict({"kafka": {"consumer": {"enable_auto_commit": True}}})
    with pytest.raises(ConfigError, match=r"kafka\.producer\.acks: enable_idempotence needs acks"):
        Settings.from_dict({"kafka": {"producer": {"acks": 1}}})
    s = Settings.from_dict({"kafka": {"producer": {"acks": 1, "enable_idempotence": False}}})
    assert s.kafka.producer_config()["acks"] == 1
    with pytest.raises(ConfigError, match=r"kafka\.producer\.acks: expected \"all\", 1 or 0"):
        Settings.from_dict({"kafka": {"producer": {"acks": "most"}}})
    with pytest.raises(ConfigError, match=r"heartbeat_interval_ms: must be below session_timeout_ms"):
        Settings.from_dict({"kafka": {"heartbeat_interval_ms": 50000}})
    with pytest.raises(ConfigError, match=r"kafka\.value_deserializer: takes a Python object"):
        Settings.from_dict({"kafka": {"value_deserializer": "json"}})


def test_compression_codec_must_be_importable() -> None:
    assert Settings.from_dict({"kafka": {"producer": {"compression_type": "gzip"}}})
    missing = [c for c in ("snappy", "lz4", "zstd") if not getattr(kafka_codec, f"has_{c}")()]
    for codec in missing:
        with pytest.raises(ConfigError, match=rf"kafka\.producer\.compression_type: '{codec}' needs the"):
            Settings.from_dict({"kafka": {"producer": {"compression_type": codec}}})
    with pytest.raises(ConfigError, match=r"must be one of gzip, snappy, lz4, zstd, got 'gz'"):
        Settings.from_dict({"kafka": {"compression_type": "gz"}})


def test_sasl_requirements() -> None:
    with pytest.raises(ConfigError, match=r"kafka\.sasl_mechanism: required with security_protocol SASL_SSL"):
        Settings.from_dict({"kafka": {"security_protocol": "SASL_SSL"}})
    with pytest.raises(ConfigError, match=r"kafka\.sasl_plain_password: required with sasl_mechanism"):
        Settings.from_dict({"kafka": {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "PLAIN",
                                      "sasl_plain_username": "u"}})
    with pytest.raises(ConfigError, match=r"kafka\.sasl_mechanism: must be one of PLAIN, SCRAM-SHA-256"):
        Settings.from_dict({"kafka": {"sasl_mechanism": "SCRAM-SHA-1"}})
    s = Settings.from_dict({"kafka": {"security_protocol": "SASL_PLAINTEXT",
                                      "sasl_mechanism": "SCRAM-SHA-512",
                                      "sasl_plain_username": "u", "sasl_plain_password": "pw"}})
    for cfg in (s.kafka.consumer_config(), s.kafka.producer_config()):
        assert (cfg["sasl_mechanism"], cfg["sasl_plain_username"], cfg["sasl_plain_password"]) == (
            "SCRAM-SHA-512", "u", "pw"
        )


def test_missing_ssl_file_names_key_and_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "ca.pem"
    with pytest.raises(ConfigError) as e:
        Settings.from_dict({"kafka": {"security_protocol": "SSL", "ssl_cafile": str(missing)}})
    assert str(e.value) == f"kafka.ssl_cafile: file not found: {missing}"
    with pytest.raises(ConfigError, match=r"kafka\.producer\.ssl_certfile: file not found"):
        Settings.from_dict({"kafka": {"producer": {"ssl_certfile": str(missing)}}})
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    s = Settings.from_dict({"kafka": {"security_protocol": "SSL", "ssl_cafile": str(ca)}})
    assert s.kafka.consumer_config()["ssl_cafile"] == str(ca)
    assert s.kafka.producer_config()["security_protocol"] == "SSL"


# ---- unknown keys and types ----------------------------------------------------------------


def test_typo_bootstrap_server_suggests_bootstrap_servers(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        Settings.from_dict({"kafka": {"bootstrap_server": "k:9092"}})
    assert str(e.value) == "kafka.bootstrap_server: unknown key; did you mean 'bootstrap_servers'?"
    p = write(tmp_path, '[kafka]\nbootstrap_server = "k:9092"\n')
    with pytest.raises(ConfigError, match=r"sf\.toml: kafka\.bootstrap_server: unknown key; did you mean "
                                          r"'bootstrap_servers'\?"):
        Settings.load(p, env={})


@pytest.mark.parametrize(("data", "message"), [
    ({"reddis": {}}, "reddis: unknown key; did you mean 'redis'?"),
    ({"max_dept": 3}, "max_dept: unknown key; did you mean 'max_depth'?"),
    ({"redis": {"sentinel": ["a:1"]}}, "redis.sentinel: unknown key; did you mean 'sentinels'?"),
    ({"kafka": {"consumer": {"max_poll_record": 5}}},
     "kafka.consumer.max_poll_record: unknown key; did you mean 'max_poll_records'?"),
    ({"kafka": {"producer": {"linger": 5}}}, "kafka.producer.linger: unknown key; did you mean 'linger_ms'?"),
    ({"queue": {"highwater": 5}}, "queue.highwater: unknown key; did you mean 'high_water'?"),
    ({"topics": {"car_order": {"windw_size": 5}}},
     "topics.car_order.windw_size: unknown key; did you mean 'window_size'?"),
    ({"topics": {"car_orders": {}}}, "topics.car_orders: unknown topic alias; did you mean 'car_order'?"),
    ({"modules": {"SOH_model": {"dep": []}}}, "modules.SOH_model.dep: unknown key; did you mean 'deps'?"),
    ({"modules": {"soh_model": {}}}, "modules.soh_model: unknown module; did you mean 'SOH_model'?"),
    ({"hooks": {"result_hander": "a:b"}}, "hooks.result_hander: unknown key; did you mean 'result_handler'?"),
])
def test_unknown_keys_name_the_full_path_and_suggest(data: dict, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        Settings.from_dict(data)
    assert str(e.value) == message


@pytest.mark.parametrize(("data", "message"), [
    ({"queue": {"high_water": "10"}}, "queue.high_water: expected an integer, got string '10'"),
    ({"max_depth": True}, "max_depth: expected an integer, got boolean True"),
    ({"max_depth": 2.5}, "max_depth: expected an integer, got float 2.5"),
    ({"batch": {"sweep_interval_s": "1s"}}, "batch.sweep_interval_s: expected a number, got string '1s'"),
    ({"kafka": {"ssl_check_hostname": "yes"}}, "kafka.ssl_check_hostname: expected true or false, got string 'yes'"),
    ({"redis": {"sentinels": "a:1"}}, "redis.sentinels: expected an array of strings, got string 'a:1'"),
    ({"redis": "redis://x"}, "redis: expected a table, got string"),
    ({"kafka": {"fetch_min_bytes": "1"}}, "kafka.fetch_min_bytes: expected an integer, got string '1'"),
    ({"topics": {"car_order": {"window_size": 0}}}, "topics.car_order.window_size: must be >= 1, got 0"),
    ({"modules": {"SOH_model": {"runs": "remote"}}},
     "modules.SOH_model.runs: must be one of local, external, off, got 'remote'"),
    ({"log_level": "verbose"}, "log_level: must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL, got 'verbose'"),
    ({"queue": {"low_water": 10, "high_water": 10}}, "queue.low_water (10) must be below queue.high_water (10)"),
    ({"modules": {"SOH_model": {"algorithm": "not a path"}}},
     "modules.SOH_model.algorithm: 'not a path' is not a dotted path such as \"package.module:function\""),
    ({"prefix": "my prefix"}, "prefix: 'my prefix' must be non-empty without spaces, braces or quotes"),
])
def test_type_and_value_errors(data: dict, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        Settings.from_dict(data)
    assert str(e.value) == message


def test_type_error_on_a_secret_does_not_echo_it() -> None:
    with pytest.raises(ConfigError) as e:
        Settings.from_dict({"kafka": {"sasl_plain_password": 12345678}})
    assert str(e.value) == "kafka.sasl_plain_password: expected a string, got integer"


def test_topic_and_module_overrides_reach_the_catalogue() -> None:
    s = Settings.from_dict({
        "topics": {
            "station_param": {"ttl_s": 3600},
            "device_meter": {"ttl_s": "none"},
            "device_gun": {"kind": "devices", "key_field": "hostCode", "topic": "PLANT-GUN"},
            "station_realtime_data": {"fill": "none"},
        },
        "modules": {"SOH_model": {"runs": "external", "heartbeat_s": 30, "triggers": ["station_param"]},
                    "customer_mining": {"heartbeat_s": 3600}},
    })
    c = s.catalogue
    assert (c.topic("station_param").ttl_s, c.topic("station_param").retention_s) == (3600.0, 7 * 86400)
    assert (c.topic("device_meter").ttl_s, c.topic("device_meter").retention_s) == (None, None)
    assert c.topic("PLANT-GUN").kind == "devices"
    assert c.topic("station_realtime_data").fill is None
    soh = c.module("SOH_model")
    assert (soh.runs, soh.heartbeat_s, soh.trigger_set) == ("external", 30.0, frozenset({"station_param"}))
    assert "MODULE-OUTPUT-SOH_MODEL" in {t.topic for t in c.consumed_topics()}
    with pytest.raises(ConfigError, match=r"topics\.device_gun\.key_field: required for kind 'devices'"):
        Settings.from_dict({"topics": {"device_gun": {"kind": "devices"}}})
    with pytest.raises(ConfigError, match=r"topics\.device_gun\.topic: 'bad name!' is not a valid Kafka"):
        Settings.from_dict({"topics": {"device_gun": {"topic": "bad name!"}}})


# ---- redis ---------------------------------------------------------------------------------


def test_redis_url_sentinels_and_options() -> None:
    with pytest.raises(ConfigError, match=r"redis\.url: 'http://h' must start with one of redis://"):
        Settings.from_dict({"redis": {"url": "http://h"}})
    with pytest.raises(ConfigError, match=r"redis\.sentinel_service: required when redis\.sentinels is set"):
        Settings.from_dict({"redis": {"sentinels": ["s1:26379"]}})
    with pytest.raises(ConfigError, match=r"redis\.sentinels\[1\]: 's2' is not host:port"):
        Settings.from_dict({"redis": {"sentinels": ["s1:26379", "s2"], "sentinel_service": "m"}})
    r = Settings.from_dict({"redis": {"url": "redis://:pw@ignored:6379/3", "sentinels": ["s1:26379", "s2:26380"],
                                      "sentinel_service": "mymaster", "socket_timeout": 2}}).redis
    assert r.connection_url() == "redis+sentinel://:pw@s1:26379,s2:26380/mymaster/3"
    assert r.connect_options() == {"socket_timeout": 2.0, "connect_timeout": 5.0,
                                   "health_check_interval": 30.0}
    tls = Settings.from_dict({"redis": {"url": "rediss://h:6380", "sentinels": ["s1:26379"],
                                        "sentinel_service": "m"}}).redis
    assert tls.connection_url() == "rediss+sentinel://s1:26379/m/0"
    plain = Settings.from_dict({"redis": {"url": "rediss://h:6380/1", "username": "u", "password": "p"}}).redis
    assert plain.connection_url() == "rediss://h:6380/1"
    assert (plain.connect_options()["username"], plain.connect_options()["password"]) == ("u", "p")


def test_redis_tls_keys_need_rediss_and_existing_files(tmp_path) -> None:
    ca, cert, key = (tmp_path / n for n in ("ca.pem", "c.pem", "c.key"))
    for f in (ca, cert, key):
        f.write_text("-----BEGIN CERTIFICATE-----\n")
    with pytest.raises(ConfigError, match=r"redis\.ssl_cafile: set, but redis\.url 'redis://h:6379/0' does not "
                                          r"use TLS \(use rediss://, rediss\+sentinel:// or rediss\+cluster://\)"):
        Settings.from_dict({"redis": {"url": "redis://h:6379/0", "ssl_cafile": str(ca)}})
    with pytest.raises(ConfigError, match=r"redis\.ssl_certfile: file not found: /nope\.pem"):
        Settings.from_dict({"redis": {"url": "rediss://h:6380/0", "ssl_certfile": "/nope.pem"}})
    with pytest.raises(ConfigError, match=r"redis\.ssl_keyfile: set without redis\.ssl_certfile"):
        Settings.from_dict({"redis": {"url": "rediss://h:6380/0", "ssl_keyfile": str(key)}})
    r = Settings.from_dict({"redis": {"url": "rediss://h:6380/0", "ssl_cafile": str(ca), "ssl_certfile": str(cert),
                                      "ssl_keyfile": str(key), "ssl_check_hostname": False}}).redis
    opts = r.connect_options()
    assert {k: opts[k] for k in ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_check_hostname")} == {
        "ssl_ca_certs": str(ca), "ssl_certfile": str(cert), "ssl_keyfile": str(key), "ssl_check_hostname": False}
    # the system's CAs, host names checked: the defaults of a bare rediss:// URL
    assert Settings.from_dict({"redis": {"url": "rediss://h:6380/0"}}).redis.connect_options()[
        "ssl_check_hostname"] is True
    # a Sentinel deployment with TLS to the master gets them too
    sent = Settings.from_dict({"redis": {"url": "rediss://h:6380/0", "sentinels": ["s1:26379"],
                                         "sentinel_service": "m", "ssl_cafile": str(ca)}}).redis
    assert sent.connect_options()["ssl_ca_certs"] == str(ca)


# ---- environment ---------------------------------------------------------------------------


def test_env_overrides_win_over_the_file(tmp_path: Path) -> None:
    p = write(tmp_path, """
prefix = "file"
[redis]
url = "redis://file:6379/0"
[kafka]
bootstrap_servers = "file:9092"
group_id = "file-group"
[kafka.consumer]
bootstrap_servers = "file-consumer:9092"
[queue]
high_water = 100
low_water = 10
""")
    env = {
        "STATIONFLOW_CONFIG": str(p),
        "STATIONFLOW_REDIS_URL": "redis://env:6379/1",
        "STATIONFLOW_KAFKA": "env1:9092,env2:9092",
        "STATIONFLOW_GROUP_ID": "env-group",
        "STATIONFLOW_PREFIX": "envp",
        "STATIONFLOW_QUEUE_HIGH_WATER": "500",
        "STATIONFLOW_LOG_LEVEL": "",  # empty: ignored
    }
    s = Settings.load(env=env)
    assert s.source == str(p)
    assert s.redis.url == "redis://env:6379/1"
    assert s.kafka.consumer_config()["bootstrap_servers"] == "env1:9092,env2:9092"
    assert s.kafka.producer_config()["bootstrap_servers"] == "env1:9092,env2:9092"
    assert s.kafka.group_id == "env-group"
    assert (s.prefix, s.queue.high_water, s.queue.low_water) == ("envp", 500, 10)
    assert s.log_level == "INFO"
    assert set(s.env_applied) == {"STATIONFLOW_REDIS_URL", "STATIONFLOW_KAFKA", "STATIONFLOW_GROUP_ID",
                                  "STATIONFLOW_PREFIX", "STATIONFLOW_QUEUE_HIGH_WATER"}
    # an explicit path wins over STATIONFLOW_CONFIG
    other = write(tmp_path, 'prefix = "other"\n', "other.toml")
    assert Settings.load(other, env={"STATIONFLOW_CONFIG": str(p)}).prefix == "other"


def test_env_sasl_settings_and_bad_env_values() -> None:
    s = Settings.load(env={
        "STATIONFLOW_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "STATIONFLOW_KAFKA_SASL_MECHANISM": "SCRAM-SHA-256",
        "STATIONFLOW_KAFKA_SASL_USERNAME": "svc",
        "STATIONFLOW_KAFKA_SASL_PASSWORD": "s3cret",
    })
    assert s.kafka.security_protocol == "SASL_SSL"
    assert s.kafka.producer_config()["sasl_plain_password"] == "s3cret"
    with pytest.raises(ConfigError, match="STATIONFLOW_QUEUE_HIGH_WATER: expected an integer, got 'lots'"):
        Settings.load(env={"STATIONFLOW_QUEUE_HIGH_WATER": "lots"})
    with pytest.raises(ConfigError, match="kafka.security_protocol: must be one of PLAINTEXT"):
        Settings.load(env={"STATIONFLOW_KAFKA_SECURITY_PROTOCOL": "TLS"})


def test_load_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found: .*missing.toml"):
        Settings.load(tmp_path / "missing.toml", env={})
    bad = write(tmp_path, "[kafka\nx = 1\n")
    with pytest.raises(ConfigError, match=r"sf\.toml: invalid TOML: "):
        Settings.load(bad, env={})


# ---- masking -------------------------------------------------------------------------------

SECRETS = {
    "redis": {"url": "redis://admin:url-secret@h:6379/0", "password": "redis-secret"},
    "kafka": {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "PLAIN",
              "sasl_plain_username": "svc", "sasl_plain_password": "sasl-secret",
              "ssl_password": "key-secret"},
}


def test_masking_in_to_dict_repr_and_str() -> None:
    s = Settings.from_dict(SECRETS)
    d = s.to_dict(masked=True)
    assert d["redis"]["password"] == "***"
    assert d["redis"]["url"] == "redis://admin:***@h:6379/0"
    assert d["kafka"]["sasl_plain_password"] == "***"
    assert d["kafka"]["ssl_password"] == "***"
    assert d["kafka"]["sasl_plain_username"] == "svc"
    texts = [repr(s), str(s), repr(s.redis), repr(s.kafka), s.to_toml(), s.to_toml(full=True)]
    for text in texts:
        for secret in ("url-secret", "redis-secret", "sasl-secret", "key-secret"):
            assert secret not in text
    # the unmasked form still carries them, for processes that need them
    assert s.to_dict(masked=False)["kafka"]["sasl_plain_password"] == "sasl-secret"


@pytest.mark.parametrize(("url", "masked"), [
    ("redis://u:p@h:1/0", "redis://u:***@h:1/0"),
    ("redis://:p@h", "redis://:***@h"),
    ("rediss://user@h", "rediss://user@h"),
    ("redis+sentinel://:p@s1:1,s2:2/m/0", "redis+sentinel://:***@s1:1,s2:2/m/0"),
    ("unix:///tmp/r.sock", "unix:///tmp/r.sock"),
])
def test_mask_url(url: str, masked: str) -> None:
    assert mask_url(url) == masked


# ---- TOML writer and round trips -----------------------------------------------------------


def test_to_toml_round_trips_to_equal_settings() -> None:
    s = Settings.from_dict({
        **SECRETS,
        "kafka": {**SECRETS["kafka"], "max_poll_records": 50, "api_version": "2.8",
                  "producer": {"linger_ms": 20, "compression_type": "gzip"}},
        "topics": {"device_meter": {"ttl_s": "none"}, "device_gun": {"topic": "PLANT-GUN"}},
        "modules": {"SOH_model": {"triggers": "all", "runs": "external"}},
        "queue": {"job_ttl_s": 120},
        "hooks": {"result_handler": "pkg.mod:fn"},
    })
    again = Settings.from_dict(tomllib.loads(s.to_toml(masked=False)))
    assert again == s
    assert again.to_dict(masked=False) == s.to_dict(masked=False)
    assert again.catalogue == s.catalogue
    full = Settings.from_dict(tomllib.loads(s.to_toml(masked=False, full=True)))
    assert full.catalogue == s.catalogue
    assert full.kafka == s.kafka and full.redis == s.redis


def test_dump_toml_escapes_strings_and_keys() -> None:
    data = {
        "a": 'quote " backslash \\ newline \n tab \t ctrl \x01 del \x7f unicode é 站',
        "dotted.key": 1,
        "t": {"x": [1, 2.5, "s"], "b": False, "n": None, "sub": {"deep": -3}},
        "empty": {},
    }
    out = tomllib.loads(dump_toml(data))
    assert out == {"a": data["a"], "dotted.key": 1, "t": {"x": [1, 2.5, "s"], "b": False,
                                                          "sub": {"deep": -3}}}
    with pytest.raises(TypeError):
        dump_toml({"x": object()})


# ---- example file --------------------------------------------------------------------------


def _example_keys() -> dict[str, set[str]]:
    """Keys written in the example (set or commented out), per table header."""
    keys: dict[str, set[str]] = {"": set()}
    table = ""
    for line in EXAMPLE.read_text().splitlines():
        m = re.match(r"^\[([^\]]+)\]\s*$", line)
        if m:
            table = m.group(1)
            if table.startswith("topics."):
                table = "topics.<alias>"
            elif table.startswith("modules."):
                table = "modules.<name>"
            keys.setdefault(table, set())
            continue
        m = re.match(r"^#?\s*([A-Za-z_][A-Za-z0-9_]*)\s*=", line)
        if m:
            keys[table].add(m.group(1))
    return keys


def test_example_file_is_valid_and_shows_defaults() -> None:
    s = Settings.load(EXAMPLE, env={})
    default = Settings.from_dict({})
    assert s.to_dict(masked=False) | {"topics": {}, "modules": {}} == default.to_dict(masked=False)
    assert s.catalogue == default.catalogue  # its topic/module tables repeat the defaults


def test_example_file_documents_every_schema_key() -> None:
    found = _example_keys()
    for section, keys in SECTIONS.items():
        missing = {k.name for k in keys} - found.get(section, set())
        assert not missing, f"stationflow.example.toml lacks {section or 'top-level'} keys {sorted(missing)}"
    text = EXAMPLE.read_text()
    for ov in ENV_OVERRIDES:
        assert ov.var in text, ov.var


def test_import_has_no_side_effects() -> None:
    code = (
        "import logging, sys, stationflow.settings, stationflow.cli\n"
        "assert not logging.getLogger().handlers\n"
        "assert 'kafka' not in sys.modules, 'kafka imported at import time'\n"
        "assert 'redis' not in sys.modules\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_env_modules_json_and_hooks_win_over_the_file(tmp_path: Path) -> None:
    p = write(tmp_path, """
[modules.load_prediction]
algorithm = "file.algos:load"
run_timeout_s = 7
[hooks]
result_handler = "file.hooks:on_result"
""")
    s = Settings.load(p, env={
        "STATIONFLOW_MODULES": '{"load_prediction": {"algorithm": "code.algos:load"},'
                               ' "SOH_model": {"layout": "flat"}}',
        "STATIONFLOW_HOOKS_RESULT_HANDLER": "code.hooks:on_result",
        "STATIONFLOW_HOOKS_BATCH_UPLOAD_HANDLER": "code.hooks:on_batch",
    })
    lp = s.catalogue.module("load_prediction")
    assert lp.algorithm == "code.algos:load"
    assert lp.run_timeout_s == 7.0  # keys the variable does not name keep the file's value
    assert s.catalogue.module("SOH_model").layout == "flat"
    assert s.hooks.result_handler == "code.hooks:on_result"
    assert s.hooks.batch_upload_handler == "code.hooks:on_batch"
    assert set(s.env_applied) == {"STATIONFLOW_MODULES", "STATIONFLOW_HOOKS_RESULT_HANDLER",
                                  "STATIONFLOW_HOOKS_BATCH_UPLOAD_HANDLER"}


def test_env_modules_json_errors_name_the_variable_or_key() -> None:
    with pytest.raises(ConfigError, match="STATIONFLOW_MODULES: invalid JSON"):
        Settings.load(env={"STATIONFLOW_MODULES": "{load_prediction"})
    with pytest.raises(ConfigError, match="STATIONFLOW_MODULES: expected a JSON object of objects"):
        Settings.load(env={"STATIONFLOW_MODULES": '{"load_prediction": "pkg:fn"}'})
    with pytest.raises(ConfigError, match="modules.load_predictoin: unknown module"):
        Settings.load(env={"STATIONFLOW_MODULES": '{"load_predictoin": {"algorithm": "a:b"}}'})
    with pytest.raises(ConfigError, match="modules.load_prediction.algorithm: 'not a path'"):
        Settings.load(env={"STATIONFLOW_MODULES": '{"load_prediction": {"algorithm": "not a path"}}'})
    with pytest.raises(ConfigError, match="hooks.result_handler: 'x y'"):
        Settings.load(env={"STATIONFLOW_HOOKS_RESULT_HANDLER": "x y"})


def test_bootstrap_timeout_reaches_every_kafka_client() -> None:
    s = Settings.load(env={"STATIONFLOW_KAFKA_BOOTSTRAP_TIMEOUT_MS": "3000"})
    assert "STATIONFLOW_KAFKA_BOOTSTRAP_TIMEOUT_MS" in s.env_applied
    for cfg in (s.kafka.consumer_config(), s.kafka.producer_config(), s.kafka.admin_config()):
        assert cfg["bootstrap_timeout_ms"] == 3000
    assert Settings.from_dict({}).kafka.producer_config()["bootstrap_timeout_ms"] == 30000
