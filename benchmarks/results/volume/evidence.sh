#!/usr/bin/env bash
# Pretrain every volume task on AdrenalMNIST3D through `sslbench pretrain` (CPU, one thread),
# then copy each run's metrics.csv here and plot the curves. Usage (from the repo root):
#   bash benchmarks/results/volume/evidence.sh [RUNS_DIR]
set -euo pipefail
RUNS=${1:-/tmp/medssl_volume_runs}
HERE=benchmarks/results/volume
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
D28=medmnist3d:../shared/data/adrenalmnist3d
D64=medmnist3d:../shared/data/adrenalmnist3d?size=64
COMMON="--progress false --log-every 10 --ckpt-every 1000"
run() {  # name, then sslbench pretrain arguments
  local name=$1; shift
  echo "== $name: sslbench pretrain $*"
  .venv/bin/sslbench pretrain --out "$RUNS/$name" $COMMON "$@"
  mkdir -p "$HERE/runs"; cp "$RUNS/$name/metrics.csv" "$HERE/runs/$name.csv"
}
run rotation_28      --task rotation      --encoder resnet18_3d --encoder.widen_factor 0.5 --data "$D28" --steps 150 --batch-size 16
run slice_order_28   --task slice_order   --encoder resnet18_3d --encoder.widen_factor 0.5 --data "$D28" --steps 150 --batch-size 16
run pixel_shuffle_28 --task pixel_shuffle --encoder resnet18_3d --encoder.widen_factor 0.5 --data "$D28" --steps 150 --batch-size 8
run mae3d_28         --task mae3d         --encoder vit_3d --encoder.patch_size 8 --encoder.embed_dim 192 --encoder.depth 4 --encoder.num_heads 6 --data "$D28?pad_to=32" --steps 200 --batch-size 16
run combined_28      --task combined --task.tasks rotation,pixel_shuffle --encoder resnet18_3d --encoder.widen_factor 0.5 --data "$D28" --steps 150 --batch-size 8
run mae3d_64         --task mae3d         --encoder vit_3d --encoder.patch_size 16 --encoder.embed_dim 192 --encoder.depth 4 --encoder.num_heads 6 --data "$D64" --steps 150 --batch-size 8
.venv/bin/python $HERE/plot_curves.py $HERE/runs --out $HERE
