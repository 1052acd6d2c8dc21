"""stationflow.App: registration by dotted path, what the started processes receive, and the
precedence of code over configuration. No servers: processes are plain `python -c` runs."""

from __future__ import annotations

import json
import logging
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import stationflow
from examples.station_app import algorithms, hooks
from stationflow.app import CHILD_ENV, MODULES_ENV, App, RegistrationError, importable_path
from stationflow.settings import Settings

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("STATIONFLOW_")}


@pytest.fixture(autouse=True)
def _no_stationflow_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for k in list(os.environ):
        if k.startswith("STATIONFLOW_"):
            monkeypatch.delenv(k)


def top_level(station_id: str, module_input: dict) -> dict:
    return {"n": 1}


async def top_level_async(station_id: str, module_input: dict) -> dict:
    return {"n": 2}


class Model:
    def predict(self, station_id: str, module_input: dict) -> dict:
        return {}


# ---- registration ----------------------------------------------------------------------------

def test_decorator_and_register_record_importable_paths() -> None:
    app = App()
    deco = app.algorithm("load_prediction", layout="flat")(top_level)
    assert deco is top_level  # returned unchanged: still a plain, testable function
    app.register("electricity_price", top_level_async, run_timeout_s=5)
    lp, ep = app.registrations["load_prediction"], app.registrations["electricity_price"]
    assert (lp.path, lp.is_async, dict(lp.options)) == (f"{__name__}:top_level", False, {"layout": "flat"})
    assert (ep.path, ep.is_async) == (f"{__name__}:top_level_async", True)
    # the sys.path entry this module was imported from, for the children's PYTHONPATH
    assert Path(lp.sys_path, *__name__.split(".")).with_suffix(".py") == Path(__file__).resolve()


def test_unimportable_functions_are_refused_with_what_to_do() -> None:
    app = App()
    with pytest.raises(RegistrationError, match="is a lambda .*define it with `def` at the top level"):
        app.register("load_prediction", lambda s, i: {})

    def inner(station_id: str, module_input: dict) -> dict:
        return {}

    with pytest.raises(RegistrationError, match=r"defined inside test_unimportable.*\(\) \(a closure\).*move it"):
        app.register("load_prediction", inner)
    with pytest.raises(RegistrationError, match="'Model.predict' .* is a method .*module-level function"):
        app.register("load_prediction", Model().predict)
    with pytest.raises(RegistrationError, match="is not callable"):
        app.register("load_prediction", 42)  # type: ignore[arg-type]
    assert app.registrations == {}


def test_unknown_module_and_option_names_are_refused() -> None:
    app = App()
    with pytest.raises(RegistrationError, match="unknown module 'load_predictoin'; did you mean 'load_prediction'"):
        app.register("load_predictoin", top_level)
    with pytest.raises(RegistrationError, match=r"unknown option\(s\) \['layuot'\]"):
        app.register("load_prediction", top_level, layuot="flat")
    with pytest.raises(RegistrationError, match=r"unknown option\(s\) \['algorithm'\]"):
        app.register("load_prediction", top_level, algorithm="x:y")


def test_functions_typed_into_python_c_are_refused() -> None:
    code = textwrap.dedent("""
        import stationflow
        def f(station_id, module_input):
            return {}
        try:
            stationflow.App().register("load_prediction", f)
        except stationflow.RegistrationError as e:
            print(e)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         env=_clean_env(), timeout=60)
    assert "interactive session or `python -c`" in out.stdout, out.stderr
    assert "put it in a module file" in out.stdout


def test_script_functions_are_imported_by_the_script_name(tmp_path: Path) -> None:
    script = tmp_path / "my_station_app.py"
    script.write_text(textwrap.dedent("""
        import json, sys
        import stationflow
        app = stationflow.App()

        @app.algorithm("load_prediction")
        def forecast(station_id, module_input):
            return {"from": "script"}

        if __name__ == "__main__":
            env = app.child_env()
            print(json.dumps({"modules": env["STATIONFLOW_MODULES"], "path": env["PYTHONPATH"]}))
    """))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=ROOT,
                         env={**_clean_env(), "PYTHONPATH": str(ROOT)}, timeout=60)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert json.loads(got["modules"]) == {"load_prediction": {"algorithm": "my_station_app:forecast"}}
    assert got["path"].split(os.pathsep)[0] == str(tmp_path)
    # a worker given that environment imports the script as a module (its guard keeps it quiet)
    check = ("from stationflow.settings import Settings; from workers.algorithms import load_all; "
             "fn = load_all(Settings.load().catalogue)['load_prediction']; print(fn('s', {}))")
    env = {**_clean_env(), "STATIONFLOW_MODULES": got["modules"], "PYTHONPATH": got["path"]}
    out = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, cwd=tmp_path,
                         env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "{'from': 'script'}"


def test_run_refuses_to_start_inside_a_started_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CHILD_ENV, "1")
    app = App()
    app.register("load_prediction", top_level)
    with pytest.raises(RuntimeError, match=r'if __name__ == "__main__"'):
        app.run()
    with pytest.raises(ValueError, match="at least one"):
        monkeypatch.delenv(CHILD_ENV)
        app.start(ingesters=0, workers=0)


# ---- what the children receive ------------------------------------------------------------

def test_child_env_carries_registrations_hooks_and_import_path() -> None:
    app = App()
    app.register("load_prediction", algorithms.forecast_load)
    app.register("electricity_price", algorithms.price_signal, run_timeout_s=10)
    app.on_result(hooks.log_result)
    app.on_batch(hooks.log_batch)
    env = app.child_env({"PATH": "/bin", MODULES_ENV: '{"SOH_model": {"layout": "flat"}, '
                                                     '"load_prediction": {"layout": "flat"}}'})
    assert json.loads(env[MODULES_ENV]) == {
        "SOH_model": {"layout": "flat"},  # the operator's own variable is kept ...
        "load_prediction": {"layout": "flat", "algorithm": "examples.station_app.algorithms:forecast_load"},
        "electricity_price": {"run_timeout_s": 10, "algorithm": "examples.station_app.algorithms:price_signal"},
    }
    assert env["STATIONFLOW_HOOKS_RESULT_HANDLER"] == "examples.station_app.hooks:log_result"
    assert env["STATIONFLOW_HOOKS_BATCH_UPLOAD_HANDLER"] == "examples.station_app.hooks:log_batch"
    assert env["PYTHONPATH"] == str(ROOT) and env[CHILD_ENV] == "1" and env["PATH"] == "/bin"
    assert "STATIONFLOW_CONFIG" not in env  # no config given: the children look where the parent would


def test_settings_see_the_registrations_and_code_wins_over_toml(tmp_path: Path,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    cfg = tmp_path / "sf.toml"
    cfg.write_text('prefix = "apptest"\n[modules.load_prediction]\nalgorithm = "workers.reference:load_prediction"\n'
                   'run_timeout_s = 3\n[hooks]\nresult_handler = "workers.reference:customer_mining"\n')
    app = App(cfg)
    app.register("load_prediction", algorithms.forecast_load)
    app.on_result(hooks.log_result)
    with caplog.at_level(logging.INFO, logger="stationflow.app"):
        s = app.check()
    spec = s.catalogue.module("load_prediction")
    assert spec.algorithm == "examples.station_app.algorithms:forecast_load"
    assert spec.run_timeout_s == 3.0  # the file's other keys stay
    assert s.prefix == "apptest" and s.hooks.result_handler == "examples.station_app.hooks:log_result"
    assert s.catalogue.module("SOH_model").algorithm == "workers.reference:SOH_model"
    text = caplog.text
    assert ("module load_prediction: algorithm examples.station_app.algorithms:forecast_load registered in "
            "code wins over workers.reference:load_prediction from the configuration") in text
    assert "hooks.result_handler: examples.station_app.hooks:log_result registered in code wins" in text
    assert app.child_env()["STATIONFLOW_CONFIG"] == str(cfg.resolve())


@pytest.mark.parametrize("kind", ["dict", "settings"])
def test_dict_and_settings_configs_reach_children_as_a_private_file(kind: str) -> None:
    d = {"prefix": "fromdict", "redis": {"url": "redis://:pw@127.0.0.1:1/2"},
         "modules": {"SOH_model": {"layout": "flat"}}}
    app = App(d if kind == "dict" else Settings.from_dict(d))
    app.register("load_prediction", top_level)
    path = Path(app.child_env()["STATIONFLOW_CONFIG"])
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # it may hold the Redis password
    child = Settings.load(path, env={})
    assert child.prefix == "fromdict" and child.redis.url == "redis://:pw@127.0.0.1:1/2"
    assert child.catalogue.module("SOH_model").layout == "flat"
    s = app.settings
    assert s.catalogue.module("load_prediction").algorithm == f"{__name__}:top_level"
    assert s.redis.url == "redis://:pw@127.0.0.1:1/2"


def test_a_worker_process_loads_the_registered_functions() -> None:
    app = App()
    app.register("load_prediction", algorithms.forecast_load)
    app.register("electricity_price", algorithms.price_signal)
    code = ("from stationflow.settings import Settings; from workers.algorithms import load_all, is_async; "
            "a = load_all(Settings.load().catalogue); "
            "print(a['load_prediction'].__qualname__, a['electricity_price'].__qualname__, "
            "is_async(a['electricity_price']), a['SOH_model'].__module__)")
    env = {**app.child_env(_clean_env())}
    env.pop(CHILD_ENV)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/", env=env,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["forecast_load", "price_signal", "True", "workers.reference"]


def test_async_hooks_register_by_path() -> None:
    """The worker awaits them (tests/integration/test_hooks_async.py)."""
    app = App()
    assert app.on_batch(top_level_async) is top_level_async
    assert app.on_result(top_level_async) is top_level_async
    assert app.hooks == {"batch_upload_handler": f"{__name__}:top_level_async",
                         "result_handler": f"{__name__}:top_level_async"}
    assert app.settings.hooks.batch_upload_handler == f"{__name__}:top_level_async"


def test_importing_stationflow_is_cheap_and_quiet() -> None:
    code = ("import logging, sys, stationflow\n"
            "assert not logging.getLogger().handlers\n"
            "heavy = [m for m in ('kafka', 'redis', 'rq', 'stationflow.app', 'stationflow.settings') "
            "if m in sys.modules]\n"
            "assert not heavy, heavy\n"
            "assert stationflow.App.__module__ == 'stationflow.app'\n"
            "print(sorted(stationflow.__all__))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         env=_clean_env(), timeout=60)
    assert out.returncode == 0, out.stderr
    assert "'App'" in out.stdout and "'RegistrationError'" in out.stdout


def test_importable_path_of_a_package_function() -> None:
    assert importable_path(algorithms.forecast_load) == ("examples.station_app.algorithms:forecast_load", str(ROOT))
    assert stationflow.RegistrationError is RegistrationError
