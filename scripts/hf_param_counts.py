"""Parameter accounting of every method on the Hugging Face backbones (meta device, no download).

    python scripts/hf_param_counts.py >> docs/parameters.md

The configs' key sizes are written here from the hub's config.json of openai/clip-vit-base-patch16 and
google/siglip-base-patch16-224 (nothing can be downloaded where this runs); the models are built with
``CLIPModel(CLIPConfig(...))`` / ``SiglipModel(SiglipConfig(...))`` under ``torch.device("meta")``. BLIP-2
(Salesforce/blip2-itm-vit-g) is the ``blip2-itm-vit-g`` preset, whose sizes live in ``mwa_cli.models.blip2``.
"""

from __future__ import annotations

import torch

from mwa_cli.adapters.parameters_doc import markdown_row, parameter_row
from mwa_cli.adapters.registry import names
from mwa_cli.models.hf import HFDualEncoder
from mwa_cli.models.presets import build_backbone

CLIP_B16 = {  # openai/clip-vit-base-patch16
    "vision_config": dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                          image_size=224, patch_size=16),
    "text_config": dict(vocab_size=49408, hidden_size=512, intermediate_size=2048, num_hidden_layers=12,
                        num_attention_heads=8, max_position_embeddings=77),
    "projection_dim": 512,
}
SIGLIP_B16_224 = {  # google/siglip-base-patch16-224
    "vision_config": dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                          image_size=224, patch_size=16),
    "text_config": dict(vocab_size=32000, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                        num_attention_heads=12, max_position_embeddings=64),
}
VARIANTS = [(m, None) for m in names()] + [("mwa", {"preset": "paper-code"}), ("mwa", {"layers": "top-8"})]
BLIP2_VARIANTS = [(m, None) for m in names()] + [("mwa", {"preset": "paper-code"}),
                                                 ("mwa", {"layers": {"vision": "top-8", "qformer": "all"}})]


def build(name: str) -> HFDualEncoder:
    from transformers import CLIPConfig, CLIPModel, SiglipConfig, SiglipModel

    with torch.device("meta"):
        if name == "clip-vit-base-patch16":
            return HFDualEncoder(CLIPModel(CLIPConfig(**CLIP_B16)))
        return HFDualEncoder(SiglipModel(SiglipConfig(**SIGLIP_B16_224)))


def main() -> None:
    print("\n## Hugging Face two-tower backbones\n")
    print("Made by `python scripts/hf_param_counts.py` from `CLIPModel` / `SiglipModel` built on the meta device from")
    print("the configs' key sizes (written in the script). CLIP's towers differ in width (768 / 512): its AE is the")
    print("shared core with per-tower projections; SigLIP's are both 768: one plain AE per layer pair. NKE rank")
    print("`auto` = 64 (from the wider tower). *Trainable* includes `logit_scale` (and SigLIP's `logit_bias`).\n")
    print("| backbone | method | options | backbone params | added | added % | trainable | trainable % of all |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for name in ("clip-vit-base-patch16", "siglip-base-patch16-224"):
        for method, options in VARIANTS:
            model = build(name)
            print(markdown_row(name, parameter_row(model, method, options)))
    print("\n## BLIP-2 retrieval: ViT-g + Q-Former (`blip2-itm-vit-g`)\n")
    print("Same script, `Blip2ForImageTextRetrieval` of the `blip2-itm-vit-g` preset on the meta device (ViT-g/14: 39")
    print("blocks of width 1408; Q-Former: 12 layers of width 768, 32 query tokens; projections to 256). NKE: one")
    print("bottleneck per ViT block and two per Q-Former layer (query and text stream); the AE sits in the Q-Former")
    print("only, one per layer, shared by both streams. *Trainable* includes the wrapper's `logit_scale`.\n")
    print("| backbone | method | options | backbone params | added | added % | trainable | trainable % of all |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for method, options in BLIP2_VARIANTS:
        model, _ = build_backbone("blip2-itm-vit-g", device="meta")
        print(markdown_row("blip2-itm-vit-g", parameter_row(model, method, options)))


if __name__ == "__main__":
    main()
