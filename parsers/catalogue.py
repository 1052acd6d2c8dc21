"""The topic and module catalogue: the single source of truth for every topic's semantics.

Everything else (parsers, store, ingester, workers, CLI) asks this table; nothing re-types a
topic name, a window kind, a cap or a dependency. Derived maps (topic -> modules, dependency
order, levels) are computed from it, so an override in the settings changes them everywhere.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

KiB = 1024
MiB = 1024 * KiB
DAY = 86_400

WINDOW_KINDS = ("latest", "append", "hourly", "orders", "devices", "global")
ENVELOPES = ("station_array", "wrapper", "global_wrapper", "single", "module_output")
RUN_MODES = ("local", "external", "off")
LAYOUTS = ("namespaced", "flat")

#: max_bytes defaults per envelope (spec §6.7)
DEFAULT_MAX_BYTES = {
    "single": 1 * MiB,
    "station_array": 128 * MiB,
    "wrapper": 128 * MiB,
    "global_wrapper": 128 * MiB,
    "module_output": 64 * MiB,
}

#: inputs that are optional for every module that uses them (spec §4.3)
DEFAULT_OPTIONAL = frozenset({"device_storage", "car_order", "device_error", "pv_prediction"})

#: topics whose last value must be replayed from the earliest offset for a new group (§6.9)
SLOW_ALIASES = frozenset(
    {"station_param", "car_price", "environment_calendar", "device_pv", "environment_weather"}
)


#: kinds that upsert by a key, and which payload field usually holds it
_KEYED_KINDS = {
    "hourly": "e.g. key_field = \"sendTime\"",
    "devices": "e.g. key_field = \"hostCode\"",
    "global": "e.g. key_field = \"date\"",
}


class CatalogueError(ValueError):
    """A catalogue (or its configuration overrides) that cannot work: raised at start-up."""


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """One Kafka topic and how its data becomes windows."""

    topic: str
    alias: str
    envelope: str  # one of ENVELOPES
    kind: str  # one of WINDOW_KINDS
    window_size: int
    ttl_s: float | None  # None = valid until replaced
    wrapper_key: str | None = None  # realTimeData / fee / weather / calendar
    key_field: str | None = None  # hourly: sendTime, devices: hostCode/storageCode, global: date
    required_fields: tuple[str, ...] = ()  # required besides the station id
    max_bytes: int = 1 * MiB
    retention_s: float | None = None  # None = never expires; see default_retention()
    fill: float | None = 0.0  # hourly gap fill
    order_close_s: float = 2.0  # orders: wall-clock close of the open second
    module: str | None = None  # for MODULE-OUTPUT topics: the module that produces it
    slow: bool = False  # start from earliest when the group has no offset

    @property
    def is_global(self) -> bool:
        return self.kind == "global"

    @property
    def is_module_output(self) -> bool:
        return self.envelope == "module_output"


def default_retention(ttl_s: float | None) -> float | None:
    """Spec §6.9: max(2 x ttl, 7 days); never when the TTL is 'none'."""
    if ttl_s is None:
        return None
    return max(2 * ttl_s, 7 * DAY)


@dataclass(frozen=True, slots=True)
class ModuleSpec:
    """One algorithm module: inputs, dependencies, output topic and run policy."""

    name: str
    inputs: tuple[str, ...]  # aliases, in flat-layout order (spec §4.1)
    deps: tuple[str, ...]  # module names
    output_topic: str
    optional: frozenset[str] = DEFAULT_OPTIONAL
    triggers: tuple[str, ...] | None = None  # None = all inputs and deps
    runs: str = "local"
    algorithm: str | None = None  # dotted path "pkg.mod:fn" or "pkg.mod.fn"
    heartbeat_s: float | None = None
    batch_timeout_s: float = 5.0
    upload_empty: bool = False
    layout: str = "namespaced"
    output_ttl_s: float = 3600.0
    run_timeout_s: float = 60.0
    min_interval_s: float = 0.0  # a (station, module) runs at most once per interval; 0 = no limit

    @property
    def all_inputs(self) -> tuple[str, ...]:
        """Input aliases then dependency module names: what readiness and quality cover."""
        return self.inputs + self.deps

    @property
    def trigger_set(self) -> frozenset[str]:
        return frozenset(self.all_inputs if self.triggers is None else self.triggers)

    @property
    def required(self) -> tuple[str, ...]:
        return tuple(n for n in self.all_inputs if n not in self.optional)


def _topic(num_topic: str, envelope: str, kind: str, size: int, ttl: float | None, **kw: Any) -> TopicSpec:
    alias = num_topic.removeprefix("SCHEDULE-").lower().replace("-", "_")
    return TopicSpec(
        topic=num_topic,
        alias=alias,
        envelope=envelope,
        kind=kind,
        window_size=size,
        ttl_s=ttl,
        max_bytes=DEFAULT_MAX_BYTES[envelope],
        retention_s=default_retention(ttl),
        slow=alias in SLOW_ALIASES,
        **kw,
    )


def _input_topics() -> list[TopicSpec]:
    return [
        _topic("SCHEDULE-STATION-PARAM", "station_array", "latest", 1, None),
        _topic(
            "SCHEDULE-STATION-REALTIME-DATA", "wrapper", "hourly", 168, 2 * 3600,
            wrapper_key="realTimeData", key_field="sendTime", required_fields=("sendTime",),
        ),
        _topic(
            "SCHEDULE-ENVIRONMENT-CALENDAR", "global_wrapper", "global", 800, 400 * DAY,
            wrapper_key="calendar", key_field="date", required_fields=("date",),
        ),
        _topic("SCHEDULE-DEVICE-METER", "single", "latest", 1, 15 * 60),
        _topic("SCHEDULE-DEVICE-GUN", "single", "latest", 1, 60),
        _topic("SCHEDULE-CAR-ORDER", "single", "orders", 120, 60),
        _topic("SCHEDULE-CAR-PRICE", "wrapper", "latest", 1, 40 * DAY, wrapper_key="fee"),
        _topic("SCHEDULE-DEVICE-ERROR", "single", "latest", 1, DAY),
        _topic(
            "SCHEDULE-DEVICE-HOST-DCDC", "single", "devices", 256, 60,
            key_field="hostCode", required_fields=("hostCode",),
        ),
        _topic(
            "SCHEDULE-DEVICE-HOST-ACDC", "single", "devices", 256, 60,
            key_field="hostCode", required_fields=("hostCode",),
        ),
        _topic(
            "SCHEDULE-DEVICE-STORAGE", "single", "devices", 256, 60,
            key_field="storageCode", required_fields=("storageCode",),
        ),
        _topic("SCHEDULE-DEVICE-PV", "single", "latest", 1, 2 * DAY),
        _topic("SCHEDULE-ENVIRONMENT-WEATHER", "wrapper", "latest", 1, 2 * DAY, wrapper_key="weather"),
    ]


def output_topic_name(module: str) -> str:
    return f"MODULE-OUTPUT-{module.upper()}"


def _modules() -> list[ModuleSpec]:
    m = [
        ("load_prediction", ("station_param", "station_realtime_data", "environment_calendar"), ()),
        ("pv_prediction", ("device_pv", "environment_weather"), ()),
        (
            "evaluation_model",
            ("station_realtime_data", "car_order", "car_price", "device_host_dcdc",
             "device_host_acdc", "device_storage"),
            (),
        ),
        ("SOH_model", ("station_param", "station_realtime_data", "environment_calendar", "device_error"), ()),
        ("customer_mining", (), ()),
        (
            "operation_optimization",
            ("station_param", "car_order", "car_price", "device_host_dcdc", "device_storage"),
            ("pv_prediction",),
        ),
        (
            "electricity_price",
            ("station_param", "station_realtime_data", "environment_calendar", "device_meter",
             "car_order", "car_price", "device_storage"),
            ("pv_prediction", "evaluation_model", "SOH_model"),
        ),
        ("station_guidance", ("car_order",), ("load_prediction", "evaluation_model")),
        (
            "thermal_management",
            ("station_realtime_data", "car_price", "device_host_dcdc", "device_host_acdc", "device_storage"),
            ("load_prediction", "operation_optimization"),
        ),
    ]
    return [
        ModuleSpec(name=n, inputs=i, deps=d, output_topic=output_topic_name(n),
                   algorithm=f"workers.reference:{n}", min_interval_s=DEFAULT_MIN_INTERVAL_S[n])
        for n, i, d in m
    ]


#: rate control defaults (docs/workers.md, "Rate control"), from the inputs' natural rates:
#: modules fed by hourly, daily or event data (realtime hours, calendar, params, PV, weather,
#: faults) at most once a minute; modules fed by the 1 Hz device ticks and closed order seconds
#: once per 5 s (the batch timeout), all with the same interval so that a station's trailing
#: runs come due together and share one job; customer_mining has no data triggers.
DEFAULT_MIN_INTERVAL_S = {
    "load_prediction": 60.0,
    "pv_prediction": 60.0,
    "SOH_model": 60.0,
    "evaluation_model": 5.0,
    "operation_optimization": 5.0,
    "electricity_price": 5.0,
    "station_guidance": 5.0,
    "thermal_management": 5.0,
    "customer_mining": 0.0,
}


def _output_topic(mod: ModuleSpec) -> TopicSpec:
    return TopicSpec(
        topic=mod.output_topic,
        alias=mod.name,
        envelope="module_output",
        kind="latest",
        window_size=1,
        ttl_s=mod.output_ttl_s,
        wrapper_key="results",
        max_bytes=DEFAULT_MAX_BYTES["module_output"],
        retention_s=default_retention(mod.output_ttl_s),
        module=mod.name,
        slow=True,
    )


@dataclass(frozen=True)
class Catalogue:
    """The validated catalogue plus every derived map. Build with `Catalogue.build()`."""

    topics: tuple[TopicSpec, ...]
    modules: tuple[ModuleSpec, ...]
    by_topic: Mapping[str, TopicSpec] = field(init=False)
    by_alias: Mapping[str, TopicSpec] = field(init=False)
    by_module: Mapping[str, ModuleSpec] = field(init=False)
    order: tuple[str, ...] = field(init=False)  # modules, dependencies first
    levels: Mapping[str, int] = field(init=False)

    def __post_init__(self) -> None:
        by_topic: dict[str, TopicSpec] = {}
        by_alias: dict[str, TopicSpec] = {}
        for t in self.topics:
            _check_topic(t, by_topic, by_alias)
            by_topic[t.topic] = t
            by_alias[t.alias] = t
        by_module: dict[str, ModuleSpec] = {}
        for m in self.modules:
            if m.name in by_module:
                raise CatalogueError(f"duplicate module {m.name}")
            if m.runs not in RUN_MODES:
                raise CatalogueError(f"module {m.name}: runs must be one of {RUN_MODES}, not {m.runs!r}")
            if not m.min_interval_s >= 0:
                raise CatalogueError(f"modules.{m.name}.min_interval_s: must be >= 0, not {m.min_interval_s!r}")
            if m.layout not in LAYOUTS:
                raise CatalogueError(f"module {m.name}: layout must be one of {LAYOUTS}, not {m.layout!r}")
            by_module[m.name] = m
        for m in self.modules:
            _check_module_refs(m, by_alias, by_module)
        order, levels = _toposort(by_module)
        object.__setattr__(self, "by_topic", by_topic)
        object.__setattr__(self, "by_alias", by_alias)
        object.__setattr__(self, "by_module", by_module)
        object.__setattr__(self, "order", order)
        object.__setattr__(self, "levels", levels)

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def build(
        cls,
        topic_overrides: Mapping[str, Mapping[str, Any]] | None = None,
        module_overrides: Mapping[str, Mapping[str, Any]] | None = None,
        topic_names: Mapping[str, str] | None = None,
    ) -> Catalogue:
        """The default catalogue with configuration overrides applied and validated.

        `topic_overrides` is keyed by alias, `module_overrides` by module name, `topic_names`
        maps alias -> Kafka topic name (for deployments that rename topics).
        """
        modules = _modules()
        mo = dict(module_overrides or {})
        _known(mo, [m.name for m in modules], "module")
        modules = [_apply(m, mo.get(m.name, {}), f"modules.{m.name}") for m in modules]
        topics = _input_topics() + [_output_topic(m) for m in modules]
        to = dict(topic_overrides or {})
        names = dict(topic_names or {})
        aliases = [t.alias for t in topics]
        _known(to, aliases, "topic alias")
        _known(names, aliases, "topic alias")
        out = [_override_topic(t, to.get(t.alias, {}), names.get(t.alias)) for t in topics]
        # keep module output_topic consistent with a renamed output topic
        by_alias = {t.alias: t for t in out}
        modules = [replace(m, output_topic=by_alias[m.name].topic) for m in modules]
        return cls(tuple(out), tuple(modules))

    # ---- derived views ------------------------------------------------------------------
    @property
    def input_topics(self) -> tuple[TopicSpec, ...]:
        return tuple(t for t in self.topics if not t.is_module_output)

    @property
    def output_topics(self) -> tuple[TopicSpec, ...]:
        return tuple(t for t in self.topics if t.is_module_output)

    def topic(self, name_or_alias: str) -> TopicSpec:
        """Look up by Kafka topic name or alias; unknown names raise with a suggestion."""
        t = self.by_topic.get(name_or_alias) or self.by_alias.get(name_or_alias)
        if t is None:
            raise CatalogueError(
                f"unknown topic {name_or_alias!r} ({_hint(name_or_alias, list(self.by_topic) + list(self.by_alias))})"
            )
        return t

    def module(self, name: str) -> ModuleSpec:
        m = self.by_module.get(name)
        if m is None:
            raise CatalogueError(f"unknown module {name!r} ({_hint(name, self.by_module)})")
        return m

    def modules_using(self, alias: str) -> tuple[str, ...]:
        """Modules that take `alias` as an input or dep, in dependency order."""
        return tuple(m for m in self.order if alias in self.by_module[m].all_inputs)

    def dependents(self, module: str) -> tuple[str, ...]:
        """Direct dependents of `module`, in dependency order."""
        return tuple(m for m in self.order if module in self.by_module[m].deps)

    def transitive_deps(self, module: str) -> tuple[str, ...]:
        seen: set[str] = set()
        stack = list(self.module(module).deps)
        while stack:
            d = stack.pop()
            if d not in seen:
                seen.add(d)
                stack.extend(self.by_module[d].deps)
        return tuple(m for m in self.order if m in seen)

    def local_modules(self) -> tuple[str, ...]:
        return tuple(m for m in self.order if self.by_module[m].runs == "local")

    def consumed_topics(self) -> tuple[TopicSpec, ...]:
        """What ingesters subscribe to: inputs used by a local module, plus the output topics
        of `external` modules. Outputs of local modules are never re-ingested (§6.4)."""
        out = []
        for t in self.topics:
            if t.is_module_output:
                if self.by_module[t.module].runs == "external":  # type: ignore[index]
                    out.append(t)
            else:
                out.append(t)
        return tuple(out)

    def sort_modules(self, names: Iterable[str]) -> list[str]:
        s = set(names)
        return [m for m in self.order if m in s]


def _known(names: Mapping[str, Any], valid: list[str], what: str) -> None:
    """Every key of `names` is one of `valid`; else a CatalogueError with a suggestion."""
    for name in names:
        if name not in valid:
            raise CatalogueError(f"unknown {what} {name!r} ({_hint(name, valid)})")


def _override_topic(t: TopicSpec, overrides: Mapping[str, Any], topic_name: str | None) -> TopicSpec:
    """`t` with its configuration overrides (a new TTL moves the default retention along)
    and its Kafka topic renamed."""
    ov = dict(overrides)
    if "ttl_s" in ov and "retention_s" not in ov:
        ov["retention_s"] = default_retention(ov["ttl_s"])
    t = _apply(t, ov, f"topics.{t.alias}")
    return replace(t, topic=topic_name) if topic_name is not None else t


def _check_topic(t: TopicSpec, by_topic: Mapping[str, TopicSpec], by_alias: Mapping[str, TopicSpec]) -> None:
    """One topic's own rules, and that its name and alias are not taken yet."""
    if t.kind not in WINDOW_KINDS:
        raise CatalogueError(f"topic {t.topic}: unknown window kind {t.kind!r} ({_hint(t.kind, WINDOW_KINDS)})")
    if t.envelope not in ENVELOPES:
        raise CatalogueError(f"topic {t.topic}: unknown envelope {t.envelope!r}")
    if t.topic in by_topic:
        raise CatalogueError(f"duplicate topic {t.topic}")
    if t.alias in by_alias:
        raise CatalogueError(f"duplicate alias {t.alias!r} ({by_alias[t.alias].topic} and {t.topic})")
    if t.window_size < 1:
        raise CatalogueError(f"topic {t.topic}: window_size must be >= 1")
    if t.kind in _KEYED_KINDS and not t.key_field:
        raise CatalogueError(f"topics.{t.alias}.key_field: required for kind {t.kind!r} ({_KEYED_KINDS[t.kind]})")


def _check_module_refs(m: ModuleSpec, by_alias: Mapping[str, TopicSpec], by_module: Mapping[str, ModuleSpec]) -> None:
    """A module's inputs, deps, triggers and optional names all exist (and a local module
    depends on no module that is off)."""
    for a in m.inputs:
        if a not in by_alias or by_alias[a].is_module_output:
            raise CatalogueError(f"module {m.name}: unknown input topic alias {a!r} ({_hint(a, by_alias)})")
    for d in m.deps:
        if d not in by_module:
            raise CatalogueError(f"module {m.name}: unknown dependency {d!r} ({_hint(d, by_module)})")
        if m.runs == "local" and by_module[d].runs == "off":
            raise CatalogueError(f"module {m.name} runs locally but depends on {d!r}, which is off")
    for trig in m.trigger_set:
        if trig not in m.all_inputs:
            raise CatalogueError(f"module {m.name}: trigger {trig!r} is not one of its inputs or deps")
    for opt in m.optional:
        if opt not in by_alias and opt not in by_module:
            raise CatalogueError(f"module {m.name}: optional {opt!r} is neither a topic alias nor a module")


def _toposort(by_module: Mapping[str, ModuleSpec]) -> tuple[tuple[str, ...], dict[str, int]]:
    levels: dict[str, int] = {}
    visiting: list[str] = []

    def level(name: str) -> int:
        if name in levels:
            return levels[name]
        if name in visiting:
            cycle = visiting[visiting.index(name):] + [name]
            raise CatalogueError("dependency cycle: " + " -> ".join(cycle))
        visiting.append(name)
        lv = 1 + max((level(d) for d in by_module[name].deps), default=-1)
        visiting.pop()
        levels[name] = lv
        return lv

    names = list(by_module)  # declaration order breaks ties
    for n in names:
        level(n)
    order = tuple(sorted(names, key=lambda n: (levels[n], names.index(n))))
    return order, levels


def _apply(obj: Any, overrides: Mapping[str, Any], where: str) -> Any:
    if not overrides:
        return obj
    fields = [f for f in obj.__dataclass_fields__ if f not in ("topic", "alias", "name", "module")]
    for k in overrides:
        if k not in fields:
            raise CatalogueError(f"{where}: unknown key {k!r} ({_hint(k, fields)})")
    kw = dict(overrides)
    for k in ("inputs", "deps", "triggers"):
        if k in kw and kw[k] is not None:
            kw[k] = tuple(kw[k])
    if "optional" in kw:
        kw["optional"] = frozenset(kw["optional"])
    return replace(obj, **kw)


def _hint(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.5)
    return f"did you mean {close[0]!r}?" if close else "no similar name"


_DEFAULT: Catalogue | None = None


def default_catalogue() -> Catalogue:
    """The catalogue with no overrides (built on first use, not at import)."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = Catalogue.build()
    return _DEFAULT
