"""`mwa serve` under load on 127.0.0.1: beit3-mini (MWA adapter, weights moved off init) over sample_data's 440
photos, `--clients` threads sending `--queries` text queries in all to /api/search (top 10, exact search, no heat
maps), latency per request as the client sees it. Also one results page with heat maps (/?q=, 4 maps) timed alone.

    python bench/bench_serve.py --out bench_serve_cpu.json                     # 8 clients, 400 queries
    python bench/bench_serve.py --out x.json --onnx      # the same run exported with `mwa export` (onnxruntime)
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

from benchlib import cpu_name, publish, save_run

REPO = Path(__file__).resolve().parents[1]
WORDS = ["a scratch on the upper left", "右上に傷", "a large crack in the centre of a wooden board", "rust stain",
         "穴のある電子基板", "a small dent on the lower right", "部品の位置ずれ", "clean fabric sample, no defect"]


def _get(url: str) -> int:
    with urllib.request.urlopen(url, timeout=120) as r:
        r.read()
        return r.status


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="JSON file to write")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--queries", type=int, default=400)
    ap.add_argument("--onnx", action="store_true", help="serve the run's `mwa export` (onnxruntime)")
    args = ap.parse_args(argv)
    import torch

    sys.path.insert(0, str(REPO))
    from mwa_cli.search.build import build_index

    with tempfile.TemporaryDirectory() as tmp:
        run = save_run(Path(tmp) / "run", "beit3-mini", "mwa", perturb=0.02)
        source = run
        if args.onnx:
            from mwa_cli.export.onnx import export_onnx

            source = Path(export_onnx(run, Path(tmp) / "exp")["export"])
        build_index(REPO / "mwa_cli" / "sample_data" / "images", source, Path(tmp) / "idx", device="cpu")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        env = dict(os.environ, PYTHONPATH=str(REPO))
        proc = subprocess.Popen([sys.executable, "-m", "mwa_cli", "serve", "--index", str(Path(tmp) / "idx"),
                                 "--port", str(port), "--device", "cpu"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        base = f"http://127.0.0.1:{port}"
        try:
            for _ in range(600):
                try:
                    if _get(base + "/api/status") == 200:
                        break
                except OSError:
                    time.sleep(0.2)
            for w in WORDS:  # warm-up
                _get(f"{base}/api/search?q={urllib.parse.quote(w)}")
            latencies: list[float] = []
            failures: list[str] = []
            lock = threading.Lock()
            per_client = args.queries // args.clients

            def client(k: int) -> None:
                for j in range(per_client):
                    q = urllib.parse.quote(WORDS[(k + j) % len(WORDS)])
                    t0 = time.perf_counter()
                    try:
                        ok = _get(f"{base}/api/search?q={q}&top=10") == 200
                    except OSError as exc:
                        ok = False
                        with lock:
                            failures.append(str(exc))
                    with lock:
                        latencies.append((time.perf_counter() - t0) * 1000)
                        if not ok:
                            failures.append("status")

            t0 = time.perf_counter()
            threads = [threading.Thread(target=client, args=(k,)) for k in range(args.clients)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            wall = time.perf_counter() - t0
            page_ms = []
            for words in ("a scratch on the upper left", "右下に大きな穴"):  # the first also warms the image encoder
                t1 = time.perf_counter()
                _get(f"{base}/?q={urllib.parse.quote(words)}&top=20")
                page_ms.append(round((time.perf_counter() - t1) * 1000, 1))
        finally:
            proc.send_signal(2)
            proc.wait(timeout=30)
    latencies.sort()
    res = {"cpu": cpu_name(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
           "model": "beit3-mini + mwa, exported (onnxruntime)" if args.onnx else "beit3-mini + mwa (PyTorch)",
           "photos": 440, "clients": args.clients, "queries": len(latencies), "failures": len(failures),
           "p50_ms": round(statistics.median(latencies), 1),
           "p95_ms": round(latencies[int(0.95 * (len(latencies) - 1))], 1), "max_ms": round(latencies[-1], 1),
           "queries_per_s": round(len(latencies) / wall, 1), "page_with_4_heatmaps_ms": {"first": page_ms[0], "second": page_ms[1]}}
    publish(res, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
