"""`stationflow.App`: register algorithms in code and run the whole pipeline from one script.

    import stationflow

    app = stationflow.App("stationflow.toml")

    @app.algorithm("load_prediction")
    def forecast(station_id, module_input):
        return {"prediction": [...]}

    if __name__ == "__main__":
        app.run(ingesters=1, workers=2)

Ingesters and workers are separate processes (`stationflow ingest`, `stationflow worker`), so
a registration cannot travel as a Python object: pickling functions is fragile (closures,
instance state, versions) and RQ jobs are JSON. The App records each function's importable
dotted path ("package.module:function") instead and hands the paths to the processes it
starts through the environment (`STATIONFLOW_MODULES`, `STATIONFLOW_HOOKS_*`, read by
`Settings.load`), so a worker started by the App resolves exactly what a worker configured
by TOML would. Functions that cannot be imported by name (lambdas, closures, methods,
functions typed into an interactive session) are refused at registration with what to do.

Precedence: a registration in code wins over `[modules.<name>].algorithm` and `[hooks]` of
the configuration (the environment wins over TOML); `start()` logs each such override.
"""

from __future__ import annotations

import atexit
import difflib
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from stationflow.running import Child, Running

if TYPE_CHECKING:
    from stationflow.settings import Settings

log = logging.getLogger("stationflow.app")

F = TypeVar("F", bound=Callable[..., Any])

#: set in the environment of every process an App starts; `start()` refuses to run there
CHILD_ENV = "STATIONFLOW_APP_CHILD"
MODULES_ENV = "STATIONFLOW_MODULES"
HOOK_ENV = {"result_handler": "STATIONFLOW_HOOKS_RESULT_HANDLER",
            "batch_upload_handler": "STATIONFLOW_HOOKS_BATCH_UPLOAD_HANDLER"}
#: how a child process enters the command line (no console script needed on PATH)


class RegistrationError(ValueError):
    """A function or module name that cannot be registered; the message says what to do."""


@dataclass(frozen=True)
class Registration:
    """One algorithm registered in code: the module it runs for and how workers import it."""

    module: str
    path: str  # "package.module:function"
    is_async: bool
    options: Mapping[str, Any] = field(default_factory=dict)  # other [modules.<name>] keys
    fn: Callable[..., Any] | None = field(default=None, compare=False, repr=False)
    sys_path: str | None = None  # directory that makes `path` importable, for the children


# ---- dotted paths ----------------------------------------------------------------------------

def importable_path(fn: Callable[..., Any], what: str = "algorithm") -> tuple[str, str | None]:
    """("package.module:function", directory to put on sys.path or None) for `fn`.

    Raises RegistrationError for anything another process cannot import by name.
    """
    if not callable(fn):
        raise RegistrationError(f"{what} {fn!r} is not callable")
    mod_name = getattr(fn, "__module__", None)
    qual = getattr(fn, "__qualname__", None)
    name = getattr(fn, "__name__", None) or repr(fn)
    if not isinstance(mod_name, str) or not isinstance(qual, str):
        raise RegistrationError(
            f"{what} {fn!r} has no module and name to import it by; register a function defined with "
            "`def` at the top level of a module")
    if qual == "<lambda>" or name == "<lambda>":
        raise RegistrationError(
            f"{what} is a lambda (in {mod_name}): worker processes import algorithms by name, so define "
            "it with `def` at the top level of a module and register that function")
    if "<locals>" in qual:
        outer = qual.split(".<locals>", 1)[0]
        raise RegistrationError(
            f"{what} {qual!r} is defined inside {outer}() (a closure) in {mod_name}: worker processes "
            "import algorithms by name, so move it to the top level of the module; pass settings "
            "through module-level constants or files, not captured variables")
    if "." in qual or not qual.isidentifier():
        raise RegistrationError(
            f"{what} {qual!r} in {mod_name} is a method or nested attribute: register a module-level "
            "function (it may call your class or model object)")
    sys_dir: str | None = None
    if mod_name == "__main__":
        mod_name, sys_dir = _main_module_name(qual, what)
    else:
        sys_dir = _import_root(mod_name)
    return f"{mod_name}:{qual}", sys_dir


def _main_module_name(qual: str, what: str) -> tuple[str, str | None]:
    """The name under which another process can import what runs here as __main__."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name and spec.name != "__main__":  # python -m package.module
        return spec.name, _import_root(spec.name)
    file = getattr(main, "__file__", None)
    if file:
        p = Path(file).resolve()
        if p.suffix == ".py" and p.stem.isidentifier():
            return p.stem, str(p.parent)
    raise RegistrationError(
        f"{what} {qual!r} is defined in an interactive session or `python -c`, which worker processes "
        "cannot import: put it in a module file (e.g. my_algorithms.py), import it from there and "
        "register the imported function")


def _import_root(mod_name: str) -> str | None:
    """The sys.path entry `mod_name` was imported from (so children can import it too)."""
    mod = sys.modules.get(mod_name)
    file = getattr(mod, "__file__", None)
    if not file:
        return None
    p = Path(file).resolve()
    depth = mod_name.count(".") + (2 if p.name == "__init__.py" else 1)
    root = p
    for _ in range(depth):
        root = root.parent
    return str(root)


def _default_module_names() -> list[str]:
    from parsers.catalogue import default_catalogue

    return [m.name for m in default_catalogue().modules]


def _module_keys() -> set[str]:
    from stationflow.settings import MODULE_KEYS

    return {k.name for k in MODULE_KEYS}


# ---- the App ---------------------------------------------------------------------------------

class App:
    """Algorithms and hooks registered in code, plus the configuration they run with.

    `config`: None (the TOML of $STATIONFLOW_CONFIG, if any, then STATIONFLOW_* variables), a
    TOML path, a dict shaped like the TOML, or a `Settings`. Nothing is read until `settings`
    or `start()`/`run()` needs it, so creating an App at import time has no side effects (a
    worker imports your module to find the registered functions).
    """

    def __init__(self, config: str | os.PathLike[str] | Mapping[str, Any] | Settings | None = None) -> None:
        self.config = config
        self.registrations: dict[str, Registration] = {}
        self.hooks: dict[str, str] = {}
        self._hook_dirs: dict[str, str | None] = {}
        self._settings: Settings | None = None
        self._generated: Path | None = None

    # ---- registration --------------------------------------------------------------------
    def algorithm(self, module: str, **options: Any) -> Callable[[F], F]:
        """Decorator: `fn(station_id, module_input)` is the algorithm of `module`.

        `options` are other keys of `[modules.<module>]` (layout="flat", run_timeout_s=10 ...).
        The function is returned unchanged, so it stays callable and testable.
        """
        def decorate(fn: F) -> F:
            self.register(module, fn, **options)
            return fn

        return decorate

    def register(self, module: str, fn: F, **options: Any) -> F:
        """`app.register("load_prediction", fn)`: the same as the decorator."""
        names = _default_module_names()
        if module not in names:
            close = difflib.get_close_matches(module, names, n=1, cutoff=0.5)
            hint = f"did you mean {close[0]!r}?" if close else "modules: " + ", ".join(names)
            raise RegistrationError(f"unknown module {module!r}; {hint}")
        bad = set(options) - (_module_keys() - {"algorithm"})
        if bad:
            raise RegistrationError(f"module {module}: unknown option(s) {sorted(bad)}; valid: "
                                    + ", ".join(sorted(_module_keys() - {"algorithm"})))
        path, sys_dir = importable_path(fn)
        from workers.algorithms import is_async

        prev = self.registrations.get(module)
        if prev is not None and prev.path != path:
            log.warning("module %s: %s replaces %s registered earlier", module, path, prev.path)
        self.registrations[module] = Registration(module, path, is_async(fn), dict(options), fn, sys_dir)
        self._settings = None
        return fn

    def on_result(self, fn: F) -> F:
        """`fn(station_id, module_input, result)` after every stored ok result (in the worker);
        `async def` is awaited."""
        return self._hook("result_handler", fn)

    def on_batch(self, fn: F) -> F:
        """`fn(batch_id, results)` after every uploaded batch (in the worker that uploaded it);
        the envelope itself is already sent: no need to produce anything. `async def` is awaited."""
        return self._hook("batch_upload_handler", fn)

    def _hook(self, name: str, fn: F) -> F:
        path, sys_dir = importable_path(fn, what=name)
        self.hooks[name] = path
        self._hook_dirs[name] = sys_dir
        self._settings = None
        return fn

    # ---- what the children get -----------------------------------------------------------
    def child_env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """The environment of a process started by this App: `base` (default os.environ) plus
        the configuration file, the registrations and the import path of their modules."""
        env = dict(os.environ if base is None else base)
        cfg = self._config_path()
        if cfg is not None:
            env["STATIONFLOW_CONFIG"] = cfg
        if self.registrations:
            modules: dict[str, dict[str, Any]] = {}
            if env.get(MODULES_ENV):
                try:
                    modules = {k: dict(v) for k, v in json.loads(env[MODULES_ENV]).items()}
                except (ValueError, TypeError, AttributeError):
                    modules = {}  # Settings.load reports the bad variable itself
            for name, reg in self.registrations.items():
                modules.setdefault(name, {}).update({**reg.options, "algorithm": reg.path})
            env[MODULES_ENV] = json.dumps(modules, sort_keys=True)
        for name, path in self.hooks.items():
            env[HOOK_ENV[name]] = path
        dirs = [r.sys_path for r in self.registrations.values()] + list(self._hook_dirs.values())
        extra = [d for d in dict.fromkeys(dirs) if d]
        if extra:
            old = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
            env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(extra + old))
        env[CHILD_ENV] = "1"
        return env

    def _config_path(self) -> str | None:
        """A TOML path for the children: the given file, or one generated from a dict/Settings."""
        from stationflow.settings import Settings

        if self.config is None:
            return None
        if isinstance(self.config, (str, os.PathLike)):
            return str(Path(self.config).resolve())
        if self._generated is None or not self._generated.exists():
            if isinstance(self.config, Settings):
                text = self.config.to_toml(masked=False)
            else:
                text = Settings.from_dict(self.config).to_toml(masked=False)
            d = Path(tempfile.mkdtemp(prefix="stationflow-app-"))
            p = d / "stationflow.toml"
            fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # may hold secrets
            with os.fdopen(fd, "w") as f:
                f.write(text)
            self._generated = p
            atexit.register(shutil.rmtree, d, ignore_errors=True)
        return str(self._generated)

    @property
    def settings(self) -> Settings:
        """The settings every started process will load (configuration + registrations)."""
        if self._settings is None:
            from stationflow.settings import Settings

            env = self.child_env()
            self._settings = Settings.load(env.get("STATIONFLOW_CONFIG") or None, env=env)
        return self._settings

    def check(self) -> Settings:
        """Validate everything a child would: the settings and that each registered path
        imports to the registered function. Logs where code overrides the configuration."""
        from stationflow.settings import Settings
        from workers.algorithms import AlgorithmImportError, resolve

        settings = self.settings
        cfg = self._config_path()
        base_env = {k: v for k, v in os.environ.items() if k not in (MODULES_ENV, *HOOK_ENV.values())}
        base = Settings.load(cfg, env=base_env)
        for name, reg in self.registrations.items():
            configured = base.catalogue.by_module[name].algorithm
            if name in base.module_overrides and "algorithm" in base.module_overrides[name] \
                    and configured != reg.path:
                log.info("module %s: algorithm %s registered in code wins over %s from the configuration",
                         name, reg.path, configured)
            else:
                log.info("module %s: algorithm %s (registered in code)", name, reg.path)
            if reg.path.split(":", 1)[0] == _main_name():
                continue  # the script itself: importing it here would run it twice
            try:
                found = resolve(reg.path, name)
            except AlgorithmImportError as e:
                raise RegistrationError(f"{e}; is its directory on PYTHONPATH?") from e
            if reg.fn is not None and found is not reg.fn:
                log.warning("module %s: %s is not the registered object (decorated again after "
                            "registration?); workers call what the module attribute holds", name, reg.path)
        for name, path in self.hooks.items():
            configured = getattr(base.hooks, name)
            if configured and configured != path:
                log.info("hooks.%s: %s registered in code wins over %s from the configuration",
                         name, path, configured)
        return settings

    # ---- running ---------------------------------------------------------------------------
    def start(self, ingesters: int = 1, workers: int = 2, until_idle: float | None = None, *,
              ingest_args: tuple[str, ...] = (), worker_args: tuple[str, ...] = ()) -> Running:
        """Start the processes and return at once (see `run` for the blocking form)."""
        if os.environ.get(CHILD_ENV):
            raise RuntimeError(
                "App.start()/run() was called while a stationflow process imported your module to "
                "find its algorithms: put app.run() under `if __name__ == \"__main__\":`")
        if ingesters < 0 or workers < 0 or ingesters + workers == 0:
            raise ValueError("run at least one ingester or worker (ingesters, workers >= 0)")
        if until_idle is not None and until_idle <= 0:
            raise ValueError("until_idle must be a positive number of seconds")
        settings = self.check()
        env = self.child_env()
        children: list[Child] = []
        idle = ("--until-idle", repr(float(until_idle))) if until_idle is not None else ()
        try:
            for i in range(ingesters):
                children.append(Child.spawn("ingest", i, ["ingest", *idle, *ingest_args], env))
            for i in range(workers):
                children.append(Child.spawn("worker", i, ["worker", *worker_args], env))
        except BaseException:
            for c in children:
                c.kill()
            raise
        log.info("started %d ingester(s) and %d worker(s): %s", ingesters, workers,
                 ", ".join(f"{c.name} pid {c.proc.pid}" for c in children))
        return Running(children, settings, until_idle)

    def run(self, ingesters: int = 1, workers: int = 2, until_idle: float | None = None, *,
            stop_timeout_s: float = 60.0, **kw: Any) -> int:
        """Run ingesters and workers as child processes until SIGINT/SIGTERM (forwarded to
        every child; a second signal kills them), until one of them fails, or with
        `until_idle` until the ingesters saw no record for that many seconds and the workers
        finished the queued jobs and open batches. Returns the exit status (0 = clean stop)."""
        running = self.start(ingesters, workers, until_idle, **kw)
        main = threading.current_thread() is threading.main_thread()
        old: dict[int, Any] = {}
        if main:
            def on_signal(signum: int, _frame: Any) -> None:
                running.request_stop(signum)

            for s in (signal.SIGINT, signal.SIGTERM):
                old[s] = signal.signal(s, on_signal)
        try:
            return running.wait(stop_timeout_s=stop_timeout_s)
        finally:
            for sig, h in old.items():
                signal.signal(sig, h)
            running.kill()


def _main_name() -> str | None:
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name and spec.name != "__main__":
        return spec.name
    file = getattr(main, "__file__", None)
    return Path(file).stem if file else None


def run_main(app_path: str, argv: list[str] | None = None, *, prog: str | None = None,
             description: str | None = None) -> int:
    """`python -m <package>` of a script that defines an App ("module:attribute"): options
    --config, --ingesters, --workers, --until-idle, then `app.run(...)`. The module is
    imported after --config is in place, since an App reads its configuration when created."""
    import argparse
    import importlib

    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument("--config", help="TOML configuration (default: $STATIONFLOW_CONFIG)")
    p.add_argument("--ingesters", type=int, default=1)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--until-idle", type=float, default=None,
                   help="stop once no record arrived for this many seconds and all work is done")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.config:
        os.environ["STATIONFLOW_CONFIG"] = args.config
    module, _, attr = app_path.partition(":")
    app: App = getattr(importlib.import_module(module), attr)
    return app.run(ingesters=args.ingesters, workers=args.workers, until_idle=args.until_idle)
