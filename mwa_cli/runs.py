"""A trained run folder, opened the same way by every command that uses its model.

`load_run(folder)` rebuilds what training published: the backbone (the run's weights, same seed as training, so
a randomly initialised backbone, a test preset's or `--weights none`'s, comes out identical; the command then warns
that its weights are random), the method re-applied, the adapter weights loaded after their sha256 is checked
(`mwa_cli.adapters.io.load_adapter`), the tokenizer with the adapter's vocabulary extension
(`mwa_cli.models.run_tokenizer.load_tokenizer`), on the requested device, with the precision the run evaluated with.
`read_run_config` is the tolerant reader of a run's config.json for code that only needs its settings.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mwa_cli.errors import ConfigError
from mwa_cli.models.run_tokenizer import load_tokenizer
from mwa_cli.ranges import SEED, Range
from mwa_cli.safe_open import InputFileError, load_json

if TYPE_CHECKING:
    import torch

    from mwa_cli.models.base import BackboneInfo

RUN_CONFIG = "config.json"
TEXT_LEN = Range(1, 8192, whole=True)


def is_run_dir(path: Path) -> bool:
    """A run folder is one holding config.json (written first by `mwa train`)."""
    return (Path(path) / RUN_CONFIG).is_file()


def read_run_config(folder: str | Path) -> dict[str, Any]:
    """A run's config.json, or {} when the folder has none or it is not a JSON object (a bare adapter folder:
    its settings then come from the options given)."""
    path = Path(folder) / RUN_CONFIG
    if not path.is_file():
        return {}
    try:
        cfg = load_json(path)
    except InputFileError:
        return {}
    return cfg if isinstance(cfg, dict) else {}


@dataclass
class LoadedRun:
    """A run's adapted model, ready to embed, with what built it."""

    folder: Path
    model: Any  # in eval mode, on `device`
    tokenizer: Any | None  # None when not asked for
    config: dict[str, Any]  # the run's config.json ({} for an adapter folder without one)
    method: str
    info: BackboneInfo
    device: torch.device
    precision: str  # resolved: the run's own on the same kind of device, unless one was asked for
    weights: str | None  # the backbone weights used
    tokenizer_path: str | None


def load_run(target: str | Path, *, weights: str | None = None, tokenizer: str | None = None, device: str = "auto",
             precision: str | None = None, need_tokenizer: bool = True) -> LoadedRun:
    """Open a run folder (or an adapter folder, or its adapter_config.json). `weights` / `tokenizer` override
    the run's own (config.json); `precision` None repeats the run's when it ran on this kind of device."""
    import torch

    from mwa_cli.adapters.io import CONFIG_FILE, load_adapter
    from mwa_cli.runtime import resolve_device, resolve_precision

    dev = resolve_device(device)
    path = Path(target)
    if not path.exists():
        raise ConfigError(f"{path} does not exist", hint="give a run folder such as runs/<name> (`mwa train` "
                          "prints it), or an adapter folder")
    folder = path if path.is_dir() else path.parent
    run_cfg = read_run_config(folder)
    if not (folder / CONFIG_FILE).is_file():
        raise ConfigError(f"{folder} holds no {CONFIG_FILE}",
                          hint="give a finished run folder (runs/<name>) or an adapter folder")
    weights = weights or run_cfg.get("weights")
    tokenizer = tokenizer or run_cfg.get("tokenizer")
    seed = run_cfg.get("seed", 0) or 0
    if not SEED.contains(seed):
        raise ConfigError(f"{folder / RUN_CONFIG}: seed {seed!r} is not {SEED.describe()}",
                          hint="the file was changed by hand or by another program: restore it")
    torch.manual_seed(int(seed))  # as training did before building the backbone
    model, applied, info = load_adapter(path, weights=weights, tokenizer=tokenizer, device=dev)
    if info.random_weights:
        from mwa_cli.models.sources import note_random_weights

        note_random_weights(folder)
    if precision is None and run_cfg.get("device") == dev.type:
        precision = run_cfg.get("precision")
    prec = resolve_precision(precision or "auto", dev)
    model.to(dev)
    model.eval()
    tok_path = tokenizer or getattr(info, "tokenizer_path", None)
    tok = None
    if need_tokenizer:
        text_len = run_cfg.get("text_len") or model.config.text_len
        if not TEXT_LEN.contains(text_len):
            raise ConfigError(f"{folder / RUN_CONFIG}: text_len {text_len!r} is not {TEXT_LEN.describe()}",
                              hint="the file was changed by hand or by another program: restore it")
        text_len = int(text_len)
        tok = load_tokenizer(tok_path, text_len, model=model)  # applies the adapter's vocabulary extension
    return LoadedRun(folder=folder, model=model, tokenizer=tok, config=run_cfg, method=applied.name, info=info,
                     device=dev, precision=prec, weights=getattr(info, "weights", None) or weights,
                     tokenizer_path=tok_path)
