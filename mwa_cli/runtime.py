"""Where and in what precision a model runs: the device and autocast choices of train, eval, index and search."""

from __future__ import annotations

from mwa_cli.errors import ConfigError


def resolve_device(name: str = "auto"):
    """'auto' → cuda when available, else cpu. 'cuda' without a GPU is an error the user can act on."""
    import torch

    name = (name or "auto").lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for, but no CUDA GPU is visible",
                          hint="use --device cpu (slow) or check the driver / CUDA_VISIBLE_DEVICES")
    return torch.device(name)


def resolve_precision(precision: str, device) -> str:
    """'auto' → bf16 on a GPU that supports it (else fp16), fp32 on CPU."""
    import torch

    precision = (precision or "auto").lower()
    if precision == "auto":
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "fp32"
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError("fp16 needs a CUDA GPU", hint="use --precision fp32 (or bf16) on the CPU")
    return precision


def amp_dtype(precision: str):
    """The autocast dtype of a resolved precision (None for fp32: no autocast)."""
    import torch

    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
