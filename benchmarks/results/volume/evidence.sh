#!/usr/bin/env bash
# Pretrain every volume task on AdrenalMNIST3D through `sslbench pretrain` (CPU, one thread),
# then copy each run's metrics.csv here and plot the curves. Usage (from the repo root):
#   bash benchmarks/results/volume/evidence.sh [RUNS_DIR]
set -euo pipefail
RUNS=${1:-/tmp/medssl_volume_runs}
ONLY=${2:-}  # optional: run only the runs whose name matches this regex
HERE=benchmarks/results/volume
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
D28=medmnist3d:../shared/data/adrenalmnist3d
D64=medmnist3d:../shared/data/adrenalmnist3d?size=64
COMMON="--progress false --log-every 10 --ckpt-every 1000"
run() {  # name, then sslbench pretrain arguments
  local name=$1; shift
  if [[ -n "$ONLY" && ! "$name" =~ $ONLY ]]; then return; fi
  echo "== $name: sslbench pretrain $*"
  .venv/bin/sslbench pretrain --out "$RUNS/$name" $COMMON "$@"
  mkdir -p "$HERE/metrics"; cp "$RUNS/$name/metrics.csv" "$HERE/metrics/$name.csv"
}
run rotation_28      --task rotation      --encoder resnet18_3d --encoder.widen_factor 0.5 --data "$D28" --steps 150 --batch-size 16
run slice_order_28   --task slice_order   --encoder resnet18_3d --encoder.widen_factor 0.5 --data "$D28" --steps 150 --batch-size 16
run pixel_shuffle_28 --task pixel_shuffle --encoder resnet18_3d --encoder.widen_factor 0.5 --data "$D28" --steps 150 --batch-size 8
run mae3d_28         --task mae3d         --encoder vit_3d --encoder.patch_size 8 --encoder.embed_dim 192 --encoder.depth 4 --encoder.num_heads 6 --data "$D28?pad_to=32" --steps 200 --batch-size 16
run combined_28      --task combined --task.tasks rotation,pixel_shuffle --encoder resnet18_3d --encoder.widen_factor 0.5 --data "$D28" --steps 150 --batch-size 8
run mae3d_64         --task mae3d         --encoder vit_3d --encoder.patch_size 16 --encoder.embed_dim 192 --encoder.depth 4 --encoder.num_heads 6 --data "$D64" --steps 150 --batch-size 8
# smaller patches: the masked content is predictable from visible neighbours (see README, baselines)
run mae3d_28_p4      --task mae3d         --encoder vit_3d --encoder.patch_size 4 --encoder.embed_dim 192 --encoder.depth 4 --encoder.num_heads 6 --data "$D28?pad_to=32" --steps 200 --batch-size 8
# raw (not per-patch normalised) targets: the trivial solution is no longer a zero prediction
run mae3d_64_raw     --task mae3d --task.norm_pix_loss false --encoder vit_3d --encoder.patch_size 8 --encoder.embed_dim 192 --encoder.depth 4 --encoder.num_heads 6 --data "$D64" --steps 150 --batch-size 8
.venv/bin/python $HERE/baselines.py --out $HERE/baselines.json
.venv/bin/python $HERE/plot_curves.py $HERE/metrics --out $HERE --baselines $HERE/baselines.json
