#!/usr/bin/env bash
# CUDA checks on a GPU machine: the CAM stages with AMP on the GPU, then train_seg's learning curve
# (scripts/seg_curve.py) sharded over parallel processes on the one GPU.
#
#   bash benchmarks/gpu_check.sh OUT_DIR [CURVE_SECONDS]
#   STAGES=0 SHARDS=6 CURVE_ARGS="--curves lowres --max-epochs 40" bash benchmarks/gpu_check.sh OUT_DIR 170
#   STAGES=0 GATE=1 SHARDS=0 bash benchmarks/gpu_check.sh OUT_DIR   # train_seg + eval_seg with the class gate,
#                                                                    # and a profile of make_cam, on CUDA
#   bash benchmarks/gpu_check.sh --quick   # no GPU needed: the CUDA params files it writes validate, the stages
#                                          # it runs are stages of dvc.yaml, the curve jobs' params validate
#
# Expects, below the repository root (copied there by hand; see the README's "GPU" section):
#   .devcarry/voc-mini   the data root          .devcarry/whl   wheels missing on the machine (pip install there)
#   .devcarry/ws/data    prepared/, pseudo_labels/, train_cam/model.pt of a workspace where `dvc repro` ran
# On a machine with every dependency installed the wheels folder may be empty.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
PY=${PYTHON:-python3}
TMP=${TMPDIR:-/tmp}
CAM_STAGES="train_cam_baseline train_cam make_cam eval_cam"
GATE_STAGES="train_seg eval_seg"
CAM_TWEAK='
for s in ("train_cam_baseline", "train_cam"):
    p[s]["epochs"] = 2
    p[s]["amp"] = True
p["cam"]["init"] = "baseline"
p["train_cam"]["matcher_batch"] = 0'

cuda_params() {  # $1: the params file to write: params.yaml on CUDA with the carried data; $2: python tweaking p
$PY - "$ROOT" "$1" "${2:-}" <<'EOF'
import sys, yaml, pathlib
root, out, tweak = pathlib.Path(sys.argv[1]), sys.argv[2], sys.argv[3]
p = yaml.safe_load((root / "params.yaml").read_text())
p["device"] = "cuda"
p["data"]["root"] = str(root / ".devcarry" / "voc-mini")
p["data"]["workers"] = 4
p["make_cam"]["max_pixels"] = 0
exec(tweak)
pathlib.Path(out).write_text(yaml.safe_dump(p))
EOF
}

if [ "${1:-}" = --quick ]; then
  quick=$(mktemp -d)
  trap 'rm -rf "$quick"' EXIT
  { cuda_params "$quick/params_gpu.yaml" "$CAM_TWEAK" && cuda_params "$quick/params_gate.yaml"; } || exit 1
  # shellcheck disable=SC2086
  $PY - "$ROOT" "$quick" $CAM_STAGES $GATE_STAGES <<'EOF' || exit 1
import pathlib, sys, yaml
from textwsss.params import load_params
root, folder, stages = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), sys.argv[3:]
files = sorted(folder.glob("*.yaml"))
for f in files:
    load_params(f)  # raises ParamsError naming the key
known = set(yaml.safe_load((root / "dvc.yaml").read_text())["stages"])
bad = [s for s in stages if s not in known or not (root / "stages" / f"{s}.py").is_file()]
if bad:
    sys.exit(f"gpu_check.sh: stages {bad} are not in dvc.yaml or have no stages/<name>.py")
print(f"quick check: {len(files)} CUDA params files valid; stages {' '.join(stages)} found in dvc.yaml")
EOF
  # the curve jobs with the overrides the shards get: seg_curve.py validates every job's params before listing
  $PY scripts/seg_curve.py --list --set device=cuda data.workers=3 "data.root=$ROOT/.devcarry/voc-mini" \
    > "$quick/jobs.txt" || exit 1
  echo "quick check: $(wc -l < "$quick/jobs.txt") curve jobs' params valid"
  exit 0
fi

OUT=${1:?usage: gpu_check.sh OUT_DIR [CURVE_SECONDS] | gpu_check.sh --quick}
CURVE_SECONDS=${2:-300}
mkdir -p "$OUT"

if ls .devcarry/whl/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$TMP/site" .devcarry/whl/*.whl
  export PYTHONPATH=$TMP/site${PYTHONPATH:+:$PYTHONPATH}
fi
if ! $PY -c "import dvclive" 2>/dev/null; then
  # dvclive drags in DVC itself; the training logs are not what this check is about
  mkdir -p "$TMP/shim"
  cat > "$TMP/shim/dvclive.py" <<'EOF'
class Live:
    def __init__(self, *a, **k): self.step, self.summary = 0, {}
    def log_metric(self, *a, **k): pass
    def next_step(self): self.step += 1
    def end(self): pass
EOF
  export PYTHONPATH=$TMP/shim:${PYTHONPATH:-}
fi

nvidia-smi -L | tee "$OUT/gpu.txt"
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))" | tee -a "$OUT/gpu.txt"

run_stages() {  # each stage script of "$@", its log and wall time into $OUT
  for stage in "$@"; do
    SECONDS=0
    $PY stages/$stage.py > "$OUT/$stage.log" 2>&1
    echo "$stage rc=$? seconds=$SECONDS" | tee -a "$OUT/stages.txt"
    grep -v "it/s\\|img/s" "$OUT/$stage.log" | tail -3
  done
}

if [ "${STAGES:-1}" = 1 ]; then
  mkdir -p data
  cp -r .devcarry/ws/data/prepared data/
  cuda_params "$ROOT/.devcarry/params_gpu.yaml" "$CAM_TWEAK"
  export TEXTWSSS_PARAMS=$ROOT/.devcarry/params_gpu.yaml PYTHONUNBUFFERED=1
  # shellcheck disable=SC2086
  run_stages $CAM_STAGES
  cp reports/metrics/cam.json "$OUT/cam_gpu.json" 2>/dev/null
fi

if [ "${GATE:-0}" = 1 ]; then
  mkdir -p data
  cp -r .devcarry/ws/data/prepared .devcarry/ws/data/pseudo_labels .devcarry/ws/data/train_cam data/
  cuda_params "$ROOT/.devcarry/params_gate.yaml"
  export TEXTWSSS_PARAMS=$ROOT/.devcarry/params_gate.yaml PYTHONUNBUFFERED=1
  # shellcheck disable=SC2086
  run_stages $GATE_STAGES
  cp reports/metrics/seg.json "$OUT/seg_gate_gpu.json" 2>/dev/null
  SECONDS=0
  $PY -m cProfile -o "$OUT/make_cam.prof" stages/make_cam.py > "$OUT/make_cam.log" 2>&1
  echo "make_cam (cProfile) rc=$? seconds=$SECONDS" | tee -a "$OUT/stages.txt"
  $PY -c "import pstats,sys; pstats.Stats(sys.argv[1]).sort_stats('tottime').print_stats(30)" "$OUT/make_cam.prof" \
    > "$OUT/make_cam_profile.txt" 2>&1
  head -60 "$OUT/make_cam_profile.txt" | tail -40
fi
unset TEXTWSSS_PARAMS

[ "${SHARDS:-4}" = 0 ] && exit 0
# the curve: shards in parallel on the one GPU; each writes its results after every job
pids=()
SHARDS=${SHARDS:-4}
for i in $(seq 0 $((SHARDS - 1))); do
  # shellcheck disable=SC2086
  timeout "$CURVE_SECONDS" $PY scripts/seg_curve.py --source .devcarry/ws --scratch "$TMP/curve" \
    --out "$OUT/curve_$i.json" --shard "$i/$SHARDS" ${CURVE_ARGS:-} \
    --set device=cuda data.workers=$((12 / SHARDS)) "data.root=$ROOT/.devcarry/voc-mini" > "$TMP/curve_$i.log" 2>&1 &
  pids+=($!)
done
wait "${pids[@]}"
grep -h "seg_curve" "$TMP"/curve_*.log; tail -n 3 "$TMP/curve_0.log"
