#!/usr/bin/env bash
# One GPU check, under 5 minutes on one GPU: run it from the repository root on a machine with
# CUDA, PyTorch, timm, pytorch-lightning and torchmetrics (plus jsonargparse for evaluate.py).
#
#   bash benchmarks/gpu_check.sh [OUTPUT_FOLDER]      (default runs/gpu_check)
#
# 1. the inpainting, crop-selection and protocol tests on CUDA (CUDA views against the CPU ones);
# 2. benchmarks/engine_throughput.py for tf_efficientnet_lite0 and resnet50 at bf16 with
#    channels_last: every protocol's ratio to the bare forward, and views/s; the forward cost of
#    each fix (benchmarks/modifier_cost.py);
# 3. evaluate.py end to end (default experiments, bf16-mixed, channels_last, decoding workers) on
#    a synthetic folder of ImageNet-sized JPEGs, and the projection to the 50,000 ImageNet
#    validation images.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/gpu_check}
mkdir -p "$out"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
python=${PYTHON:-python3}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
$python -c "import torch, timm; print('torch', torch.__version__, 'timm', timm.__version__, torch.cuda.get_device_name())"

echo "== 1. tests on CUDA"
$python -m pytest -q -p no:cacheprovider tests/test_inpaint.py tests/test_crop_selection.py \
    tests/test_protocols.py 2>&1 | tail -3

echo "== 2. engine against the bare forward (bf16, channels_last)"
for model in tf_efficientnet_lite0 resnet50; do
    $python benchmarks/engine_throughput.py --model "$model" --device cuda --precision bf16 \
        --channels-last --batch-size 256 --repeats 5 --output "$out/engine_$model.json" >/dev/null
    $python - "$out/engine_$model.json" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
ratios = {k[: -len("_ratio_to_bare")]: v for k, v in r.items() if k.endswith("_ratio_to_bare")}
print(f"{r['model']}: bare forward {r['bare_forward_views_per_s']:.0f} views/s; "
      f"inpaint fraction translate {r['inpaint_fraction_of_forward']:.3f}, random_location s0.3 "
      f"{r['inpaint_fraction_of_forward_random_location_s0.3']:.3f}; noise (bare vs bare) "
      f"{r['bare_vs_bare_ratio_min']:.3f}-{r['bare_vs_bare_ratio_max']:.3f}")
for key, ratio in ratios.items():
    print(f"    {key:40s} {ratio:6.3f}x  {r[key + '_views_per_s']:9.0f} views/s")
EOF
done

echo "== 2b. forward cost of each fix (lite0, bf16 not applied: float32)"
$python benchmarks/modifier_cost.py --device cuda --batch-size 256 | tee "$out/modifier_cost.json"

echo "== 3. evaluate.py end to end, default experiments, projection to 50,000 images"
images=${GPU_CHECK_IMAGES:-1000}
$python benchmarks/scale_run.py --sizes "$images" --model tf_efficientnet_lite0 --image-size 224 \
    --classes 10 --experiment table1 fig2 fig6 fig10 --batch-size 32 --num-workers 8 \
    --folder /tmp/li_gpu_scale --output "$out/scale.json" \
    -- --accelerator gpu --precision bf16-mixed --channels-last --chunk-size 512 >/dev/null
$python - "$out/scale.json" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
run = r["runs"][-1]
rate = run["images_per_s"]
print(f"{run['images']} images in {run['wall_s']} s: {rate} images/s (start-up included), peak RSS "
      f"{run['peak_rss_mib']} MiB; 50,000 images x the default protocols: "
      f"{50000 / rate / 60:.1f} min")
EOF
