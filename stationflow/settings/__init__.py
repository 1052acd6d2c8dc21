"""One validated, frozen configuration object for every stationflow process.

Sources, later wins: built-in defaults, a TOML file (`path`, else $STATIONFLOW_CONFIG; no
file at all is fine), then the environment variables in `ENV_OVERRIDES`:

    STATIONFLOW_REDIS_URL                redis.url
    STATIONFLOW_REDIS_PASSWORD           redis.password
    STATIONFLOW_REDIS_SSL_CAFILE         redis.ssl_cafile
    STATIONFLOW_REDIS_SSL_CERTFILE       redis.ssl_certfile
    STATIONFLOW_REDIS_SSL_KEYFILE        redis.ssl_keyfile
    STATIONFLOW_KAFKA                    kafka.bootstrap_servers (comma list)
    STATIONFLOW_GROUP_ID                 kafka.group_id
    STATIONFLOW_KAFKA_BOOTSTRAP_TIMEOUT_MS  kafka.bootstrap_timeout_ms
    STATIONFLOW_KAFKA_SECURITY_PROTOCOL  kafka.security_protocol
    STATIONFLOW_KAFKA_SASL_MECHANISM     kafka.sasl_mechanism
    STATIONFLOW_KAFKA_SASL_USERNAME      kafka.sasl_plain_username
    STATIONFLOW_KAFKA_SASL_PASSWORD      kafka.sasl_plain_password
    STATIONFLOW_KAFKA_SSL_CAFILE         kafka.ssl_cafile
    STATIONFLOW_KAFKA_SSL_CERTFILE       kafka.ssl_certfile
    STATIONFLOW_KAFKA_SSL_KEYFILE        kafka.ssl_keyfile
    STATIONFLOW_KAFKA_SSL_PASSWORD       kafka.ssl_password
    STATIONFLOW_KAFKA_STATIC_MEMBERSHIP  kafka.static_membership
    STATIONFLOW_KAFKA_ASSIGNOR           kafka.assignor
    STATIONFLOW_PREFIX                   prefix
    STATIONFLOW_LOG_LEVEL                log_level
    STATIONFLOW_QUEUE_NAME               queue.name
    STATIONFLOW_QUEUE_HIGH_WATER         queue.high_water
    STATIONFLOW_QUEUE_LOW_WATER          queue.low_water
    STATIONFLOW_HOOKS_RESULT_HANDLER     hooks.result_handler
    STATIONFLOW_HOOKS_BATCH_UPLOAD_HANDLER  hooks.batch_upload_handler
    STATIONFLOW_MODULES                  [modules.<name>] keys, as a JSON object
                                         {"<module>": {"<key>": value, ...}, ...}

STATIONFLOW_MODULES exists so a parent process (stationflow.App) can hand the algorithms
registered in code to the ingesters and workers it starts without writing files; its keys
are merged over the TOML's [modules.<name>] tables key by key and validated like them.

An environment override of a [kafka] key also replaces the same key in [kafka.consumer] and
[kafka.producer], so the environment always wins. Empty variables are ignored.

The package: `schema` declares every key, `values` checks one value, `environment` applies
the variables, `toml` reads and writes files, `sections` builds the [redis], [kafka] and
catalogue settings, `model` holds the frozen objects and `loading` puts them together.
Secrets never appear in repr/str or in `to_dict(masked=True)`.
"""

from stationflow.settings.environment import ENV_OVERRIDES, EnvOverride
from stationflow.settings.model import (
    BatchSettings,
    ConsumerConfig,
    HooksSettings,
    IngestSettings,
    KafkaSettings,
    QueueSettings,
    RedisSettings,
    Settings,
    module_to_dict,
    topic_to_dict,
)
from stationflow.settings.schema import (
    MODULE_KEYS,
    SECTIONS,
    TOPIC_KEYS,
    ConfigError,
    Key,
)
from stationflow.settings.toml import dump_toml, toml_value
from stationflow.settings.values import mask_url

__all__ = [
    "ENV_OVERRIDES", "EnvOverride", "BatchSettings", "ConsumerConfig", "HooksSettings", "IngestSettings",
    "KafkaSettings", "QueueSettings", "RedisSettings", "Settings", "module_to_dict", "topic_to_dict",
    "MODULE_KEYS", "SECTIONS", "TOPIC_KEYS", "ConfigError", "Key", "dump_toml", "toml_value", "mask_url",
]
