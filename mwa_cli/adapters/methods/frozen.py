"""The backbone as it is (zero-shot): nothing trains, nothing is added. The same on every backbone family."""

from __future__ import annotations

from dataclasses import dataclass

from mwa_cli.adapters.methods.base import Family, Method, MethodConfig


@dataclass
class FrozenConfig(MethodConfig):
    """No options."""


class Frozen(Method):
    name = "frozen"
    display_name = "Frozen"
    Config = FrozenConfig
    learning_rates = {"default": 2e-4}  # never used (nothing trains); config.json still records a rate
    order = 40

    def apply(self, model, config: FrozenConfig, family: Family):
        model.requires_grad_(False)
        return family.Applied(self.name, {}, model)


METHOD = Frozen()
