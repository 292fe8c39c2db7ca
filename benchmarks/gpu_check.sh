#!/usr/bin/env bash
# The GPU check, in one call (about 6-8 minutes on an H100/H200): run it from the repository root
# on a machine with CUDA and the project installed (pip install -e .).
#
#   bash benchmarks/gpu_check.sh [OUTPUT_FOLDER]          (default runs/gpu_check)
#
# Prints, and writes as JSON under OUTPUT_FOLDER:
# 1. the tests that compare the CUDA path with the CPU one (inpainting, crop selection,
#    protocols, the accelerator path) run on the GPU;
# 2. the host-device synchronisations of the measuring loop, per batch (CUDA's sync debug mode),
#    and the profiler's split of the loop's time per protocol and stage (a Chrome trace too);
# 3. the bare forward pass (views/s) and every protocol's ratio to it (engine_throughput.py,
#    bf16 autocast, channels_last, 512 views per forward: evaluate.py's default on a GPU),
#    and the bare forward's views/s against the views per pass (forward_chunks.py);
# 4. the default experiments (table1 fig2 fig6 fig10) end to end with evaluate.py on a synthetic
#    folder of GPU_CHECK_IMAGES (10,000) ImageNet-sized JPEGs: start-up seconds (process start
#    to the first batch), images/s and views/s after the first batch, their ratio to the bare
#    forward of as many views, peak host and device memory, and the time 50,000 images take.
#
# Settings (environment): GPU_CHECK_DEVICE=cuda|cpu (cpu: a dry run of the script itself, with
# e.g. GPU_CHECK_MODEL=test_efficientnet GPU_CHECK_IMAGE_SIZE=64 GPU_CHECK_IMAGES=64),
# GPU_CHECK_MODEL (tf_efficientnet_lite0), GPU_CHECK_IMAGE_SIZE (the model's, 224),
# GPU_CHECK_IMAGES (10000), GPU_CHECK_WORKERS (decoding processes, 8), PYTHON (python3).
set -uo pipefail  # a failing step is reported and the next one still runs
cd "$(dirname "$0")/.."
status=0
failed() { echo "!! $1 failed: see above; the other steps go on"; status=1; }
out=${1:-runs/gpu_check}
mkdir -p "$out"
rm -f "$out"/{engine.json,scale.json,host_syncs.txt,loop_profile.txt,loop_trace.json,forward_chunks.txt}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
python=${PYTHON:-python3}
device=${GPU_CHECK_DEVICE:-cuda}
model=${GPU_CHECK_MODEL:-tf_efficientnet_lite0}
size=${GPU_CHECK_IMAGE_SIZE:-224}
images=${GPU_CHECK_IMAGES:-10000}
workers=${GPU_CHECK_WORKERS:-8}
if [ "$device" = cuda ]; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    engine_flags=(--device cuda --precision bf16 --channels-last --batch-size 512)
    evaluate_flags=(--accelerator gpu --precision bf16-mixed --channels-last)  # 512 views per pass
    batch=64
    sync_flags=(--batch-size 8 --batches 3)
else
    engine_flags=(--device cpu --batch-size 16)
    evaluate_flags=(--accelerator cpu --chunk-size 16)
    batch=8
    sync_flags=(--batch-size 2 --batches 2)  # HostReads runs every op through Python
fi
$python -c "import torch, timm; print('torch', torch.__version__, 'timm', timm.__version__, \
torch.cuda.get_device_name() if torch.cuda.is_available() else 'no CUDA')"

echo "== 1. the CUDA path against the CPU path (tests)"
$python -m pytest -q -p no:cacheprovider tests/test_inpaint.py tests/test_crop_selection.py \
    tests/test_protocols.py tests/test_host_reads.py 2>&1 | tail -2 || failed "the tests"

echo "== 2. host-device synchronisations per batch of the measuring loop"
$python benchmarks/host_syncs.py --device "$device" --model "$model" --image-size "$size" \
    "${sync_flags[@]}" | tee "$out/host_syncs.txt" || failed "host_syncs.py (a wait after the first batch, or a crash)"

echo "== 2b. where the loop's time goes, per protocol and stage (torch profiler)"
if [ "$device" = cuda ]; then
    profile_flags=(--batch-size 64 --chunk-size 512 --bf16 --channels-last --batches 3)
else
    profile_flags=(--batch-size 4 --chunk-size 16 --batches 1)
fi
$python benchmarks/loop_profile.py --device "$device" --model "$model" --image-size "$size" \
    "${profile_flags[@]}" --trace "$out/loop_trace.json" | tee "$out/loop_profile.txt" ||
    failed "the loop profile"

echo "== 3. the bare forward and every protocol's ratio to it"
$python benchmarks/engine_throughput.py --model "$model" --image-size "$size" \
    "${engine_flags[@]}" --repeats 5 --output "$out/engine.json" >/dev/null ||
    failed "engine_throughput.py"
[ -f "$out/engine.json" ] && $python - "$out/engine.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"{r['model']} ({r['precision']}): bare forward {r['bare_forward_views_per_s']:.0f} views/s; "
      f"bare against itself {r['bare_vs_bare_ratio_min']:.3f}-{r['bare_vs_bare_ratio_max']:.3f}")
for key in sorted(k[: -len("_ratio_to_bare")] for k in r if k.endswith("_ratio_to_bare")):
    print(f"    {key:36s} {r[key + '_ratio_to_bare']:6.3f}x  {r[key + '_views_per_s']:9.0f} views/s")
if "lie_cost_in_forwards" in r:
    print(f"    lie: {r['lie_cost_in_forwards']:.2f} forward passes per tangent view")
PY

echo "== 3b. the bare forward against the views per pass (evaluate.py's --chunk-size)"
if [ "$device" = cuda ]; then chunks=(128 256 512 1024); bf16=(--bf16); else chunks=(8 16 32 64); bf16=(); fi
$python benchmarks/forward_chunks.py --model "$model" --image-size "$size" --device "$device" \
    --chunks "${chunks[@]}" --seconds 2 --rounds 1 "${bf16[@]}" | tee "$out/forward_chunks.txt" ||
    failed "forward_chunks.py"

echo "== 4. evaluate.py end to end: default experiments on $images synthetic JPEGs"
$python benchmarks/scale_run.py --sizes "$images" --model "$model" --image-size "$size" \
    --classes 10 --experiment table1 fig2 fig6 fig10 --batch-size "$batch" \
    --num-workers "$workers" --folder "${TMPDIR:-/tmp}/li_gpu_check_jpegs" \
    --output "$out/scale.json" -- "${evaluate_flags[@]}" >/dev/null || failed "scale_run.py"
[ -f "$out/scale.json" ] && $python - "$out/scale.json" "$out/engine.json" <<'PY'
import json, os, sys
run = json.load(open(sys.argv[1]))["runs"][-1]
engine = json.load(open(sys.argv[2])) if os.path.exists(sys.argv[2]) else {}
bare = engine.get("bare_forward_views_per_s", float("nan"))
t = run["timing"]
minutes = (t["ready_s"] + 50000 / t["images_per_s"]) / 60
device = "n/a" if t["peak_device_mib"] is None else f"{t['peak_device_mib']:.0f} MiB"
print(f"{run['images']} images in {run['wall_s']} s of wall time ({run['images_per_s']} images/s "
      f"with start-up and writing)")
print(f"    start-up (process start to the first batch): {t['ready_s']:.1f} s; first batch "
      f"{t['first_batch_s']:.1f} s")
print(f"    after the first batch: {t['images_per_s']:.1f} images/s = {t['views_per_s']:.0f} views/s "
      f"({t['views_per_image']} views per image) = {t['views_per_s'] / bare:.2f}x the bare forward")
print(f"    peak memory: host {run['peak_rss_mib']:.0f} MiB (largest process), device {device}")
print(f"    50,000 images x the default experiments: {minutes:.1f} min")
PY
exit $status
