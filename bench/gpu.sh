#!/usr/bin/env bash
# The GPU runs, each prepared to run on a lent GPU machine in one short command.
#
#   bash bench/gpu.sh bundle        # here: copy E2E and the GPT-2 BPE files into .gpu/data (ignored, ~14 MB)
#   bash bench/gpu.sh speed         # there (<= 9 min): bench.gpu_check, then bench.bench --device cuda on gpt2
#                                   #   (training in bf16, decoding in fp32: the issue's targets)
#   bash bench/gpu.sh experiment    # there (<= 7.5 min): `make experiment LEN=10` timed, the 32 x 256 bf16 rows
#   bash bench/gpu.sh pretrain-bundle   # here: a corpus subset that fits beside the tree (.gpu/pretrain, carried)
#   bash bench/gpu.sh pretrain      # there (<= 9.5 min): pretraining speed (8x512, 12x768), Muon vs AdamW at
#                                   #   equal tokens (8x256), 4 sizes at EPOCHS (4) epochs of the subset, int8
#                                   #   packs and their round-trip losses, shipped back as <= 4 parts
#   bash bench/gpu.sh pretrain-receive DIR   # here: join the parts from DIR into .gpu/received, rebuild weights
#   DRY=1 bash bench/gpu.sh speed   # here: the same steps on a tiny shape on the CPU (checks the script)
#
# The GPU machine needs torch, transformers, peft, tiktoken, einops, safetensors and tqdm, and no network:
# the data travels in .gpu/ with the working tree (ignored by git, so copy it along). Results go to $OUT
# (default .gpu/out): bench.bench's JSON merged into bench/results-cuda.json and copied there, each
# step's log, the experiment's metrics. Each step has its own time limit, so one slow step cannot eat the
# rest; "speed" first: it holds the measurements the speed targets are about.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-.gpu/out}
mkdir -p "$OUT"
PY=${PY:-python3}
export PYTHONUNBUFFERED=1 DATA_DIR=${DATA_DIR:-$PWD/.gpu/data} TQDM_MININTERVAL=10
DRY=${DRY:-}
LOGS=${LOGS:-$OUT}

step() {  # step SECONDS NAME COMMAND...: run with a limit, output to $OUT/NAME.log and the terminal
  local limit=$1 name=$2; shift 2
  echo "== $name (limit ${limit}s): $*"
  local t0=$SECONDS
  mkdir -p "$LOGS"
  timeout "$limit" "$@" 2>&1 | tee "$LOGS/$name.log" | grep -v -E '^\s*$|it/s\]|s/it\]' | tail -40
  local rc=${PIPESTATUS[0]}
  echo "== $name: exit $rc after $((SECONDS - t0)) s" | tee -a "$LOGS/steps.txt"
}

case "${1:-}" in
  bundle)
    src=${SRC:-../shared/data}
    mkdir -p .gpu/data
    cp -r "$src/e2e" "$src/gpt2" .gpu/data/
    grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
    du -sh .gpu/data
    ;;
  speed)
    nvidia-smi -L 2>/dev/null || echo "no nvidia-smi"
    $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
    if [ -n "$DRY" ]; then
      step 900 check $PY -m bench.gpu_check --device cpu
      step 900 bench $PY -m bench.bench --quick --no-memory --compiled --device cpu --out "$OUT/results-dry.json"
    else
      # by priority; bench.bench saves after each group, so a step cut short keeps the groups it finished
      step 200 check $PY -m bench.gpu_check
      step 200 bench-train-bf16 $PY -m bench.bench --device cuda --models gpt2 --parts train --precisions bf16
      step 140 bench-decode-fp32 $PY -m bench.bench --device cuda --models gpt2 --parts decode --precisions fp32
      cp bench/results-cuda.json "$OUT/"
    fi
    ;;
  experiment)
    if [ -n "$DRY" ]; then
      step 900 experiment $PY -m experiments.run --prefix_len=10 --max_train=40 --max_dev=8 --max_test=4 \
        --compile=on --results_dir="$OUT/results" --runs_dir="$OUT/runs"
    else
      step 300 experiment $PY -m experiments.run --prefix_len=10 --results_dir="$OUT/results" --runs_dir=/tmp/runs
      step 140 bench-32x256 $PY -m bench.bench --device cuda --models gpt2 --parts train --precisions bf16 \
        --batch 32 --seq 256
      cp bench/results-cuda.json "$OUT/"
    fi
    find "$OUT/results" -name metrics.json -exec cp {} "$OUT/experiment-metrics.json" \;
    ;;
  pretrain-bundle)
    $PY -m bench.gpu_pretrain bundle ${MAX_MIB:+--max-mib "$MAX_MIB"} ;;
  pretrain)
    nvidia-smi -L 2>/dev/null || echo "no nvidia-smi"
    step 570 pretrain $PY -m bench.gpu_pretrain run --out "$OUT" ${DRY:+--dry --budget 400}
    ;;
  pretrain-receive)
    $PY -m bench.gpu_pretrain receive "${2:?give the folder that holds results.tar.000, ...}" ;;
  *)
    sed -n "2,20p" "$0"; exit 2 ;;
esac
