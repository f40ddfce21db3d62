"""What a training method is: its options (a config dataclass), presets, learning rates and how it applies.

A method module in this package defines a ``Method`` subclass and ``METHOD = ThatMethod()``; the registry
(``mwa_cli.adapters.registry``) finds it there. Method modules import nothing heavy when loaded: the command line
loads all of them to list them in ``mwa train --help`` and to validate ``--option`` before any model is built,
and ``mwa report`` reads their display names, none of which needs torch. Injection code imports its modules
inside the functions.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from typing import Any, ClassVar, Protocol

from mwa_cli.errors import ConfigError
from mwa_cli.ranges import Range, out_of_range
from mwa_cli.typecheck import describe, matches

if typing.TYPE_CHECKING:
    from mwa_cli.adapters.applied import AppliedMethod

LayerSpec = typing.Union[str, list[int], dict[str, Any]]  # all | top-K | "0,5" | [0, 5] | {"vision": ..., ...}


class Family(Protocol):
    """A backbone family as methods see it (``adapters.beit3``, ``adapters.two_tower``, ``adapters.blip2``)."""

    key: str  # a method injects into this family through its ``inject_<key>`` method
    title: str  # for messages
    Applied: type[AppliedMethod]  # the family's parameter accounting

    def select_layers(self, spec: Any, model) -> Any: ...

    def set_head_training(self, model, heads: bool, logit_scale: bool) -> None: ...


@dataclasses.dataclass
class MethodConfig:
    """A method's options: the field names are the option names, the defaults the method's defaults, the type
    hints what a value may be (`mwa_cli.typecheck`) and ``ranges`` (`mwa_cli.ranges.Range` per option) what a
    number may be, both checked by ``validate``."""

    ranges: ClassVar[dict[str, Range]] = {}

    def check(self) -> None:
        """Checks beyond the types (ranges, names); raise ``ConfigError``."""

    def validate(self, method: str) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if not matches(value, hints[f.name]):
                default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
                raise ConfigError(f"option {f.name} of method {method} must be {describe(hints[f.name])}, "
                                  f"not {value!r}", hint=f"e.g. {_option_example(f.name, default)}")
        bad = out_of_range(vars(self), self.ranges)
        if bad is not None:
            name, value, rng = bad
            default = next(f.default for f in dataclasses.fields(self) if f.name == name)
            raise ConfigError(f"option {name} of method {method} must be {rng.describe()}, not {value!r}"[:300],
                              hint=f"e.g. {_option_example(name, default)}")
        self.check()


class Method:
    """A training method: what it adds to a backbone, what trains, and with which defaults."""

    name: ClassVar[str]  # --method value, the key in config.json and adapter_config.json
    display_name: ClassVar[str]  # in reports
    Config: ClassVar[type[MethodConfig]]
    presets: ClassVar[dict[str, dict[str, Any]]] = {}  # --option preset=NAME: option values
    learning_rates: ClassVar[dict[str, float]]  # peak lr per backbone name; "default" for any other backbone
    # peak lr per backbone for captions that are mostly repeats, where it was measured to differ
    templated_learning_rates: ClassVar[dict[str, float]] = {}
    order: ClassVar[int] = 100  # position in help texts and tables

    def configure(self, options: dict[str, Any] | None) -> tuple[MethodConfig, str | None]:
        """Defaults, then a preset (``options["preset"]``), then the given options; unknown keys and values of
        the wrong type refused. Returns the config and the preset's name."""
        if options is not None and not isinstance(options, dict):
            raise ConfigError(f"the options of method {self.name} must be KEY=VALUE pairs, not {options!r}",
                              hint="e.g. --option rank=16, or method_options = {rank = 16} in a config file")
        opts = dict(options or {})
        preset = opts.pop("preset", None)
        values: dict[str, Any] = {}
        if preset is not None:
            if preset not in self.presets:
                raise ConfigError(f"unknown preset {preset!r} for method {self.name}",
                                  hint=(f"{self.name} presets: {', '.join(self.presets)}" if self.presets
                                        else f"method {self.name} has no presets"))
            values.update(self.presets[preset])
        accepted = [f.name for f in dataclasses.fields(self.Config)] + (["preset"] if self.presets else [])
        unknown = sorted(set(opts) - set(accepted))
        if unknown:
            raise ConfigError(f"unknown options for method {self.name}: {', '.join(unknown)}",
                              hint=f"accepted: {', '.join(sorted(accepted)) or 'none'}")
        values.update(opts)
        config = self.Config(**values)
        config.validate(self.name)
        return config, preset

    @staticmethod
    def record(config: MethodConfig, preset: str | None) -> dict[str, Any]:
        """The options as written to config.json and adapter_config.json (resolved values, then the preset)."""
        out = dataclasses.asdict(config)
        if preset is not None:
            out["preset"] = preset
        return out

    def supports(self, family: Family) -> bool:
        return True

    def apply(self, model, config: MethodConfig, family: Family) -> AppliedMethod:
        """Change ``model`` (add modules, set ``requires_grad``) and account for it. Must check the options
        against the model before changing anything."""
        raise NotImplementedError


class AdapterMethod(Method):
    """New modules on a frozen backbone: they train, with ``logit_scale``; the heads only on request.

    The config has ``layers`` (a ``LayerSpec``), ``train_heads`` and ``train_logit_scale``; the method has an
    ``inject_<family key>(model, config)`` per backbone family it supports, called with ``config.layers``
    resolved for that family, which adds the modules (on the model's device) and may resolve other options in
    ``config`` (what they resolve to is recorded)."""

    REQUIRED_OPTIONS: ClassVar[tuple[str, ...]] = ("layers", "train_heads", "train_logit_scale")

    def supports(self, family: Family) -> bool:
        return hasattr(self, f"inject_{family.key}")

    def apply(self, model, config: MethodConfig, family: Family) -> AppliedMethod:
        inject = getattr(self, f"inject_{family.key}")
        config.layers = family.select_layers(config.layers, model)
        before = {n for n, _ in model.named_parameters()}
        inject(model, config)
        applied = family.Applied(self.name, {}, model, layers=config.layers)
        applied.new_param_names = {n for n, _ in model.named_parameters()} - before
        for n, p in model.named_parameters():
            p.requires_grad = n in applied.new_param_names
        family.set_head_training(model, heads=bool(config.train_heads), logit_scale=bool(config.train_logit_scale))
        return applied


def _option_example(name: str, value: Any) -> str:
    """``--option name=value`` as a shell takes it (JSON for lists and objects, quoted)."""
    if isinstance(value, str):
        return f"--option {name}={value}"
    text = json.dumps(value, separators=(",", ":"))
    return f"--option '{name}={text}'" if isinstance(value, (list, dict)) else f"--option {name}={text}"
