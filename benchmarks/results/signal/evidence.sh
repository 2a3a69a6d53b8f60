#!/usr/bin/env bash
# Pretraining evidence for the signal tasks (CPU, small step counts). Usage:
#   bash benchmarks/results/signal/evidence.sh [RUNS_DIR] [STEPS_SCALE]
# Writes runs to RUNS_DIR (default /tmp/signal_runs), then copies metrics.csv/config.yaml here and plots.
# CinC 2017 has one recording per patient: PCLR falls back to two non-overlapping windows of it
# (stride = window), and records with a single window pair with themselves, so augmentations are on there.
set -euo pipefail
RUNS=${1:-/tmp/signal_runs}
SCALE=${2:-1}
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../../.." && pwd)
SSL="$REPO/.venv/bin/sslbench"
DATA=${MEDSSL_SHARED_DATA:-$REPO/../shared/data}
EEG="$DATA/eegmat-mental-arithmetic/eeg-during-mental-arithmetic-tasks-1.0.0"
AF="$DATA/physionet2017-af-validation/validation"
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
common=(--precision 32 --accelerator cpu --log-every 5 --progress false --warmup-steps 20 --lr 1e-3 --seed 0)
s() { echo $(( $1 * SCALE )); }

"$SSL" pretrain --task cpc --encoder cpc_encoder --data "eegmat:$EEG?sfreq=100&window=10&stride=5" \
  --steps "$(s 300)" --batch-size 32 --out "$RUNS/cpc_eegmat" "${common[@]}"
"$SSL" pretrain --task cpc --encoder cpc_encoder --data "cinc2017:$AF?sfreq=100&window=10&stride=5" \
  --steps "$(s 300)" --batch-size 32 --out "$RUNS/cpc_cinc2017" "${common[@]}"
"$SSL" pretrain --task pclr --encoder xresnet1d18 --encoder.widths "[32,64,128,256]" \
  --data "eegmat:$EEG?sfreq=100&window=5&stride=5" --task.repeats 4 \
  --steps "$(s 200)" --batch-size 32 --out "$RUNS/pclr_eegmat" "${common[@]}"
"$SSL" pretrain --task pclr --encoder xresnet1d18 --encoder.widths "[32,64,128,256]" \
  --data "cinc2017:$AF?sfreq=100&window=5&stride=5" --task.repeats 4 \
  --task.augment "[noise,scale,wander]" --task.sfreq 100 \
  --steps "$(s 200)" --batch-size 32 --out "$RUNS/pclr_cinc2017" "${common[@]}"

"$REPO/.venv/bin/python" -m benchmarks.bench_signal --curves "$RUNS"/cpc_eegmat "$RUNS"/cpc_cinc2017 \
  "$RUNS"/pclr_eegmat "$RUNS"/pclr_cinc2017 --out "$HERE"

# Linear probes of the four encoders vs their random initialisation (the benchmark issue's harness).
ev=(--protocol linear --fractions 1 --seeds 0 --baselines random --n-boot 200 --threads 1)
"$SSL" evaluate --checkpoint "$RUNS/cpc_eegmat" --data "eegmat:$EEG?sfreq=100&window=10&stride=5" --out "$RUNS/eval/cpc_eegmat" "${ev[@]}"
"$SSL" evaluate --checkpoint "$RUNS/pclr_eegmat" --data "eegmat:$EEG?sfreq=100&window=5&stride=5" --out "$RUNS/eval/pclr_eegmat" "${ev[@]}"
"$SSL" evaluate --checkpoint "$RUNS/cpc_cinc2017" --data "cinc2017:$AF?sfreq=100&window=10&stride=5&classes=af" --out "$RUNS/eval/cpc_cinc2017" "${ev[@]}"
"$SSL" evaluate --checkpoint "$RUNS/pclr_cinc2017" --data "cinc2017:$AF?sfreq=100&window=5&stride=5&classes=af" --out "$RUNS/eval/pclr_cinc2017" "${ev[@]}"
mkdir -p "$HERE/probe"
for r in cpc_eegmat pclr_eegmat cpc_cinc2017 pclr_cinc2017; do cp "$RUNS/eval/$r/results.jsonl" "$HERE/probe/$r.jsonl"; done
