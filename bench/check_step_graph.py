"""On a GPU: training with the step captured as a CUDA graph gives the weights eager steps give.

    PYTHONPATH=$PWD python bench/check_step_graph.py --out check_step_graph.json

For each method, two trainers from the same seed (regional compilation in both, bf16, dropout and drop path on)
train the same batches, one with `cuda_graph=True`; after each step the trainable weights and losses are
compared. The graph trainer's first steps run eagerly and then replay its graph, so equality here means a
replayed step equals an eager one, random draws included. Also: a second batch shape (another text length) in
the middle, as bucketed captions give, and a resumed trainer (state loaded into a fresh graph trainer) that
must continue exactly as the uninterrupted one. A third trainer, eager again, measures how much two eager runs
differ (atomics in some backward kernels are not deterministic): a graph step must not differ from an eager one
by more. Writes JSON with the GPU name; exits 1 on a mismatch.
"""

from __future__ import annotations

import argparse
import io
import json
import sys

import torch

from mwa_cli.train.trainer import build_trainer, seed_everything


def trainables(trainer) -> dict[str, torch.Tensor]:
    return {n: p.detach().float().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}


def max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def saved_and_loaded(state: dict) -> dict:
    """`state` written and read back as `mwa train`'s checkpoint does (torch.save / torch.load)."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def batches(trainer, n: int, batch: int) -> list[dict]:
    """`n` batches at the model's text length; the middle third at half of it (a second graph)."""
    out = []
    longest = int(trainer.model.config.text_len)  # beit3-mini holds 32 positions, Base and Large 64
    for i in range(n):
        text_len = longest // 2 if n // 3 <= i < 2 * n // 3 else longest
        out.append(trainer.random_batch(batch, text_len=text_len, seed=100 + i))
    return out


def make(backbone: str, method: str, graph: bool, seed: int):
    trainer = build_trainer(backbone, method, device="cuda", precision="bf16", compile=True, drop_path=0.1,
                            seed=seed, cuda_graph=graph, total_steps=50)
    return trainer


def check_method(backbone: str, method: str, steps: int, batch: int) -> dict:
    eager = make(backbone, method, False, 0)
    again = make(backbone, method, False, 0)  # two eager runs: the GPU's own run-to-run spread
    graph = make(backbone, method, True, 0)
    data = batches(eager, steps, batch)
    rows = []
    for i, b in enumerate(data):
        losses = []
        for trainer in (eager, again, graph):
            seed_everything(1000 + i)
            losses.append(float(trainer.step(b)))
        rows.append({"step": i + 1, "loss_eager": losses[0], "loss_graph": losses[2],
                     "max_abs_weight_diff": max_diff(trainables(eager), trainables(graph)),
                     "eager_spread": max_diff(trainables(eager), trainables(again))})
    # resume: a fresh graph trainer loads the graph trainer's state as a checkpoint holds it (its own copy:
    # loaded directly, both optimizers would share the moment tensors) and both run the same further steps
    resumed = make(backbone, method, True, 0)
    resumed.load_state_dict(saved_and_loaded(graph.state_dict()))
    extra = batches(eager, 4, batch)
    for i, b in enumerate(extra):
        seed_everything(5000 + i)
        graph.step(b)
        seed_everything(5000 + i)
        resumed.step(b)
    resume_diff = max_diff(trainables(graph), trainables(resumed))
    out = {"backbone": backbone, "method": method, "steps": rows, "graphs": len(graph._graphs.graphs),
           "replays": graph._graphs.replays, "disabled": graph._graphs.disabled_reason,
           "resume_max_abs_weight_diff": resume_diff}
    del eager, again, graph, resumed
    torch._dynamo.reset()
    torch.cuda.empty_cache()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbone", default="beit3-base")
    ap.add_argument("--methods", default="mwa,full-ft,nke")
    ap.add_argument("--steps", type=int, default=9)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--out", default="check_step_graph.json")
    args = ap.parse_args()
    result = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "methods": []}
    ok = True
    for method in args.methods.split(","):
        try:
            row = check_method(args.backbone, method, args.steps, args.batch)
        except Exception as exc:  # report and go on
            row = {"method": method, "error": f"{type(exc).__name__}: {exc}"[:500]}
        result["methods"].append(row)
        steps = row.get("steps", [])
        worst = max((s["max_abs_weight_diff"] for s in steps), default=float("nan"))
        spread = max((s["eager_spread"] for s in steps), default=float("nan"))
        # a graph step may differ from an eager one only as much as two eager runs differ from each other
        within = all(s["max_abs_weight_diff"] <= s["eager_spread"] for s in steps)
        good = "error" not in row and within and row["resume_max_abs_weight_diff"] == 0.0 and row["replays"] > 0
        ok = ok and good
        print(f"{method}: max |dw| graph vs eager {worst:.3g} (eager vs eager {spread:.3g}), "
              f"resume {row.get('resume_max_abs_weight_diff')}, "
              f"graphs {row.get('graphs')}, replays {row.get('replays')}, disabled {row.get('disabled')} "
              f"{'OK' if good else 'MISMATCH'} {row.get('error', '')}", flush=True)
        with open(args.out, "w") as fh:
            json.dump(result, fh, indent=2)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
