"""Print the parameter accounting of every method on BEiT-3 Base and Large (meta device, no weights).

    python scripts/param_counts.py > docs/parameters.md
"""

from __future__ import annotations

from mwa_cli.adapters.parameters_doc import markdown_row, parameter_row
from mwa_cli.adapters.registry import names
from mwa_cli.models.presets import build_backbone

VARIANTS = [(m, None) for m in names()] + [("mwa", {"preset": "paper-code"}), ("mwa", {"layers": "top-8"})]


def main() -> None:
    print("# Parameter counts per method (BEiT-3 retrieval model, 224 px, vocab 64010)\n")
    print("Made by `python scripts/param_counts.py` from models built on the meta device. *Added* is what the")
    print("method adds to the backbone; *trainable* includes `logit_scale` where the method trains it.\n")
    print("| backbone | method | options | backbone params | added | added % | trainable | trainable % of all |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for preset in ("beit3-base", "beit3-large"):
        for method, options in VARIANTS:
            model, _ = build_backbone(preset, device="meta")
            print(markdown_row(preset, parameter_row(model, method, options)))


if __name__ == "__main__":
    main()
