"""The optimization methods as objects in one table: each knows its name, its settings type, its presets (if any),
how many steps a run takes and the loop that runs a batch of targets. Everything that differs between methods is
looked up here (``METHODS[name]`` or ``method_of(params)``), never switched on by type elsewhere."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields, replace
from typing import Any, Callable, Mapping

from deepvis.core.errors import DeepvisError
from deepvis.engine.featvis.maco import MacoParams, optimize_maco, store_spectrum
from deepvis.engine.featvis.modern import ModernParams, optimize_modern
from deepvis.engine.featvis.paper import optimize_paper
from deepvis.engine.featvis.presets import DEFAULT_PRESET, PRESETS, PaperParams, preset
from deepvis.engine.featvis.result import OptimizeResult

#: The settings of any method (a frozen dataclass with ``steps``, ``seed``, ``push_dir``, ``with_`` and ``to_json``).
Params = PaperParams | ModernParams | MacoParams
#: A method's loop ``run(model, targets, params, on_step)``: one image (or more) per target, all targets in one batch,
#: ``on_step(i)`` after each step.
RunFunction = Callable[..., list[OptimizeResult]]


@dataclass(frozen=True)
class Method:
    """One optimization method: ``name`` (also what its results and stores record), ``params_type`` (its settings
    dataclass), ``run`` (its batched loop), optionally named ``presets`` with the ``default_preset``, and
    ``prepare(model, params, store) -> dict``: keyword arguments of ``run`` taken from a store being optimized
    into (MACO's spectrum of the store's images)."""

    name: str
    params_type: type
    run: RunFunction
    presets: Mapping[str, Any] = field(default_factory=dict)
    default_preset: str | None = None
    prepare: Callable[..., dict] | None = None

    def steps(self, params: Params) -> int:
        """How many optimizer steps a run takes (the paper's ``max_iter``, the modern recipe's ``steps``)."""
        return params.steps

    def defaults(self, preset_name: str | None = None) -> Params:
        """The settings a run starts from: the named (or default) preset, or the dataclass defaults."""
        if preset_name and not self.presets:
            owners = " or ".join(m.name for m in METHODS.values() if m.presets)
            raise DeepvisError(f"presets belong to the {owners} method, not {self.name!r}")
        if self.presets:
            return preset(preset_name or self.default_preset)
        return self.params_type()

    def all_defaults(self) -> list[Params]:
        """Every starting point a user may pick (all presets, or the one default): what help texts describe."""
        return [self.defaults(name) for name in self.presets] if self.presets else [self.defaults()]

    def setting_names(self) -> list[str]:
        """The names of the method's settings, in declaration order."""
        return [f.name for f in fields(self.params_type)]


METHODS: dict[str, Method] = {
    "paper": Method("paper", PaperParams, optimize_paper, PRESETS, DEFAULT_PRESET),
    "modern": Method("modern", ModernParams, optimize_modern),
    "maco": Method("maco", MacoParams, optimize_maco,
                   prepare=lambda model, params, store: {"spectrum": store_spectrum(model, params, store)}),
}
_BY_TYPE = {m.params_type: m for m in METHODS.values()}


def method_named(name: str) -> Method:
    """The method called ``name``, or an error listing the methods."""
    try:
        return METHODS[name]
    except KeyError:
        raise DeepvisError(f"unknown method {name!r}: use one of {', '.join(METHODS)}") from None


def method_of(params: Params) -> Method:
    """The method whose settings ``params`` are."""
    try:
        return _BY_TYPE[type(params)]
    except KeyError:
        raise DeepvisError(f"{type(params).__name__} are not the settings of any method "
                           f"(use one of {', '.join(m.params_type.__name__ for m in METHODS.values())})") from None


@dataclass(frozen=True)
class Setting:
    """A method setting offered as a command-line flag, read from its dataclass field (whose metadata has ``help``):
    ``methods`` that have it, its ``type`` as annotated (``int``, ``float``, ``str``, ``bool``, ``dict``), ``choices``,
    ``metavar``, ``minimum``, and ``default``: what the help shows (``512``, or ``paper3: 1000`` where presets
    differ)."""

    name: str
    methods: tuple[str, ...]
    type: str
    help: str
    choices: tuple | None = None
    metavar: str | None = None
    minimum: int | None = None
    default: str = ""


def flag_settings() -> list[Setting]:
    """Every setting with a flag, each once (a setting several methods share, such as ``seed``, lists them all),
    in the order of the table and of the fields; so a new field with ``help`` metadata is a new flag."""
    found: dict[str, Setting] = {}
    for method in METHODS.values():
        for f in fields(method.params_type):
            if "help" not in f.metadata:
                continue
            if f.name in found:
                found[f.name] = replace(found[f.name], methods=found[f.name].methods + (method.name,))
                continue
            type_name = f.type if isinstance(f.type, str) else f.type.__name__  # annotations are strings here
            found[f.name] = Setting(f.name, (method.name,), type_name, f.metadata["help"],
                                    tuple(f.metadata["choices"]) if "choices" in f.metadata else None,
                                    f.metadata.get("metavar"), f.metadata.get("min"))
    return [replace(s, default=_default_text(s)) for s in found.values()]


def _default_text(setting: Setting) -> str:
    """``default V`` when every starting point agrees, else the default preset's value (``paper3: 1000``)."""
    values = [getattr(p, setting.name) for m in setting.methods for p in METHODS[m].all_defaults()]
    first = METHODS[setting.methods[0]]
    shown = getattr(first.defaults(), setting.name)
    text = json.dumps(shown) if isinstance(shown, dict) else str(shown)
    if all(v == values[0] for v in values):
        return f"default {text}"
    if first.default_preset is None:  # methods without presets that differ: each method's default
        return ", ".join(f"{m}: {getattr(METHODS[m].defaults(), setting.name)}" for m in setting.methods)
    return f"{first.default_preset}: {text}"
