#!/usr/bin/env bash
# The GPU checks, grouped so that each group fits one device call of at most 10 minutes.
#
#     OUT=/tmp/out bash bench/gpu_checks.sh after-change   # soak, step graph, budget end (~9 min)
#     OUT=/tmp/out bash bench/gpu_checks.sh tune           # mwa tune's goal on the GPU, then its Large step
#     OUT=/tmp/out bash bench/gpu_checks.sh memory         # 24 GiB batches, then the step's profile
#     OUT=/tmp/out bash bench/gpu_checks.sh quality        # time to quality, 3 seeds, 60-s runs
#     OUT=/tmp/out bash bench/gpu_checks.sh resume         # the soak's SIGTERM/SIGKILL + resume cycles alone
#
# Every result lands in $OUT (JSON with the GPU name, the log of each part, and the small files of the
# run folders as a tar, without weights). A part that runs past its limit is stopped and the group goes on.
# The tune group needs Optuna: put its wheels in .whl/ first (bench/tune_goal.py's docstring says how).
set -u
case "${1:-}" in
    after-change | tune | memory | quality | resume) ;;
    *) echo "usage: OUT=DIR bash bench/gpu_checks.sh after-change|tune|memory|quality|resume" >&2; exit 2 ;;
esac
: "${OUT:?set OUT to the folder that receives the results}"
mkdir -p "$OUT"
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD:$PWD/bench${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$OUT/gpu.txt" 2>&1

part() {  # part NAME LIMIT_S COMMAND...: one check under a limit, its output in $OUT/NAME.log
    local name=$1 limit=$2
    shift 2
    local t0=$SECONDS
    timeout --kill-after=10 "$limit" "$@" > "$OUT/$name.log" 2>&1
    echo "$name: exit $? after $((SECONDS - t0)) s" | tee -a "$OUT/parts.txt"
}

keep_runs() {  # keep_runs NAME FOLDER: the run folders' small files, for reading later
    [ -d "$2" ] && tar -czf "$OUT/$1.tar.gz" --exclude='*.safetensors' --exclude='*.pt' --exclude='*.npy' \
        --exclude='*.bin' -C "$(dirname "$2")" "$(basename "$2")"
}

after_change() {
    # The soak first: a call cut short by the device's time still brings it back.
    part soak 280 python3 bench/gpu_soak.py --parts single,cycles --runs 2 --cycles 1 --cycle-steps 150 \
        --limit 120 --out "$OUT/soak.json" &
    part step_graph_mini 280 python3 bench/check_step_graph.py --backbone beit3-mini \
        --out "$OUT/check_step_graph_mini.json" &
    wait
    # The budget's end alone on the GPU: another process would lengthen its checkpoints and evaluations.
    part budget_end 270 python3 bench/budget_end_check.py --cases full-ft,mwa-none \
        --out "$OUT/budget_end.json" --work /tmp/budget_end
    keep_runs budget_end_runs /tmp/budget_end/runs  # timing.json's "end": what the reserve held and what it took
}

tune() {
    if compgen -G ".whl/*.whl" > /dev/null; then
        python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
            .whl/*.whl
        export PYTHONPATH="$PYTHONPATH:/tmp/site"
    fi
    part tune_goal 400 python3 bench/tune_goal.py --device cuda --seeds 0 1 2 --jobs 3 --threads 3 \
        --budget 210s --out "$OUT/tune_goal_gpu.json"
    part tune_large 160 python3 bench/tune_goal.py --device cuda --large-only --large-choice top-12:cache \
        --large-modes graph --out "$OUT/tune_goal_large.json"
}

memory() {
    # Two processes side by side: each caps its own allocator at 24 GiB of the card.
    part max_batch_ft 300 python3 bench/max_batch_24g.py --compile --resolution 16 --variants 0 \
        --out "$OUT/max_batch_full_ft.json" &
    part max_batch_mwa 300 python3 bench/max_batch_24g.py --compile --resolution 16 --variants 1,4 \
        --out "$OUT/max_batch_mwa.json" &
    wait
    part profile 240 python3 bench/profile_train_step.py --out "$OUT/profile_train_step.json"
}

quality() {
    part ttq 560 python3 bench/time_to_quality.py --device cuda --jobs 3 --threads 4 --budget 60s \
        --seeds 0,1,2 --work /tmp/ttq --out "$OUT/time_to_quality_mini_gpu.json"
    keep_runs ttq_runs /tmp/ttq/runs
}

resume() {
    # after-change's soak part ran out of time before these twice: here they have the call to themselves
    part soak_cycles 540 python3 bench/gpu_soak.py --parts cycles --cycles 2 --cycle-steps 150 --limit 150 \
        --out "$OUT/soak_cycles.json"
}

case "$1" in
    after-change) after_change ;;
    resume) resume ;;
    tune) tune ;;
    memory) memory ;;
    quality) quality ;;
esac
