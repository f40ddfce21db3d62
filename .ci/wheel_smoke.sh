#!/usr/bin/env bash
# The wheel as a user gets it: build it, install it (no -e) in a fresh virtual environment, and from a folder
# outside the checkout run prepare -> train --steps 2 -> report -> index -> search --html and the first stages of
# `mwa demo`. Everything a command reads at run time must come from the installed package, never the checkout.
# The venv reuses the system's packages (torch and the other dependencies already installed) but not mwa: the
# check below refuses a run whose mwa_cli is imported from anywhere but the venv.
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/mwa-wheel-smoke.XXXXXX")"
DEMO_PID=""
cleanup() {
  if [[ -n "$DEMO_PID" ]] && kill -0 "$DEMO_PID" 2>/dev/null; then kill -KILL -- "-$DEMO_PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT
say() { echo "wheel-smoke [${SECONDS}s]: $*"; }

say "building the wheel"
python -m pip wheel --quiet --no-deps --no-build-isolation --wheel-dir "$WORK/dist" "$REPO"
python -m venv --system-site-packages --without-pip "$WORK/venv"  # this pip installs into it (--python)
python -m pip --python "$WORK/venv/bin/python" install --quiet --disable-pip-version-check "$WORK"/dist/mwa_cli-*.whl
MWA="$WORK/venv/bin/mwa"
PY="$WORK/venv/bin/python"

mkdir "$WORK/use" && cd "$WORK/use"  # outside the checkout: nothing beside the package to fall back on
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}" PYTHONPATH="" PYTHONNOUSERSITE=1
PKG="$("$PY" -c 'import mwa_cli, os; print(os.path.dirname(mwa_cli.__file__))')"
case "$PKG" in
  "$WORK/venv/"*) say "mwa_cli imported from the wheel: $PKG" ;;
  *) say "FAIL: mwa_cli imported from $PKG, not from the wheel's venv"; exit 1 ;;
esac
SAMPLE="$("$PY" -c 'from mwa_cli.data.ingest import SAMPLE_DATA; print(SAMPLE_DATA)')"
[[ "$SAMPLE" == "$PKG/"* ]] || { say "FAIL: the sample photos are not in the package ($SAMPLE)"; exit 1; }

say "mwa prepare / train / report / index / search --html (on 60 of the sample photos)"
mkdir photos
"$PY" - "$SAMPLE" photos <<'PY'
import shutil, sys
from pathlib import Path
import pandas as pd
src, dst = Path(sys.argv[1]), Path(sys.argv[2])
table = pd.read_csv(src / "captions.csv")
keep = table[table["image"].isin(table["image"].drop_duplicates()[:60])]
(dst / "images").mkdir()
for name in keep["image"].unique():
    shutil.copy(src / name, dst / name)
keep.to_csv(dst / "captions.csv", index=False)
PY
"$MWA" prepare photos --out data --lang en --image-size 64
"$MWA" train data --method mwa --backbone beit3-mini --steps 2 --device cpu --out runs --name smoke
"$MWA" report --runs runs --out report.html
grep -q "<html" report.html
"$MWA" index photos/images --adapter runs/smoke --out idx --device cpu
"$MWA" search "a scratch on the surface" --index idx --top 3 --html search.html
grep -q "<html" search.html

say "mwa demo, its first stages (stopped with SIGTERM once it starts training)"
setsid "$MWA" demo --out demo --device cpu >demo.log 2>&1 &
DEMO_PID=$!
for _ in $(seq 1 240); do  # at most 2 minutes
  grep -q "training mwa" demo.log && break
  kill -0 "$DEMO_PID" 2>/dev/null || break
  sleep 0.5
done
if ! grep -q "training mwa" demo.log; then
  say "FAIL: mwa demo did not reach its training stage"; cat demo.log; exit 1
fi
# SIGTERM, not SIGINT: a background job of a script starts with SIGINT ignored
kill -TERM -- "-$DEMO_PID"
for _ in $(seq 1 60); do kill -0 "$DEMO_PID" 2>/dev/null || break; sleep 0.5; done
if kill -0 "$DEMO_PID" 2>/dev/null; then say "FAIL: mwa demo did not stop within 30 s of SIGTERM"; exit 1; fi
wait "$DEMO_PID" || true
DEMO_PID=""
grep -q "1/3 preparing" demo.log && grep -q "zero-shot evaluation" demo.log
say "ok"
