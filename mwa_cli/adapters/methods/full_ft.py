"""Full fine-tuning, the baseline: every backbone weight trains (with layer-wise lr decay), nothing is added.
The same on every backbone family."""

from __future__ import annotations

from dataclasses import dataclass

from mwa_cli.adapters.methods.base import Family, Method, MethodConfig


@dataclass
class FullFTConfig(MethodConfig):
    """No options."""


class FullFineTuning(Method):
    name = "full-ft"
    display_name = "Full FT"
    Config = FullFTConfig
    # beit3-mini: chosen on sample_data's val split (bench/sweep_mini_recall.py); BEiT-3: the official retrieval
    # recipe; blip2-itm-vit-g: LAVIS's retrieval fine-tuning rate
    learning_rates = {"beit3-mini": 3e-3, "default": 2e-4, "blip2-itm-vit-g": 1e-5}
    order = 30

    def apply(self, model, config: FullFTConfig, family: Family):
        model.requires_grad_(True)
        return family.Applied(self.name, {}, model)


METHOD = FullFineTuning()
