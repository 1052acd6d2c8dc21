"""`stationflow console`: serve the web console (see stationflow/console/)."""

from __future__ import annotations

import ipaddress
import os

import click

TOKEN_ENV = "STATIONFLOW_CONSOLE_TOKEN"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@click.command("console")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind. Any non-loopback address needs --token.")
@click.option("--port", default=8430, show_default=True, type=click.IntRange(0, 65535), help="Port (0: a free one).")
@click.option("--token", default=None, help=f"Secret every request must carry (env {TOKEN_ENV}); required "
                                            "unless bound to a loopback address.")
@click.option("--allow-replay", is_flag=True, help="Offer a Replay button on dead letters (a POST with CSRF "
                                                   "protection); without it the console never writes.")
@click.option("--refresh", default=5.0, show_default=True, type=click.FloatRange(min=1),
              help="Seconds between overview refreshes and counter samples.")
@click.option("--no-lag", is_flag=True, help="Do not ask Kafka for consumer lag.")
@click.pass_context
def console(ctx: click.Context, host: str, port: int, token: str | None, allow_replay: bool, refresh: float,
            no_lag: bool) -> None:
    """Serve the web console: overview (rates, lag, queue, batches, runs, dead letters),
    stations, each station's windows as charts with its module outputs, batches and dead
    letters. Reads the same Redis as every other command; binds 127.0.0.1 by default.

    \b
    stationflow console                      # http://127.0.0.1:8430/
    STATIONFLOW_CONSOLE_TOKEN=s3cret stationflow console --host 0.0.0.0
    """
    import logging

    from stationflow.cli import get_settings

    token = token or os.environ.get(TOKEN_ENV) or None
    if not is_loopback(host) and not token:
        raise click.UsageError(f"binding {host} needs a token: pass --token or set {TOKEN_ENV}")
    try:
        import uvicorn

        from stationflow.console.sampler import Sampler
        from stationflow.console.web import ConsoleConfig, build_app
    except ImportError as e:
        raise click.ClickException(f"the console needs the 'console' extra: pip install 'stationflow[console]' "
                                   f"({e})") from None

    settings = get_settings(ctx)
    logging.getLogger("kafka").setLevel(logging.CRITICAL)  # an unreachable broker shows on the page
    r = settings.redis.connect(retries=1)  # unreachable: one line from the CLI entry, as every command
    sampler = Sampler(settings, r, every_s=refresh, lag=not no_lag)
    sampler.start()
    app = build_app(ConsoleConfig(settings, token=token, allow_replay=allow_replay, refresh_s=refresh), r, sampler)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    import asyncio
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
        sock.listen(128)  # connections wait in the backlog until the server accepts: the URL works at once
    except OSError as e:
        raise click.ClickException(f"cannot bind {host}:{port}: {e.strerror}") from None
    shown = f"[{host}]" if ":" in host else host
    click.echo(f"console on http://{shown}:{sock.getsockname()[1]}/" + (" (token required)" if token else "")
               + (" replay allowed" if allow_replay else ""), err=False)
    try:
        asyncio.run(server.serve(sockets=[sock]))
    except KeyboardInterrupt:
        pass
    finally:
        sampler.stop()
