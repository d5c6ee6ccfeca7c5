#!/usr/bin/env bash
# Every GPU measurement issue 13 asks for, in one device call, each step under its own time
# limit, text and JSON results under OUT (see ../shared/gpu/README.md):
#
#   bash ../shared/gpu/prepare.sh                       # here, once (wheels into .gpu/;
#                                                       # without onnxruntime its rows are skipped)
#   device run, carry [".gpu"], timeout_s 560:
#       bash .gpu/run.sh bash benchmarks/gpu_all.sh $OUT
#
# Rehearse here on the CPU with small sizes before spending device time (on JAX, as run.sh
# runs it there; train_cost.py needs JAX):
#   KERAS_BACKEND=jax QUICK=1 bash benchmarks/gpu_all.sh /tmp/gpu-rehearsal
#
# Steps: the model stage of `segment` (512x512 tiles/s: host path, compiled device path, ONNX
# Runtime, with and without TTA); training end to end with host and with device augmentation
# beside the model alone (the study's depth-2 network, 512x512, batch 32, float32 and mixed);
# a folder of 2048x2048 micrographs end to end (one after the other against the pipeline);
# one 2048x2048 micrograph with all outputs, with and without TTA; last (it only compiles), what
# the training step computes and moves per image as the GPU's XLA counts it (train_cost.py).
set -uo pipefail
out=${1:?usage: gpu_all.sh OUT_FOLDER}
mkdir -p "$out"
quick=${QUICK:-0}
limit=${LIMIT:-150}

step() {
  local name=$1
  shift
  echo "== $name: $*"
  local t0=$SECONDS
  timeout "$limit" "$@" >"$out/$name.txt" 2>&1
  echo "== $name: exit $? after $((SECONDS - t0)) s"
  grep -v -e "^E0000" -e "^I0000" -e "^W0000" -e "^WARNING" "$out/$name.txt" | tail -30
}

{
  python -c "import sys; sys.path.insert(0, 'benchmarks'); from _machine import machine; print(machine())"
  nvidia-smi -L 2>/dev/null || echo "no nvidia-smi"
} >"$out/machine.txt" 2>&1
if [ "$quick" = 1 ]; then
  step model_stage python benchmarks/model_stage.py --tile 128 --batch 4 --batches 2 --json "$out/model_stage.json"
  step train python benchmarks/train_throughput.py --size 64 --batch 8 --n 32 --epochs 1 \
    --networks 2:2,2 --precisions float32 --workers 1 --out "$out/train.json"
  step folder python benchmarks/folder_speed.py --n 2 --size 256 --workers 2
  step segment python benchmarks/segment_speed.py --sizes 256 --repeat 1
  step train_cost python benchmarks/train_cost.py --size 64 --batch 4 --precisions float32 \
    --without-batchnorm --json "$out/train_cost.json"
else
  step model_stage python benchmarks/model_stage.py --tile 512 --batch 32 --batches 8 --json "$out/model_stage.json"
  step train python benchmarks/train_throughput.py --size 512 --batch 32 --n 1024 --epochs 3 \
    --networks 2:2,2 --precisions float32,mixed --out "$out/train.json"
  step folder python benchmarks/folder_speed.py --n 8 --size 2048 --workers 8 --runtime keras
  step segment python benchmarks/segment_speed.py --sizes 2048 --tta --repeat 2
  step train_cost python benchmarks/train_cost.py --without-batchnorm --json "$out/train_cost.json"
fi
echo "== done: $(ls "$out")"
