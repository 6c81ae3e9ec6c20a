#!/usr/bin/env bash
# Every GPU measurement of issue 10 (docs/benchmarks.md) in one command, within a time budget.
#
#   bash tools/analysis/gpu_benchmarks.sh                  # on the GPU machine: $OUT/*.md
#   DEVICE=cpu OUT=/tmp/b bash tools/analysis/gpu_benchmarks.sh   # CPU dry run, tiny nets
#   DRYRUN=1 bash tools/analysis/gpu_benchmarks.sh          # print the commands only
#
# Parts run in order of importance; each runs under `timeout` and only while the budget
# (BUDGET_S seconds, default 540: the device allows 600 s per command) leaves room for its
# limit, so a slow part can never cost the ones before it. $OUT/summary.md lists what ran,
# what was skipped and why, and concatenates every part's tables.
#
# Environment: OUT (default ./benchmark_out), DEVICE (cuda | cpu), BUDGET_S, PARTS (a
# space-separated subset of the part names below, e.g. to run the rest in a second call),
# PYTHON (default: .venv/bin/python if usable, else python3), DRYRUN=1, FORCE=1 (replace
# part files already in OUT; otherwise the script refuses to start).
#
# Packages: torch must be installed; if mmengine / mmcv / mmpretrain / timm are missing and
# ./.whl holds wheels of them (built by tools/analysis/make_device_wheels.sh, carried to the
# device with carry=['.whl']), they are installed with --no-deps into /tmp/nfnets_site.
set -u
cd "$(dirname "$0")/../.."

OUT=${OUT:-benchmark_out}
DEVICE=${DEVICE:-cuda}
BUDGET_S=${BUDGET_S:-540}
DRYRUN=${DRYRUN:-0}
START=$(date +%s)
mkdir -p "$OUT"

if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ] && .venv/bin/python -c 'import torch' 2>/dev/null; then
        PYTHON=.venv/bin/python
    else
        PYTHON=python3
    fi
fi

probe='import torch, mmengine, mmcv, mmpretrain'
if [ "$DRYRUN" != 1 ] && ! "$PYTHON" -c "$probe; import timm" 2>/dev/null; then
    if ls .whl/*.whl >/dev/null 2>&1; then
        echo "installing the carried wheels into /tmp/nfnets_site"
        "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
            --target /tmp/nfnets_site .whl/*.whl
        export PYTHONPATH=/tmp/nfnets_site${PYTHONPATH:+:$PYTHONPATH}
        # binary wheels (torchvision) only where the device's own import fails
        for wheel in .whl/if_missing/*.whl; do
            [ -e "$wheel" ] || continue
            module=$(basename "$wheel" | cut -d- -f1)
            if ! "$PYTHON" -c "import $module" 2>/dev/null; then
                echo "installing $wheel (import $module failed)"
                "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
                    --target /tmp/nfnets_site "$wheel"
            fi
        done
    fi
    if ! "$PYTHON" -c "$probe"; then
        echo "missing packages for $PYTHON (need torch, mmengine, mmcv, mmpretrain, timm);" \
             "build ./.whl with tools/analysis/make_device_wheels.sh and carry it" >&2
        exit 3
    fi
fi
NO_TIMM=()
if [ "$DRYRUN" != 1 ] && ! "$PYTHON" -c 'import timm' 2>/dev/null; then
    "$PYTHON" -c 'import timm'  # shows why
    echo "timm cannot be imported: measuring without it (no timm rows)" >&2
    NO_TIMM=(--contenders nfnets_mm resnet50)
fi

if [ "$DEVICE" = cpu ]; then
    # dry run on a CPU: tiny networks, one warm-up, two rounds of one step
    COMMON=(--device cpu --tiny --threads 1 --warmup 1 --rounds 2 --iters 1 --batch-sizes 4)
    COMPILE=(--compile-backend eager)
else
    COMMON=(--device cuda --warmup 3 --rounds 5 --iters 3)
    COMPILE=()
fi
B=tools/analysis/benchmark.py
FAST=(--no-profile --contenders nfnets_mm timm)
[ ${#NO_TIMM[@]} -gt 0 ] && FAST=(--no-profile --contenders nfnets_mm)

# name | limit (s) | arguments
PART_NAMES=(train_f0_b128 agc train_compile agc_fused infer train_f0_batches train_f0_fp16 train_f1_f2)
declare -A LIMIT ARGS
LIMIT[train_f0_b128]=150
ARGS[train_f0_b128]="train --archs F0 --batch-sizes 128 --precisions fp32 bf16 --formats contiguous channels_last --memory-breakdown"
LIMIT[agc]=60
ARGS[agc]="agc --archs F0 --batch-sizes 128 --precisions bf16 --formats channels_last --no-fused-agc"
# the same with the compiled AGC pass (clip_grad.fused) beside the eager one; its own part,
# so that a long Inductor compile cannot cost the eager numbers above
LIMIT[agc_fused]=200
ARGS[agc_fused]="agc --archs F0 --batch-sizes 128 --precisions bf16 --formats channels_last ${COMPILE[*]}"
LIMIT[infer]=90
ARGS[infer]="infer --archs F0 --batch-sizes 1 64 --precisions fp32 bf16 --formats channels_last"
LIMIT[train_compile]=200
ARGS[train_compile]="train --archs F0 --batch-sizes 128 --precisions bf16 --formats channels_last --modes eager compile ${FAST[*]} ${COMPILE[*]}"
LIMIT[train_f0_batches]=100
ARGS[train_f0_batches]="train --archs F0 --batch-sizes 64 256 --precisions bf16 --formats channels_last ${FAST[*]}"
LIMIT[train_f0_fp16]=60
ARGS[train_f0_fp16]="train --archs F0 --batch-sizes 128 --precisions fp16 --formats contiguous channels_last ${FAST[*]}"
LIMIT[train_f1_f2]=120
ARGS[train_f1_f2]="train --archs F1 F2 --batch-sizes 64 --precisions bf16 --formats channels_last ${FAST[*]}"

SELECTED=${PARTS:-${PART_NAMES[*]}}
for name in $SELECTED; do
    if [ -z "${LIMIT[$name]:-}" ]; then
        echo "unknown part '$name'; valid parts: ${PART_NAMES[*]}" >&2
        exit 2
    fi
    if [ -e "$OUT/$name.md" ] && [ "${FORCE:-0}" != 1 ] && [ "$DRYRUN" != 1 ]; then
        echo "$OUT/$name.md exists; use another OUT, or FORCE=1 to replace it" >&2
        exit 2
    fi
done

summary="$OUT/summary.md"
if [ "$DRYRUN" = 1 ]; then
    summary=/dev/null
elif [ -e "$summary" ]; then
    summary="$OUT/summary_$(date +%Y%m%d_%H%M%S).md"
fi
{
    echo "# Issue 10 benchmarks: \`bash tools/analysis/gpu_benchmarks.sh\`"
    echo
    echo "DEVICE=$DEVICE BUDGET_S=$BUDGET_S PARTS='$SELECTED', $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
} > "$summary"
status=0
for name in $SELECTED; do
    elapsed=$(( $(date +%s) - START ))
    left=$(( BUDGET_S - elapsed ))
    limit=${LIMIT[$name]}
    out_file="$OUT/$name.md"
    tmp_dir="$OUT/.$name"
    # shellcheck disable=SC2206
    cmd=("$PYTHON" "$B" ${ARGS[$name]} "${COMMON[@]}" ${NO_TIMM[@]+"${NO_TIMM[@]}"} --out-dir "$tmp_dir")
    if [ "$DRYRUN" = 1 ]; then
        echo "${cmd[*]}"
        continue
    fi
    if [ "$left" -lt "$limit" ] && [ "$DEVICE" != cpu ]; then
        echo "- $name: SKIPPED ($left s of the budget left, its limit is $limit s)" >> "$summary"
        continue
    fi
    echo "=== $name (limit $limit s, $left s of the budget left)"
    t0=$(date +%s)
    rm -rf "$tmp_dir"
    timeout --kill-after=10 "$limit" "${cmd[@]}" > "$OUT/$name.log" 2>&1
    rc=$?
    # the sub-command writes <command>.md; keep it under the part's own name
    produced=$(ls "$tmp_dir"/*.md 2>/dev/null | head -n 1)
    if [ -n "$produced" ]; then
        mv "$produced" "$out_file"
    fi
    rm -rf "$tmp_dir"
    took=$(( $(date +%s) - t0 ))
    note=""
    [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ] && note=" (TIMED OUT: the rows measured before are in the log)"
    echo "- $name.md: exit $rc$note after $took s (limit $limit s); log $name.log" >> "$summary"
    if [ "$rc" -ne 0 ]; then
        status=1
        tail -n 20 "$OUT/$name.log"
    fi
done
[ "$DRYRUN" = 1 ] && exit 0
{
    echo
    for name in $SELECTED; do
        if [ -e "$OUT/$name.md" ]; then
            cat "$OUT/$name.md"
            echo
        fi
    done
} >> "$summary"
echo "wrote $summary ($(( $(date +%s) - START )) s)"
exit $status
