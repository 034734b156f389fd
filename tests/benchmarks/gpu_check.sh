#!/usr/bin/env bash
# The GPU check: one script for a machine with one GPU, PyTorch, no internet and no Ray (the device tool's
# H100 / H200), in at most 8 minutes. It installs the project offline, checks that a pack of 3 on CUDA gives
# the first-step losses of the same pack on the CPU (CUDA drawing its noise on the host, as the CPU run does),
# prints bench_pack.py's table, trains the copula paper grid (each model x 5 betas x 3 seeds, 200 epochs, one
# pack per model, all models at once) for the rest of its time, and prints the leaderboard.
#
#   here, online, once:   bash tests/benchmarks/gpu_check.sh fetch   (the wheels it carries, into .whl/)
#   there:                bash tests/benchmarks/gpu_check.sh        (device tool: carry [".whl"], timeout_s 540)
#
# Settings (environment): GPU_CHECK_DEVICE (cuda), GPU_CHECK_BUDGET_S (450: seconds for the whole script),
# GPU_CHECK_INSTALL (1: install the project and the wheels), GPU_CHECK_TINY (1: tiny sizes; the CPU test's),
# GPU_CHECK_OUT (runs and logs; $OUT/.. where the device tool sets OUT, else a temporary folder).
set -euo pipefail
cd "$(dirname "$0")/../.."
WHEELS=(tensorboardX==2.6.5)  # what `mrfbench train` needs beyond the GPU image's packages (no Ray, no Optuna)

if [[ "${1:-}" == "fetch" ]]; then
  grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
  python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 -d .whl "${WHEELS[@]}"
  exit 0
fi

START=$(date +%s)
DEVICE=${GPU_CHECK_DEVICE:-cuda}
BUDGET=${GPU_CHECK_BUDGET_S:-450}
TINY=${GPU_CHECK_TINY:-0}
RUNS=${GPU_CHECK_OUT:-$(mktemp -d)}
mkdir -p "$RUNS"
left() { echo $((BUDGET - ($(date +%s) - START))); }
export PYTHONUNBUFFERED=1

if [[ "${GPU_CHECK_INSTALL:-1}" == "1" ]]; then
  echo "== install (offline)"
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
  python3 -m pip install -q --no-deps --no-build-isolation -e .
fi
python3 -c "import torch; print('torch', torch.__version__, '| device:', torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu')"

echo "== a pack of 3 on $DEVICE against the same pack on the CPU: first-step losses"
python3 - "$DEVICE" <<'PY'
import sys

import torch

from mrfbench.datasets import get_dataset
from mrfbench.models import build_model
from mrfbench.pack import Pack, member_generators
from mrfbench.training import TrainConfig

device = torch.device(sys.argv[1])
x = get_dataset("copula", n_train=256, n_val=16, n_test=16).splits()["train"][:64]


def first_losses(name: str, on: torch.device) -> list[float]:
    models, generators = [], []
    for seed in (0, 1, 2):
        torch.manual_seed(seed)
        models.append(build_model(name, beta=0.5 + seed).to(on))
        generators.append(member_generators(seed, torch.get_rng_state(), on, host_draws=True))
    pack = Pack(models, [TrainConfig(seed=s) for s in (0, 1, 2)], generators)
    loss, _ = pack.losses(x.to(on).expand(3, -1, -1, -1), pack.betas.float().to(on), "fp32")
    return loss.tolist()


worst = 0.0
for name in ("gmrf", "mopoe", "mmvaeplus"):
    cpu, other = first_losses(name, torch.device("cpu")), first_losses(name, device)
    gap = max(abs(a - b) / abs(a) for a, b in zip(cpu, other))
    worst = max(worst, gap)
    print(f"{name:<10} cpu {[round(v, 5) for v in cpu]}  {device.type} {[round(v, 5) for v in other]}  max rel {gap:.1e}")
print(f"first-step losses {'match' if worst < 1e-4 else 'DIFFER'} (max relative gap {worst:.1e}, bound 1e-4)")
PY

if [[ "$DEVICE" == cuda* ]]; then
  echo "== a pack's memory on $DEVICE: estimated against measured"
  python3 - "$DEVICE" <<'PY'
import sys

import torch

from mrfbench.models import build_model
from mrfbench.pack import Pack, PackAdam, member_generators, train_step
from mrfbench.pack_sizing import member_bytes
from mrfbench.training import TrainConfig

device = torch.device(sys.argv[1])
for name, k in (("gmrf", 64), ("mopoe", 64)):
    models, generators = [], []
    for seed in range(k):
        torch.manual_seed(seed)
        models.append(build_model(name).to(device))
        generators.append(member_generators(seed, torch.get_rng_state(), device))
    x = torch.rand(k, 256, 4, 2, device=device)
    estimate = k * member_bytes(models[0], x[0])
    torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats(); base = torch.cuda.memory_allocated()
    pack = Pack(models, [TrainConfig(seed=s) for s in range(k)], generators)
    train_step(pack, PackAdam(pack.params.stacked.values()), x, pack.betas.float().to(device), [1e-3] * k, [True] * k, "fp32")
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - base
    print(f"{name} x {k}, batch 256: estimated {estimate / 2**20:,.0f} MiB, measured peak {peak / 2**20:,.0f} MiB")
PY
fi

echo "== bench_pack.py on $DEVICE"
if [[ "$TINY" == "1" ]]; then
  python3 tests/benchmarks/bench_pack.py --device "$DEVICE" --models gmrf --ks 1,2 --batch-sizes 64 --steps 2 --repeats 1
else
  python3 tests/benchmarks/bench_pack.py --device "$DEVICE" --models gmrf,mopoe --ks 1,4,16,64,256 --batch-sizes 64,256 \
    --steps 10 --repeats 1 --max-seconds 20
  python3 tests/benchmarks/bench_pack.py --device "$DEVICE" --setting mnist3 --models gmrf --ks 1,4,16,64 \
    --batch-sizes 256 --steps 5 --repeats 1 --max-seconds 20
fi

echo "== the copula paper grid as packs, every model at once, as time allows"
if [[ "$TINY" == "1" ]]; then
  MODELS=(gmrf mopoe); BETAS=1,0.1; SEEDS=0,1; SIZE=(--epochs 1 --n-train 256 --n-val 64 --n-test 32
                                                        --n-unconditional 2000 --n-per-tuple 2); RESERVE=0
else
  MODELS=(gmrf mopoe mvae mmvae mmvaeplus almrf nnmrf); BETAS=1,0.1,2.5,0.05,0.001; SEEDS=0,1,2; SIZE=(--epochs 200)
  RESERVE=30  # seconds kept for a stopped model to end (15) and the leaderboard
fi
# One process per model, side by side: a copula pack's step is a few hundred small kernels, so one process
# leaves the GPU waiting on its launches; several processes fill it (each with its share of the CPU cores).
THREADS=$(( $(nproc) / ${#MODELS[@]} )); (( THREADS > 0 )) || THREADS=1
LIMIT=$(( $(left) - RESERVE )); t0=$(date +%s)
(( LIMIT > 0 )) || { echo "grid: skipped, $(left) s left of the budget"; MODELS=(); }
for model in "${MODELS[@]}"; do
  betas=$BETAS; [[ "$model" == almrf && "$TINY" != "1" ]] && betas=1000,100,10,1  # the ALMRF's own grid
  ( status=0; OMP_NUM_THREADS=$THREADS timeout --signal=INT --kill-after=15 "$LIMIT" mrfbench train --model "$model" --beta "$betas" \
      --seed "$SEEDS" "${SIZE[@]}" --device "$DEVICE" --out "$RUNS/grid/$model" > "$RUNS/$model.log" 2>&1 || status=$?
    echo "$status $(( $(date +%s) - t0 ))" > "$RUNS/$model.status" ) &
done
wait
shopt -s nullglob
for model in "${MODELS[@]}"; do
  read -r status seconds < "$RUNS/$model.status"
  finished=("$RUNS/grid/$model"/*/metrics.json); runs=${#finished[@]}
  case $status in
    0) echo "$model: $runs runs in $seconds s" ;;
    124|137) echo "$model: $runs runs finished when the budget stopped it after $seconds s" ;;
    *) echo "$model: failed with status $status after $seconds s, $runs runs (see $RUNS/$model.log)" ;;
  esac
done
(( ${#MODELS[@]} == 0 )) || echo "grid: ${#MODELS[@]} models side by side, $THREADS CPU threads each, $(( $(date +%s) - t0 )) s of wall time"
mrfbench leaderboard "$RUNS/grid" || true
echo "== done in $(( $(date +%s) - START )) s"
