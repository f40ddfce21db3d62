"""Regenerate the built-in backbone ``beit3-mini``: synthetic generic corpus -> contrastive pretraining -> weights.

    python scripts/pretrain_mini.py --work /tmp/mini --images 200000 --epochs 30 --batch-size 512

1. Generates the generic shapes/colours/positions corpus (scripts/mini_corpus.py), in parallel.
2. Writes it as an ordinary mwa data directory (manifest.csv, dataset.json, cache/images_64.u8).
3. Trains a randomly initialised BEiT-3 of the mini size with the project's own trainer (method full-ft,
   symmetric contrastive loss), exactly the code path of ``mwa train``.
4. Exports the weights to mwa_cli/models/mini/{weights.safetensors, config.json, weights.sha256}.
The tokenizer (mwa_cli/models/mini/tokenizer.spm) is made by scripts/make_mini_corpus.py.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from safetensors.torch import load_file, save_file

from mwa_cli.data.cache import write_cache
from mwa_cli.data.manifest import dataset_hash, write_csv
from mwa_cli.fileio import atomic_write_json
from mwa_cli.fileio import sha256_file
from mwa_cli.models.presets import MINI_DIR
from mwa_cli.models.tokenizer import Beit3Tokenizer
from mwa_cli.train.config import TrainConfig
from mwa_cli.train.loop import train

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, for scripts.mini_corpus
from scripts.mini_corpus import generate_corpus  # noqa: E402

SIZE = 64
SEED = 20261128
CHUNK = 2000


def mini_config(vocab_size: int) -> dict:
    """beit3-mini: 4 layers, width 192, 64 px images in 8 px patches, 32 text tokens."""
    return {"img_size": SIZE, "patch_size": 8, "vocab_size": vocab_size, "embed_dim": 192, "depth": 4,
            "num_heads": 3, "ffn_dim": 768, "max_text_positions": 64, "layernorm_eps": 1e-5, "text_len": 32}


def _chunk(start: int) -> tuple[int, np.ndarray, list[str]]:
    images, captions = generate_corpus(CHUNK, SEED, SIZE, start=start)
    return start, images, captions


def write_corpus(data_dir: Path, n_images: int, n_eval: int, workers: int) -> None:
    """The corpus as an mwa data directory: the last ``2 * n_eval`` images are val and test."""
    data_dir.mkdir(parents=True, exist_ok=True)
    images = np.empty((n_images, SIZE, SIZE, 3), np.uint8)
    captions: list[str] = [""] * n_images
    t0 = time.time()
    with ProcessPoolExecutor(workers) as pool:
        for start, imgs, caps in pool.map(_chunk, range(0, n_images, CHUNK)):
            count = min(CHUNK, n_images - start)
            images[start:start + count] = imgs[:count]
            captions[start:start + count] = caps[:count]
    print(f"corpus: {n_images} images in {time.time() - t0:.1f}s with {workers} workers", flush=True)
    ids = [hashlib.sha256(f"{SEED}:{i}".encode()).hexdigest()[:16] for i in range(n_images)]
    split = ["train"] * (n_images - 2 * n_eval) + ["val"] * n_eval + ["test"] * n_eval
    df = pd.DataFrame({"image_id": ids, "path": [f"generated/{i:07d}.png" for i in range(n_images)],
                       "caption": captions, "label": "", "split": split, "width": SIZE, "height": SIZE})
    write_csv(data_dir / "manifest.csv", df)
    write_cache(data_dir, SIZE, ids, lambda image_id, index={k: i for i, k in enumerate(ids)}: images[index[image_id]])
    atomic_write_json(data_dir / "dataset.json", {
        "schema_version": 1, "source": str(data_dir), "format": "generated", "dataset_hash": dataset_hash(df),
        "counts": {"images": n_images, "captions": n_images, "rejected": 0, "found": n_images},
        "image_size": SIZE, "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "generator": f"mini_corpus seed {SEED}"})


def export(run_dir: Path, config: dict) -> None:
    """Copy the full-ft run's weights into the package as the built-in beit3-mini."""
    state = load_file(str(run_dir / "adapter_model.safetensors"))
    MINI_DIR.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(MINI_DIR / "weights.safetensors"),
              metadata={"recipe": "scripts/pretrain_mini.py"})
    (MINI_DIR / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    digest = sha256_file(MINI_DIR / "weights.safetensors")
    (MINI_DIR / "weights.sha256").write_text(f"{digest}  weights.safetensors\n")
    print(f"exported {MINI_DIR / 'weights.safetensors'} ({(MINI_DIR / 'weights.safetensors').stat().st_size / 2**20:.1f}"
          f" MiB, sha256 {digest})")


def _log(event: str, data: dict) -> None:
    """Plain-text progress for logs: every logged step, evals, plan and the end."""
    if event in ("plan", "eval", "done", "message", "setup"):
        print(event, json.dumps(data, default=str)[:400], flush=True)
    elif event == "step" and data.get("step", 0) % 200 == 0:
        print(f"step {data.get('step')}/{data.get('total_steps')} loss {data.get('loss', 0):.4f} "
              f"lr {data.get('lr', 0):.2e} {data.get('samples_per_s', 0):.0f} samples/s", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/mwa-mini"), help="Folder for corpus and run.")
    parser.add_argument("--images", type=int, default=200_000)
    parser.add_argument("--eval-images", type=int, default=1000, help="Images each for val and test.")
    parser.add_argument("--epochs", type=float, default=30)
    parser.add_argument("--budget", default=None, help="Wall-clock budget for the training run, e.g. 6m.")
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 1))
    parser.add_argument("--no-export", action="store_true", help="Train only; keep the built-in weights.")
    args = parser.parse_args(argv)

    tok = Beit3Tokenizer.from_file(MINI_DIR / "tokenizer.spm")
    vocab = (tok.base_vocab_size + 63) // 64 * 64
    config = mini_config(vocab)
    data_dir = args.work / "corpus"
    if not (data_dir / "dataset.json").is_file():
        write_corpus(data_dir, args.images, args.eval_images, args.workers)
    cfg_path = args.work / "beit3-mini.json"
    cfg_path.write_text(json.dumps(config))
    run = train(TrainConfig(
        data_dir=str(data_dir), method="full-ft", backbone=str(cfg_path), weights=None,
        tokenizer=str(MINI_DIR / "tokenizer.spm"), epochs=args.epochs, budget=args.budget,
        batch_size=args.batch_size, lr=args.lr, min_lr=1e-5, warmup_frac=0.05, layer_decay=1.0,
        weight_decay=0.05, drop_path=0.0, device=args.device, out=str(args.work / "runs"), name="pretrain",
        seed=0, val_evals=1, final_split="test", checkpoint_minutes=1e9,
        command=" ".join([sys.executable, *sys.argv])),
        progress=_log)
    print(json.dumps(run.to_dict(), indent=2, default=str))
    if not args.no_export:
        export(Path(run.run_dir), config)


if __name__ == "__main__":
    main()
