"""What a run folder offers a line: its adapter (only adapter methods qualify), the backbone it was made for, and
the backbone weights and tokenizer that rebuild it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mwa_cli.errors import CheckpointError, ConfigError

# Files of a run copied into a version besides the adapter's two (those that exist)
RUN_FILES = ("config.json", "eval.json", "eval_ranks.json", "timing.json")


@dataclass
class RunForLine:
    """A finished adapter run, checked: its adapter weights match the sha256 adapter_config.json records."""

    folder: Path
    adapter_config: dict[str, Any]
    config: dict[str, Any]      # the run's config.json ({} for a bare adapter folder)
    method: str
    backbone: dict[str, Any]    # `backbone_key`
    weights: str | None         # backbone weights, resolved (None: built in, or random by design)
    tokenizer: str | None
    identity: dict[str, Any]    # mwa_cli.search.model.adapter_identity


def check_is_adapter(method: str, run: Path) -> None:
    """Refuse full fine-tuning (it replaces the backbone) and frozen (it trained nothing): neither is an adapter."""
    from mwa_cli.adapters.methods.base import AdapterMethod
    from mwa_cli.adapters.registry import get

    if method == "full-ft":
        raise ConfigError(f"{run} is a full fine-tuning run: it changed every weight of the backbone, so it cannot "
                          "be attached to the line's shared frozen backbone as an adapter",
                          hint="publish an adapter run (mwa train DATA --method mwa, nke or lora); a full "
                               "fine-tuning run is served on its own with `mwa index` + `mwa serve --index`")
    if not isinstance(get(method), AdapterMethod):
        raise ConfigError(f"{run} is a {method} run: it trained nothing, so there is no adapter to publish",
                          hint="train an adapter first: mwa train DATA --method mwa")


def backbone_key(adapter_config: dict[str, Any], run_config: dict[str, Any]) -> dict[str, Any]:
    """What must be equal for two adapters to share one backbone: its name, its weights' sha256 and its shape; for
    a backbone without weights (random by design, tests) the seed that drew it too."""
    bb = adapter_config.get("backbone") or {}
    config = {k: v for k, v in (bb.get("config") or {}).items() if k != "drop_path"}  # a training setting
    sha = bb.get("weights_sha256")
    return {"name": bb.get("name"), "weights_sha256": sha, "config": config,
            "seed": None if sha else int(run_config.get("seed", 0) or 0)}


def backbone_mismatch(line_backbone: dict[str, Any] | None, run_backbone: dict[str, Any]) -> str | None:
    """Why `run_backbone` cannot join a line made on `line_backbone` (None: it can)."""
    if line_backbone is None:
        return None

    def short(v: Any) -> str:
        return "none" if v is None else str(v)[:12] + "…"

    if line_backbone.get("name") != run_backbone.get("name"):
        return (f"the line's backbone is {line_backbone.get('name')}, this adapter was made for "
                f"{run_backbone.get('name')}")
    if line_backbone.get("weights_sha256") != run_backbone.get("weights_sha256"):
        return (f"the line's backbone weights are {short(line_backbone.get('weights_sha256'))}, this adapter was "
                f"trained on {short(run_backbone.get('weights_sha256'))}")
    if any(line_backbone.get(k) != run_backbone.get(k) for k in ("config", "seed")):
        return f"the line's {line_backbone.get('name')} and this adapter's differ in shape or random seed"
    return None


def _resolved(path: str | None) -> str | None:
    """A local file given relative to where training ran is kept as an absolute path (addresses and `none` kept)."""
    if not path or "://" in str(path) or not Path(path).exists():
        return path
    return str(Path(path).resolve())


def inspect_run(run_dir: str | Path) -> RunForLine:
    """The run at `run_dir`, refused with what to do when it cannot be published to a line."""
    from mwa_cli.adapters.io import read_adapter_config, verify_adapter_weights
    from mwa_cli.runs import read_run_config
    from mwa_cli.search.model import adapter_identity

    path = Path(run_dir).expanduser()
    if not path.is_dir():
        raise ConfigError(f"{path} is not a run folder", hint="give the folder `mwa train` wrote, e.g. runs/<name>")
    folder, cfg = read_adapter_config(path)
    method = str(cfg.get("method"))
    check_is_adapter(method, folder)
    verify_adapter_weights(folder, cfg)
    if not (folder / "eval.json").is_file():
        raise CheckpointError(f"{folder} has no eval.json: the run has not finished",
                              hint=f"wait for training to end (or run `mwa eval {folder}`), then publish")
    run_cfg = read_run_config(folder)
    return RunForLine(folder=folder.resolve(), adapter_config=cfg, config=run_cfg, method=method,
                      backbone=backbone_key(cfg, run_cfg), weights=_resolved(run_cfg.get("weights")),
                      tokenizer=_resolved(run_cfg.get("tokenizer")), identity=adapter_identity(folder))
