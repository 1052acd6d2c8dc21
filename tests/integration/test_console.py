"""`stationflow console` against a real Redis and broker filled by a short real pipeline run
(`stationflow demo`: ingester, workers, traffic with bad messages): every page renders, its
figures agree with `status --json` and `inspect --json`, pages only read Redis, the token,
the bind address and the replay POST behave, and a headless Chromium draws the charts."""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path
from urllib.parse import quote

import pytest
import redis as redis_lib
from click.testing import CliRunner
from consolekit import Filled, chromium, console, fill, find_chromium, http, wait_json
from kafka import KafkaConsumer, TopicPartition

from stationflow.cli import main
from stationflow.local import LocalServerError, find_redis_server, find_tansu
from store.keys import Keys

pytestmark = [pytest.mark.integration, pytest.mark.heavy(39)]

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def filled(tmp_path_factory) -> Filled:
    try:
        find_redis_server()
        find_tansu()
    except LocalServerError as e:
        pytest.skip(str(e))
    f = fill(tmp_path_factory.mktemp("console"))
    try:
        yield f
    finally:
        f.redis.close()
        f.broker.close()


@pytest.fixture(scope="module")
def served(filled):
    with console(filled.config) as url:
        yield url


def _status(filled: Filled) -> dict:
    done = filled.cli("status", "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _a_station(filled: Filled) -> str:
    """The station with the most stored realtime hours (a full 168-hour window)."""
    r = filled.redis.client()
    k = Keys("sf")
    ids = [m.decode() for m in r.zrange(k.stations, 0, -1)]
    return max(ids, key=lambda s: (r.hlen(k.hourly(s, "station_realtime_data")), s))


def test_the_demo_starts_the_console_and_prints_its_url(filled):
    assert re.search(r"^console on http://127\.0\.0\.1:\d+/ \(pid \d+\)$", filled.output, re.M), filled.output
    console_proc = [p for p in filled.summary["processes"] if p["name"] == "console-0"]
    assert len(console_proc) == 1 and console_proc[0]["exit_code"] in (0, -15)  # stopped with the others
    assert filled.summary["ok"] is True


# ---- figures against the commands -----------------------------------------------------------------

def test_overview_figures_match_status_json(filled, served):
    status = _status(filled)
    ov = wait_json(served + "/api/overview", lambda d: d["lag"] is not None and len(d["rates"]["t"]) >= 1)
    for key in ("stations", "messages", "records", "dead_letters", "runs_ok", "runs_none", "runs_failed",
                "batches_created", "batches_uploaded", "batches_skipped", "batches_expired", "batches_open",
                "lag"):
        assert ov["summary"][key] == status["summary"][key], key
    assert ov["summary"]["records"] > 0 and ov["summary"]["dead_letters"] > 0 and ov["summary"]["runs_ok"] > 0
    assert ov["lag"] == status["lag"] and ov["lag"]  # per topic and partition
    runs = {m: {k: v for k, v in row.items() if k not in ("mean_ms", "reasons")} for m, row in ov["runs"].items()}
    assert runs == _runs_of(status["counters"]["runs"])
    us = status["counters"]["runs"]
    m = next(iter(ov["runs"]))
    n = ov["runs"][m]["ok"] + ov["runs"][m]["none"] + ov["runs"][m]["failed"]
    assert ov["runs"][m]["mean_ms"] == round(us.get(f"{m}:us", 0) / n / 1000, 3)
    reasons: dict[str, int] = {}
    for f, v in status["dlq_counts"].items():
        reasons[f.rpartition(":")[2]] = reasons.get(f.rpartition(":")[2], 0) + v
    assert ov["dead_letters_by_reason"] == dict(sorted(reasons.items()))
    assert ov["queues"] == status["queues"]
    assert ov["paused"] is False
    held = ov["batches"]["held"]
    assert held["held"] == ov["summary"]["batches_created"] and held["by_state"].get("uploaded") == \
        ov["summary"]["batches_uploaded"]
    assert held["upload_ms_mean"] is not None and 0 <= held["upload_ms_p50"] <= held["upload_ms_max"]
    topics = {t: c for t, c in ov["topics"].items()}
    assert sum(c.get("messages", 0) for c in topics.values()) == ov["summary"]["messages"]
    # the sampler's readings: a rate per topic for each interval, zero once the pipeline stopped
    rates = ov["rates"]
    assert set(rates["topics"]) == set(topics)
    assert all(len(v["records"]) == len(rates["t"]) for v in rates["topics"].values())


def _runs_of(counters: dict[str, int]) -> dict[str, dict[str, int]]:
    from stationflow.status import runs_by_module

    return runs_by_module(counters)


def test_station_json_matches_inspect_json(filled, served):
    station = _a_station(filled)
    done = filled.cli("inspect", station, "--json")
    assert done.returncode == 0, done.stderr
    inspect = json.loads(done.stdout)
    page = http(f"{served}/api/station/{station}")
    assert page.status == 200
    d = page.json()
    assert d["station"] == station and d["known"] is True
    assert set(d["topics"]) == set(inspect["topics"])
    for alias, t in inspect["topics"].items():
        mine = d["topics"][alias]
        assert (mine["present"], mine["kind"], mine["ttl_s"]) == (t["present"], t["kind"], t["ttl_s"]), alias
        assert mine["stale"] == t["stale"] or abs((mine["age_s"] or 0) - mine["ttl_s"]) < 5, alias
    rt = inspect["topics"]["station_realtime_data"]
    charts = {c["id"]: c for c in d["charts"]}
    real = charts["realtime"]
    assert len(real["x"]) == rt["hours"] == 168
    r = filled.redis.client()
    from store.codec import decode_item

    stored = {h.decode(): decode_item(v) for h, v in r.hgetall(Keys("sf").hourly(station, "station_realtime_data")).items()}
    want = [stored[h]["payload"].get("outputPowerPerStationAvg") for h in sorted(stored)]
    assert real["series"][0]["values"] == want
    assert set(d["outputs"]) == set(inspect["outputs"])
    for m, o in inspect["outputs"].items():
        assert d["outputs"][m]["src"] == o["src"]
        newest = decode_item(r.lindex(Keys("sf").output(station, m), 0))
        assert d["outputs"][m]["payload"] == newest["payload"]
    fc = charts["forecast"]
    pred = d["outputs"]["load_prediction"]["payload"]["prediction"]
    assert [v for v in fc["series"][1]["values"] if v is not None][-len(pred):] == pred
    assert d["offsets"] == inspect["offsets"]
    assert set(d["devices"]["device_host_dcdc"][i]["key"] for i in range(len(d["devices"]["device_host_dcdc"]))) \
        == set(inspect["topics"]["device_host_dcdc"]["devices"])
    assert set(d["data_quality"]) == set(d["outputs"]) | {m for m in d["data_quality"]}


def test_unknown_station_is_a_404_with_a_hint(served):
    page = http(f"{served}/station/0000")
    assert page.status == 404 and "Nothing is stored for station 0000" in page.text
    assert http(f"{served}/api/station/0000").json()["known"] is False


def test_every_page_renders_html(filled, served):
    station = _a_station(filled)
    status = _status(filled)
    pages = {"/": ["Records/s per topic", "Consumer lag", "Runs per module"],
             "/stations": [station], f"/station/{station}": ['data-chart="realtime"', "device_host_dcdc"],
             "/batches": ["uploaded"], "/dead-letters": ["Newest entries"], "/help": ['id="chart-forecast"']}
    for path, needles in pages.items():
        page = http(served + path)
        assert page.status == 200, path
        assert page.headers["content-security-policy"].startswith("default-src 'self'")
        for n in needles:
            assert n in page.text, (path, n)
    overview = http(served + "/").text
    assert f'<span id="records">{status["summary"]["records"]}</span>' in overview
    for why in re.findall(r'href="/help#([a-z-]+)"', overview):
        assert f'id="{why}"' in http(served + "/help").text, why
    # stations: every station, searchable and sortable
    st = http(served + "/api/stations").json()["stations"]
    assert len(st) == status["stations"]
    one = http(f"{served}/api/stations?q={station[:12]}").json()["stations"]
    assert [x["station"] for x in one] == [station]
    by_id = [x["station"] for x in http(served + "/api/stations?sort=station&dir=asc").json()["stations"]]
    assert by_id == sorted(by_id)
    # stale windows on the stations page (meta ts:<alias>) agree with the station page's freshness,
    # except windows within a few seconds of their ttl (the two reads are moments apart)
    row = next(x for x in st if x["station"] == station)
    topics = http(f"{served}/api/station/{station}").json()["topics"]
    clear = {a for a, t in topics.items() if t["present"] and t["ttl_s"] and abs(t["age_s"] - t["ttl_s"]) > 5
             and t["kind"] != "global"}
    assert set(row["stale"]) & clear == {a for a in clear if topics[a]["stale"]}
    assert {a for a, t in topics.items() if t["stale"]} >= set(row["stale"]) & clear
    # dead letters: counted per station where the raw bytes name a known one
    from store.dlq import DeadLetter, DeadLetters

    DeadLetters(filled.redis.client()).add([DeadLetter("SCHEDULE-DEVICE-METER", 0, 10**9, 0, "bad_json", "test",
                                                       f'{{"stationId":"{station}",'.encode())])
    st = http(served + "/api/stations").json()["stations"]
    dl = http(served + "/api/dead-letters").json()
    known = {x["station"] for x in st}
    named = [e for e in dl["entries"] if e["station"] in known]
    assert {x["station"]: x["dead_letters"] for x in st if x["dead_letters"]} == \
        {s: sum(e["station"] == s for e in named) for s in {e["station"] for e in named}}
    assert next(x for x in st if x["station"] == station)["dead_letters"] >= 1
    assert any(e["station"] == station for e in http(f"{served}/api/station/{station}").json()["dead_letters"])


def test_batches_page_matches_redis(filled, served):
    r = filled.redis.client()
    d = http(served + "/api/batches").json()
    assert d["held"] == len(list(r.scan_iter(match="sf:batch:*", count=1000)))
    b = d["batches"][0]
    raw = {k.decode(): v.decode() for k, v in r.hgetall(f"sf:batch:{b['id']}").items()}
    assert b["module"] == raw["module"] and b["state"] == raw["state"]
    assert {s: x["entry"] for s, x in b["reports"].items()} == {f[2:]: v for f, v in raw.items() if f.startswith("e:")}
    assert b["upload_ms"] == int(raw["finished"]) - int(raw["created"])
    created = [x["created"] for x in d["batches"]]
    assert created == sorted(created, reverse=True)


def test_dead_letter_page_shows_raw_text_and_hex(filled, served):
    done = filled.cli("dlq", "list", "--json")
    entries = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert entries, done.stdout
    e = entries[0]
    shown = filled.cli("dlq", "show", e["id"], "--json")
    full = json.loads(shown.stdout)
    import base64

    raw = base64.b64decode(full["raw_base64"])
    d = http(f"{served}/api/dead-letters/{e['id']}").json()
    assert d["entry"]["reason"] == e["reason"] and d["entry"]["offset"] == e["offset"]
    assert d["hex"].splitlines()[0][10:57].split() == [f"{b:02x}" for b in raw[:16]]
    page = http(f"{served}/dead-letters/{e['id']}").text
    assert "Replay from the console is off" in page and 'name="csrf"' not in page
    assert http(f"{served}/dead-letters/0-0").status == 404
    assert http(f"{served}/dead-letters/not-an-id").status == 404
    by_reason = http(f"{served}/api/dead-letters?reason={quote(e['reason'])}").json()
    assert by_reason["entries"] and all(x["reason"] == e["reason"] for x in by_reason["entries"])


# ---- read only, bounded round trips -----------------------------------------------------------------

def test_pages_only_read_redis(filled, served):
    r = filled.redis.client()
    station = _a_station(filled)
    r.config_resetstat()
    for path in ("/", "/stations", f"/station/{station}", "/batches", "/dead-letters", "/api/overview"):
        assert http(served + path).status == 200
    used = [k[len("cmdstat_"):] for k in r.info("commandstats")]
    info = r.execute_command("COMMAND", "INFO", *{name.split("|")[0] for name in used})
    writes = [name for name in used if "write" in info[name.split("|")[0]]["flags"]]
    assert "hgetall" in used and "xrevrange" in used
    assert writes == [], writes


def _count_round_trips(monkeypatch):
    from redis.connection import AbstractConnection

    calls = {"n": 0}
    real = AbstractConnection.send_packed_command

    def counting(self, command, check_health=True):
        calls["n"] += 1
        return real(self, command, check_health)

    monkeypatch.setattr(AbstractConnection, "send_packed_command", counting)
    return calls


def test_round_trips_do_not_grow_with_stations(filled, monkeypatch, tmp_path):
    """Every page costs the same round trips with 3 or 63 stations (no RQ worker is registered
    after the demo: `status.gather` lists workers with a few round trips each)."""
    from stationflow.console import pages
    from stationflow.settings import Settings

    settings = Settings.load(path=str(filled.config), env={})
    r = redis_lib.Redis.from_url(filled.redis.url)
    station = _a_station(filled)
    calls = _count_round_trips(monkeypatch)

    class Sampled:
        def lag(self):
            return None, None

        def history(self):
            return {"t": [], "topics": {}, "every_s": None}

    def cost() -> tuple[int, ...]:
        out = []
        for page in (lambda: pages.stations(r, settings, int(time.time() * 1000)),
                     lambda: pages.station(r, settings, station, int(time.time() * 1000)),
                     lambda: pages.overview(r, settings, Sampled()),
                     lambda: pages.batches(r, settings),
                     lambda: pages.dead_letters(r, settings)):
            calls["n"] = 0
            page()
            out.append(calls["n"])
        return tuple(out)

    cost()  # the connection's handshake is not a page's cost
    before = cost()
    k = Keys("sf")
    extra = [f"99{i:017d}" for i in range(60)]
    pipe = redis_lib.Redis.from_url(filled.redis.url).pipeline()
    for s in extra:
        pipe.zadd(k.stations, {s: 1})
        pipe.hset(k.meta(s), "ts:station_param", 1)
    pipe.execute()
    try:
        after = cost()
    finally:
        pipe = redis_lib.Redis.from_url(filled.redis.url).pipeline()
        pipe.zrem(k.stations, *extra)
        pipe.delete(*(k.meta(s) for s in extra))
        pipe.execute()
    assert before == after
    assert after[0] <= 6 and after[1] <= 6 and after[2] <= 8 and after[3] <= 4 and after[4] <= 2, after


def test_redis_outage_is_a_one_line_503_and_the_console_recovers(private_redis, tmp_path):
    config = tmp_path / "c.toml"
    config.write_text(f'[redis]\nurl = "{private_redis.url}"\n[kafka]\nbootstrap_servers = "127.0.0.1:9"\n')
    with console(config, "--no-lag") as url:
        assert http(url + "/api/stations").status == 200
        private_redis.stop()
        down = http(url + "/stations", timeout=60)
        assert down.status == 503 and down.text.startswith("Redis unavailable (") and down.text.count("\n") == 1
        assert down.headers["retry-after"] == "5"
        private_redis.start()
        assert wait_json(url + "/api/stations", lambda d: "stations" in d, timeout=30)["stations"] == []


# ---- safety: token, bind address, replay ---------------------------------------------------------

def test_non_loopback_bind_needs_a_token(filled):
    out = CliRunner().invoke(main, ["--config", str(filled.config), "console", "--host", "0.0.0.0"])
    assert out.exit_code == 2 and "needs a token" in out.output


def test_token_is_checked_on_every_request(filled):
    token = "t0ken-for-the-test"
    with console(filled.config, "--host", "0.0.0.0", "--token", token) as url:
        assert http(url + "/").status == 401
        assert http(url + "/static/console.js").status == 401
        assert http(url + "/api/station/x", headers={"Authorization": "Bearer wrong"}).status == 401
        assert http(url + "/", headers={"Authorization": f"Bearer {token}"}).status == 200
        first = http(f"{url}/stations?token={token}&q=1")
        assert first.status == 303 and first.headers["location"] == "/stations?q=1"
        cookie = first.headers["set-cookie"].split(";")[0]
        assert "httponly" in first.headers["set-cookie"].lower()
        assert http(url + "/stations", headers={"Cookie": cookie}).status == 200
        assert token not in http(url + "/", headers={"Cookie": cookie}).text


def test_token_from_the_environment_and_no_lag(filled):
    """STATIONFLOW_CONSOLE_TOKEN works like --token (also on a loopback address); --no-lag
    never asks Kafka and says so."""
    from consolekit import clean_env

    with console(filled.config, "--no-lag", env=clean_env(STATIONFLOW_CONSOLE_TOKEN="from-env")) as url:
        assert http(url + "/api/overview").status == 401
        ov = http(url + "/api/overview", headers={"Authorization": "Bearer from-env"}).json()
        assert ov["lag"] is None and ov["lag_error"] == "lag lookup disabled (--no-lag)"
        page = http(url + "/", headers={"Authorization": "Bearer from-env"}).text
        assert "unavailable: lag lookup disabled (--no-lag)" in page
    out = CliRunner().invoke(main, ["console", "--help"])
    assert out.exit_code == 0 and "STATIONFLOW_CONSOLE_TOKEN" in out.output and "--allow-replay" in out.output


def test_without_a_token_only_loopback_host_names_are_served(served):
    assert http(served + "/", headers={"Host": "attacker.example:80"}).status == 403
    assert http(served + "/", headers={"Host": "localhost"}).status == 200


def test_replay_post_is_off_without_allow_replay(filled, served):
    e = json.loads(filled.cli("dlq", "list", "--json").stdout.splitlines()[0])
    assert http(f"{served}/dead-letters/{e['id']}/replay", "POST", b"csrf=x").status == 403


def test_replay_post_needs_the_form_token_and_sends_the_entry(filled):
    entries = [json.loads(x) for x in filled.cli("dlq", "list", "--json").stdout.splitlines()]
    e = next(x for x in entries if x["raw_kept"] == x["raw_len"] and x["element_index"] is None)
    with console(filled.config, "--allow-replay") as url:
        page = http(f"{url}/dead-letters/{e['id']}").text
        csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
        post = f"{url}/dead-letters/{e['id']}/replay"
        assert http(post, "POST", b"csrf=wrong").status == 403
        assert http(post, "POST", f"csrf={csrf}".encode(), {"Origin": "http://evil.example"}).status == 403
        assert http(post, "GET").status == 405
        done = http(post, "POST", f"csrf={csrf}".encode(), {"Origin": url})
        assert done.status == 303, done.text
        partition, offset = (int(x) for x in done.headers["location"].rsplit("=", 1)[1].split(":"))
        after = http(f"{url}/api/dead-letters/{e['id']}").json()
        assert after["replayed"] == 1
    full = json.loads(filled.cli("dlq", "show", e["id"], "--json").stdout)
    import base64

    consumer = KafkaConsumer(bootstrap_servers=filled.broker.bootstrap, enable_auto_commit=False,
                             consumer_timeout_ms=10_000)
    tp = TopicPartition(e["topic"], partition)
    consumer.assign([tp])
    consumer.seek(tp, offset)
    got = next(iter(consumer))
    consumer.close()
    assert got.value == base64.b64decode(full["raw_base64"])
    assert dict(got.headers)["stationflow-replay-of"] == e["id"].encode()


# ---- a real browser -----------------------------------------------------------------------------------

def test_headless_chromium_draws_the_charts(filled, served, tmp_path):
    """Overview, a station page and the dead-letter page in headless Chromium: the chart elements
    hold the station's data points after drawing; screenshots are saved (and copied to
    $STATIONFLOW_CONSOLE_SHOTS, e.g. docs/img, when set)."""
    browser = find_chromium()
    if browser is None:
        pytest.skip("no chromium on PATH (make setup installs Debian's chromium)")
    station = _a_station(filled)
    data = http(f"{served}/api/station/{station}").json()
    dom = chromium(browser, tmp_path / "p1", f"{served}/station/{station}", "--virtual-time-budget=5000",
                   "--dump-dom")
    drawn = _drawn(dom)
    for c in data["charts"]:
        assert c["id"] in drawn, c["id"]
        xs, series, points = drawn[c["id"]]
        assert xs == c["x"], c["id"]
        assert series == [s["values"] for s in c["series"]], c["id"]
        assert points == sum(v is not None for s in c["series"] for v in s["values"]) > 0
    assert len(drawn["realtime"][0]) == 168
    assert "<canvas" in dom
    dom = chromium(browser, tmp_path / "p2", served + "/#still", "--virtual-time-budget=3000", "--dump-dom")
    over = _drawn(dom)
    assert set(over) == {"records_rate", "messages_rate"} and len(over["records_rate"][0]) >= 1
    shots = {"console-overview.png": served + "/#still", "console-station.png": f"{served}/station/{station}",
             "console-dead-letters.png": served + "/dead-letters"}
    first_dead = http(served + "/api/dead-letters").json()["entries"][0]["id"]
    shots["console-dead-letter.png"] = f"{served}/dead-letters/{first_dead}"
    for i, (name, url) in enumerate(shots.items()):
        out = tmp_path / name
        chromium(browser, tmp_path / f"s{i}", url, "--window-size=1280,1800", "--virtual-time-budget=3000",
                 f"--screenshot={out}")
        assert out.stat().st_size > 10_000 and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    target = __import__("os").environ.get("STATIONFLOW_CONSOLE_SHOTS")
    if target:
        for name in shots:
            shutil.copy(tmp_path / name, Path(target) / name)


def _drawn(dom: str) -> dict[str, tuple[list, list, int]]:
    """chart id -> (x, series values, points) as the drawn chart elements carry them."""
    import html

    out = {}
    for tag in re.findall(r"<div class=\"chart\"[^>]*>", dom):
        attrs = dict(re.findall(r'([a-z-]+)="([^"]*)"', tag))
        if attrs.get("data-drawn") == "1":
            out[attrs["data-chart"]] = (json.loads(html.unescape(attrs["data-x"])),
                                        json.loads(html.unescape(attrs["data-series"])), int(attrs["data-points"]))
    return out


# ---- the bench's measurement -------------------------------------------------------------------------

def test_console_bench_measures_a_full_station_page(redis_client):
    """bench.console_bench fills a station with full windows and times its page: the figures it
    reports are measured (no threshold here: the bench reports, tests do not time)."""
    from bench.console_bench import BATCHES, measure

    m = measure(redis_client, runs=3)
    assert m["realtime_hours"] == 168
    for name in ("html", "json"):
        x = m[name]
        assert len(x["values"]) == 3 and 0 < x["min_ms"] <= x["median_ms"] <= x["max_ms"]
        assert x["bytes"] > 10_000
        # read_station (2) + dead letters (1) + SCAN of the batches (1) + their fields (1) + the station's entries (1)
        assert x["round_trips"] == 6
    assert len(list(redis_client.scan_iter(match="sf:batch:*"))) == BATCHES
