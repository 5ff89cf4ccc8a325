#!/usr/bin/env bash
# One prepared check on a machine with one CUDA GPU: install what it needs, then run each stage of
# benchmarks/gpu_check.py in its own time limit, printing its figures (tokens/s, peak memory) and its status, so that
# one failure does not hide the others. The stages fit in 8 minutes together (their limits add up to 450 s).
#
#   bash benchmarks/gpu_check.sh               # on the GPU machine, from a checkout of the repository
#   bash benchmarks/gpu_check.sh --cpu-dry-run # anywhere: tiny shapes on the CPU, CUDA/vLLM stages skipped
#   SKIP_INSTALL=1 bash benchmarks/gpu_check.sh  # reuse the current environment
#
# Stages: offline (bf16 RRHF step on a random Qwen2.5-0.5B-shaped model), online (RRHF sampling with transformers),
# qlora (4-bit QLoRA RRHF step, CUDA bitsandbytes), vllm_online (online RRHF, use_vllm=True, colocate), won_vllm
# (West-of-N sampling through vLLM). Exit status: the number of stages that failed (0: all passed or skipped).
set -u
cd "$(dirname "$0")/.."

DRY_RUN=""
if [ "${1:-}" = "--cpu-dry-run" ]; then
    DRY_RUN="--cpu-dry-run"
fi
PYTHON="${PYTHON:-python3}"

if [ -z "$DRY_RUN" ] && [ -z "${SKIP_INSTALL:-}" ]; then
    echo "== install (vllm in TRL's supported range brings its CUDA torch; CUDA bitsandbytes) =="
    if [ ! -d .venv-gpu ]; then
        "$PYTHON" -m venv .venv-gpu || echo "install: could not create .venv-gpu; using $PYTHON as it is"
    fi
    if [ -x .venv-gpu/bin/python ]; then
        PYTHON=.venv-gpu/bin/python
    fi
    "$PYTHON" -m pip install -q --upgrade pip || true
    "$PYTHON" -m pip install -q "trl[vllm]>=1.16,<1.17" "bitsandbytes>=0.45" -e . \
        || echo "install: FAILED (pip); the stages run with what is installed and will say what is missing"
fi

echo "== versions =="
"$PYTHON" - <<'EOF'
import importlib.metadata as md
for name in ["torch", "transformers", "trl", "peft", "accelerate", "bitsandbytes", "vllm", "trl-won"]:
    try:
        print(f"{name} {md.version(name)}")
    except md.PackageNotFoundError:
        print(f"{name} not installed")
try:
    import torch
    print("cuda", torch.version.cuda, "| device:", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none")
except Exception as error:  # the versions are informative; the stages report real failures
    print("torch import failed:", error)
EOF

# stage:seconds (450 s in all)
STAGES="offline:70 online:80 qlora:80 vllm_online:120 won_vllm:100"
FAILED=0
SUMMARY=""
WORK="$(mktemp -d)"
for entry in $STAGES; do
    stage="${entry%%:*}"
    limit="${entry##*:}"
    echo "== stage $stage (limit ${limit}s) =="
    start=$(date +%s)
    timeout --kill-after=10 "$limit" "$PYTHON" benchmarks/gpu_check.py --stage "$stage" --work "$WORK" $DRY_RUN
    rc=$?
    elapsed=$(( $(date +%s) - start ))
    case $rc in
        0) status="ok" ;;
        3) status="skipped" ;;
        124|137) status="TIMEOUT after ${limit}s"; FAILED=$((FAILED + 1)) ;;
        *) status="FAILED (exit $rc)"; FAILED=$((FAILED + 1)) ;;
    esac
    echo "== stage $stage: $status in ${elapsed}s =="
    SUMMARY="${SUMMARY}${stage}: ${status} (${elapsed}s)\n"
done
rm -rf "$WORK"
echo "== summary =="
printf "%b" "$SUMMARY"
exit $FAILED
