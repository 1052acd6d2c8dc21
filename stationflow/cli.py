"""The `stationflow` command line. Thin: each subcommand lives in `stationflow/commands/`.

Subcommands are imported lazily so `stationflow --help` is fast and one broken command
cannot take the others down.

Failures an operator causes or can fix (a server that cannot be reached, a refused password,
a malformed id, a bad configuration) end every command the same way, in one place
(`LazyGroup.invoke`): one line on stderr, `error: ...`, and a non-zero exit status (2 for
configuration and usage, 1 otherwise). `-v`/`--debug` shows the traceback instead. Anything
else is a bug and keeps its traceback.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from stationflow.settings import Settings

#: name -> (module under stationflow.commands, attribute, short help)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "config": ("config_cmd", "config", "Validate and show the effective configuration."),
    "topics": ("topics_cmd", "topics", "List the topic catalogue (topic, alias, kind, cap, TTL, modules)."),
    "parse": ("parse_cmd", "parse", "Parse one message value and print its station records."),
    "ingest": ("ingest_cmd", "ingest", "Run an ingester: Kafka -> Redis windows -> station jobs."),
    "worker": ("worker_cmd", "worker", "Run RQ workers for station jobs (in-process, JSON serializer)."),
    "produce": ("produce_cmd", "produce", "Send realistic traffic for all input topics."),
    "demo": ("demo_cmd", "demo", "Run the whole system locally with a private Redis and broker."),
    "inspect": ("inspect_cmd", "inspect", "Show a station's windows and outputs, decoded."),
    "status": ("status_cmd", "status", "Show counters, queues, batches and lag."),
    "dlq": ("dlq_cmd", "dlq", "List, show and replay dead letters."),
    "bench": ("bench_cmd", "bench", "Run the benchmarks and write bench/report.md."),
    "console": ("console_cmd", "console", "Serve the read-only web console (overview, stations, charts, dead letters)."),
}


class CommandFailed(click.ClickException):
    """A failure reported as one line on stderr, `<label>: <message>` (label `error`, or
    `config error` for configuration problems, exit 2), exit status `exit_code`."""

    def __init__(self, message: str, exit_code: int = 1, label: str = "error") -> None:
        super().__init__(message)
        self.exit_code = exit_code  # type: ignore[misc]  # click declares it a ClassVar; ours varies
        self.label = label

    def show(self, file: object = None) -> None:
        click.echo(f"{self.label}: {self.format_message()}", err=True)


def one_line(exc: BaseException, obj: dict | None = None) -> CommandFailed | None:
    """The one-line report of a known operational failure, None for anything else (a bug).

    `obj` is the root context's object: the loaded settings name the servers in the message."""
    from kafka import errors as kafka_errors
    from redis.exceptions import AuthenticationError, ResponseError
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    from stationflow.settings import ConfigError
    from store.connection import StoreUnavailable, redact
    from workers.algorithms import AlgorithmImportError

    settings = (obj or {}).get("settings")
    redis_at = f" at {redact(settings.redis.url)}" if settings is not None else ""
    if isinstance(exc, ConfigError | AlgorithmImportError):
        return CommandFailed(str(exc), 2, "config error")
    if isinstance(exc, StoreUnavailable):
        return CommandFailed(str(exc))
    if isinstance(exc, AuthenticationError) or (
            isinstance(exc, ResponseError) and str(exc).startswith(("WRONGPASS", "NOAUTH"))):
        return CommandFailed(f"Redis refused the credentials{redis_at}: {exc}")
    if isinstance(exc, RedisConnectionError | RedisTimeoutError):
        return CommandFailed(f"Redis unavailable{redis_at}: {exc}")
    unreachable = tuple(getattr(kafka_errors, n) for n in ("NoBrokersAvailable", "KafkaTimeoutError",
                                                           "KafkaConnectionError", "NodeNotReadyError")
                        if hasattr(kafka_errors, n))  # the names differ between kafka-python releases
    if isinstance(exc, unreachable):
        where = f" at {settings.kafka.bootstrap_servers}" if settings is not None else ""
        text = str(exc)
        name = type(exc).__name__
        text = text if text.startswith(name) else f"{name}: {text}" if text else name
        return CommandFailed(f"cannot reach Kafka{where}: {text}")
    return None


class LazyGroup(click.Group):
    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as e:
            if (ctx.obj or {}).get("debug"):
                raise
            failed = one_line(e, ctx.obj)
            if failed is None:
                raise
            raise failed from e

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(n for n, (mod, _, _) in COMMANDS.items() if _available(mod))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        spec = COMMANDS.get(name)
        if spec is None or not _available(spec[0]):
            return None
        module = importlib.import_module(f"stationflow.commands.{spec[0]}")
        return getattr(module, spec[1])


def _available(mod: str) -> bool:
    return importlib.util.find_spec(f"stationflow.commands.{mod}") is not None


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", envvar="STATIONFLOW_CONFIG", type=click.Path(dir_okay=False),
              help="TOML configuration file (env STATIONFLOW_CONFIG). Environment variables "
                   "STATIONFLOW_* override it.")
@click.option("--log-level", default=None, envvar="STATIONFLOW_LOG_LEVEL",
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
              help="Log level (env STATIONFLOW_LOG_LEVEL; default: log_level of the config, INFO).")
@click.option("-v", "--debug", is_flag=True,
              help="Show the traceback of a failure instead of its one-line message, and the Kafka "
                   "client's own logging.")
@click.pass_context
def main(ctx: click.Context, config_path: str | None, log_level: str | None, debug: bool) -> None:
    """stationflow: EV-charging telemetry from Kafka into per-station windows in Redis,
    algorithm modules on RQ workers, batched results back to Kafka.

    \b
    Processes:   stationflow ingest   (scale with Kafka partitions)
                 stationflow worker   (scale with queue depth)
    Try it:      stationflow demo
    Operate:     stationflow status | inspect STATION | dlq list
    """
    import logging

    logging.basicConfig(level=(log_level or "INFO").upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not debug and (log_level or "INFO").upper() != "DEBUG":
        # the client logs every connection retry; an unreachable broker is reported once, by us
        logging.getLogger("kafka").setLevel(logging.CRITICAL)
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug
    ctx.obj["config_path"] = config_path
    ctx.obj["log_level"] = log_level


def get_settings(ctx: click.Context, path: str | None = None) -> Settings:
    """The settings for a subcommand: `path`, else --config / STATIONFLOW_CONFIG, then the
    STATIONFLOW_* environment. Loaded once per invocation; a bad configuration prints
    "config error: ..." and exits with status 2."""
    import logging

    from stationflow.settings import ConfigError, Settings

    root = ctx.find_root()
    root.ensure_object(dict)
    obj = root.obj
    if path is None and "settings" in obj:
        return obj["settings"]
    try:
        settings = Settings.load(path if path is not None else obj.get("config_path"))
    except ConfigError as e:
        raise CommandFailed(str(e), 2, "config error") from None
    if path is None:
        obj["settings"] = settings
    if obj.get("log_level") is None:
        logging.getLogger().setLevel(settings.log_level)
    return settings
