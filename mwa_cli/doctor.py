"""Environment checks for a newcomer: each check says what it found and what to do when something is missing."""

from __future__ import annotations

import platform
import shutil
import socket
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from mwa_cli import __version__
from mwa_cli.models.checkpoint import DEFAULT_CACHE
from mwa_cli.models.presets import MINI_DIR
from mwa_cli.models.sources import TOKENIZER_URL, WEIGHTS_URLS


@dataclass
class Check:
    name: str
    status: str  # "ok", "warn" or "fail"
    found: str
    advice: str = ""


def _python() -> Check:
    ok = sys.version_info >= (3, 10)
    return Check("python", "ok" if ok else "fail", platform.python_version(),
                 "" if ok else "install Python 3.10 or newer")


def _torch() -> Check:
    cuda = torch.version.cuda or "CPU build"
    return Check("torch", "ok", f"{torch.__version__} ({cuda})")


def _gpu() -> list[Check]:
    if not torch.cuda.is_available():
        return [Check("gpu", "warn", "no CUDA GPU visible",
                      "training runs on the CPU (fine for the demo); for real photos install a CUDA build of "
                      "torch on a machine with an NVIDIA GPU")]
    out = []
    for i in range(torch.cuda.device_count()):
        free, total = torch.cuda.mem_get_info(i)
        out.append(Check(f"gpu {i}", "ok", f"{torch.cuda.get_device_name(i)}, {free / 2**30:.1f} of "
                                             f"{total / 2**30:.1f} GiB free"))
    bf16 = torch.cuda.is_bf16_supported()
    out.append(Check("bf16", "ok" if bf16 else "warn", "supported" if bf16 else "not supported",
                     "" if bf16 else "mwa will train in fp16 with loss scaling"))
    return out


def _disk(runs_dir: Path) -> Check:
    target = runs_dir if runs_dir.exists() else Path.cwd()
    free = shutil.disk_usage(target).free / 2**30
    status = "ok" if free >= 5 else ("warn" if free >= 1 else "fail")
    return Check("disk", status, f"{free:.1f} GiB free at {target}",
                 "" if status == "ok" else "free space: a BEiT-3 Base full fine-tuning run writes about 2.7 GB")


def _weights() -> list[Check]:
    mini = (MINI_DIR / "weights.safetensors").is_file()
    checks = [Check("beit3-mini", "ok" if mini else "fail", "built in" if mini else "missing",
                    "" if mini else "reinstall mwa (pip install -e .) or run scripts/pretrain_mini.py")]
    found = sorted(p.name for p in DEFAULT_CACHE.glob("*.pth")) if DEFAULT_CACHE.is_dir() else []
    spm = (DEFAULT_CACHE / "beit3.spm").is_file()
    checks.append(Check("BEiT-3 weights", "ok" if found else "warn", ", ".join(found) or f"none in {DEFAULT_CACHE}",
                        "" if found else f"for real photos download {WEIGHTS_URLS['beit3-base']} (or the large one, "
                                         f"{WEIGHTS_URLS['beit3-large']}) and pass it with --weights"))
    checks.append(Check("beit3.spm", "ok" if spm else "warn", "found" if spm else f"not in {DEFAULT_CACHE}",
                        "" if spm else f"download {TOKENIZER_URL} and put it beside the weights or pass --tokenizer"))
    return checks


def _network(host: str = WEIGHTS_URLS["beit3-base"].split("/")[2], timeout: float = 2.0) -> Check:
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return Check("network", "ok", f"{host} reachable")
    except OSError:
        return Check("network", "warn", "the checkpoint host is not reachable",
                     "only needed to download BEiT-3 weights; copy them onto this machine instead")


def run_checks(runs_dir: Path = Path("runs"), network: bool = True) -> list[Check]:
    """All checks, in the order they are shown."""
    checks = [Check("mwa", "ok", __version__), _python(), _torch(), *_gpu(), _disk(runs_dir), *_weights()]
    if network:
        checks.append(_network())
    return checks


def as_dicts(checks: list[Check]) -> list[dict]:
    return [asdict(c) for c in checks]
