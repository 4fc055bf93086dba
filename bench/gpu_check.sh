#!/usr/bin/env bash
# The GPU check, for a bare CUDA machine with Python 3.12 and torch but no package index
# (docs/GPU.md): from the repo root, with .gpu-deps/augsearch-gpu-deps.tar.xz carried along
# (built elsewhere by bench/gpu_deps.sh),
#
#   bash bench/gpu_check.sh
#
# unpacks the archive into /tmp/augsearch-site, shows the GPU, torch and the carried packages,
# runs the tests marked `cuda` (at most 200 s), then bench/gpu.py with what is left of the
# 8 minutes (its --budget-s is 180 s, less when the tests ran long), then the GPU section of
# bench/child_throughput.py when a minute is left. Every step's exit code and
# wall time are printed; the script exits 1 if any step failed. bench/gpu.py rewrites its section
# of docs/BENCHMARKS.md. With $OUT set, the whole output is also written to $OUT/gpu_check.log,
# the tests' JUnit XML to $OUT/cuda-tests.xml and the bench's section to $OUT/gpu_bench.md.
set -euo pipefail

cd "$(dirname "$0")/.."
ARCHIVE=${GPU_DEPS_ARCHIVE:-.gpu-deps/augsearch-gpu-deps.tar.xz}
SITE=${GPU_DEPS_SITE:-/tmp/augsearch-site}
PY=${PYTHON:-python3}
TOTAL_S=480       # the whole check, unpacking included
MARGIN_S=15       # kept back from TOTAL_S for the summary and stray slowness
TESTS_S=200       # the cuda tests; a hung test is dumped at TESTS_S-15, the run killed at +10
BENCH_BUDGET_S=180
THROUGHPUT_S=60   # bench/child_throughput.py --gpu-only, when that much is left
BENCH_GRACE_S=30  # bench/gpu.py's start and teardown beyond its own budget
# Real CIFAR-10 for bench/gpu.py: $GPU_BENCH_DATA, else .gpu-deps/cifar10_small.npz when carried
# there, else bench/gpu.py's own default (../shared/data's, else synthetic images).
BENCH_DATA=${GPU_BENCH_DATA:-}
if [[ -z $BENCH_DATA && -f .gpu-deps/cifar10_small.npz ]]; then
    BENCH_DATA=.gpu-deps/cifar10_small.npz
fi

export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}"
export NO_ALBUMENTATIONS_UPDATE=1 RAY_USAGE_STATS_ENABLED=0 RAY_AUTH_MODE=disabled \
    MLFLOW_DISABLE_TELEMETRY=true PYTHONUNBUFFERED=1

START=$(date +%s)
FAILED=()
RESULTS=()

# step NAME CMD...: runs CMD in a subshell that stops at its first failing command, prints and
# records its exit code and wall time; never exits.
step() {
    local name=$1 t0 rc
    shift
    echo
    echo "=== $name: $* ($(date -u +%H:%M:%S) UTC, $(($(date +%s) - START)) s into the check)"
    t0=$(date +%s.%N)
    set +e
    (set -e; "$@")
    rc=$?
    set -e
    local wall
    wall=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
    echo "=== $name: exit $rc, ${wall} s"
    RESULTS+=("$(printf '%-8s exit %3d  %7s s' "$name" "$rc" "$wall")")
    if ((rc != 0)); then FAILED+=("$name"); fi
    return 0
}

unpack() {
    [[ -f $ARCHIVE ]] || { echo "no $ARCHIVE: build it with bench/gpu_deps.sh and carry it"; return 1; }
    rm -rf "$SITE"
    mkdir -p "$SITE"
    timeout 120 tar -C "$SITE" -xJf "$ARCHIVE"
    du -sh "$SITE"
    sed -n '1,2p' "$SITE/AUGSEARCH_GPU_DEPS.txt"
}

show_gpu() {
    timeout 30 nvidia-smi || echo "nvidia-smi failed (exit $?)"
    timeout 90 "$PY" - <<'EOF'
import sys

import torch

print(f"python {sys.version.split()[0]} ({sys.executable}); torch {torch.__version__}, "
      f"built for CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}")
if not torch.cuda.is_available():
    sys.exit("torch sees no CUDA device: the cuda tests would all skip")
for i in range(torch.cuda.device_count()):
    p = torch.cuda.get_device_properties(i)
    print(f"cuda:{i} {p.name}, {p.total_memory / 2**30:.0f} GiB, capability {p.major}.{p.minor}")
EOF
}

# Checks every carried dist's requirements against what this machine has (a mismatch is printed
# as a warning: it is where an import may break), then imports the packages augsearch uses.
check_deps() {
    timeout 120 "$PY" - "$SITE" <<'EOF'
import importlib
import importlib.metadata as md
import sys

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

site = sys.argv[1]
extras = {"ray": {"tune"}}  # what pyproject asks for: ray[tune]
warnings = 0
for dist in md.distributions(path=[site]):
    name = canonicalize_name(dist.metadata["Name"])
    for text in dist.requires or []:
        req = Requirement(text)
        if req.marker and not any(req.marker.evaluate({"extra": e})
                                  for e in {"", *extras.get(name, ())}):
            continue
        try:
            found = md.version(req.name)
        except md.PackageNotFoundError:
            found = None
        if found is None or not req.specifier.contains(found, prereleases=True):
            warnings += 1
            print(f"WARNING: {name} {dist.version} needs {req}, this machine has {found}")
print(f"requirements of the carried dists: {warnings} unmet")

failed = 0
for name in ("ray", "ray.tune", "optuna", "albumentations", "mlflow", "pydantic", "cv2", "numpy"):
    try:
        module = importlib.import_module(name)
    except Exception as error:  # report every package that fails, not only the first
        failed += 1
        print(f"{name:15} FAILED to import: {type(error).__name__}: {error}")
        continue
    version = getattr(module, "__version__", "")
    where = "carried" if module.__file__.startswith(site) else "machine"
    print(f"{name:15} {version:12} {where}: {module.__file__}")
sys.exit(1 if failed else 0)
EOF
}

cuda_tests() {
    local xml=$LOGDIR/cuda-tests.xml rc
    rm -f "$xml"
    set +e
    timeout -k 10 "$TESTS_S" "$PY" -m pytest -q -p no:cacheprovider -rs -m cuda \
        --timeout "$((TESTS_S - 15))" --junitxml "$xml" tests/
    rc=$?
    set -e
    ((rc == 124 || rc == 137)) && echo "the cuda tests ran past ${TESTS_S} s and were stopped"
    ((rc == 5)) && echo "no test is marked cuda"
    # Exit 0 with every test skipped (no GPU seen) is no check at all.
    if ((rc == 0)) && ! "$PY" - "$xml" <<'EOF'
import sys
import xml.etree.ElementTree as ET

suite = ET.parse(sys.argv[1]).getroot()
suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
ran = int(suite.get("tests")) - int(suite.get("skipped"))
print(f"{ran} cuda tests ran, {suite.get('skipped')} skipped")
sys.exit(0 if ran > 0 else 1)
EOF
    then
        return 1
    fi
    return "$rc"
}

gpu_bench() {
    local left budget
    left=$((TOTAL_S - MARGIN_S - ($(date +%s) - START)))
    budget=$((left - BENCH_GRACE_S < BENCH_BUDGET_S ? left - BENCH_GRACE_S : BENCH_BUDGET_S))
    if ((budget < 30)); then
        echo "only ${left} s left of the ${TOTAL_S} s: bench/gpu.py not run"
        return 1
    fi
    [[ -f bench/gpu.py ]] || { echo "bench/gpu.py not found"; return 1; }
    local args=(--budget-s "$budget")
    if [[ -n ${OUT:-} ]]; then args+=(--out "$OUT"); fi
    if [[ -n $BENCH_DATA ]]; then args+=(--data "$BENCH_DATA"); fi
    echo "bench/gpu.py ${args[*]} (stopped at ${left} s)"
    timeout -k 10 "$left" "$PY" bench/gpu.py "${args[@]}"
}

gpu_throughput() {
    local left
    left=$((TOTAL_S - MARGIN_S - ($(date +%s) - START)))
    if ((left < THROUGHPUT_S)); then
        echo "only ${left} s left of the ${TOTAL_S} s: bench/child_throughput.py --gpu-only not run"
        return 0
    fi
    timeout -k 10 "$left" "$PY" bench/child_throughput.py --gpu-only
}

main() {
    echo "augsearch GPU check at $(git rev-parse --short HEAD 2>/dev/null || echo '?') on $(hostname)"
    step unpack unpack
    if [[ ${FAILED[*]-} == *unpack* ]]; then
        echo "cannot go on without the carried packages"
        return 1
    fi
    step gpu show_gpu
    step deps check_deps
    step tests cuda_tests
    step bench gpu_bench
    step throughput gpu_throughput
    echo
    echo "=== summary: $(($(date +%s) - START)) s in all (limit ${TOTAL_S} s)"
    printf '  %s\n' "${RESULTS[@]}"
    if ((${#FAILED[@]})); then
        echo "FAILED: ${FAILED[*]}"
        return 1
    fi
    echo "all steps passed"
}

if [[ -n ${OUT:-} ]]; then
    mkdir -p "$OUT"
    LOGDIR=$OUT
    set -o pipefail
    main 2>&1 | tee "$OUT/gpu_check.log"
else
    LOGDIR=$(mktemp -d)
    main
fi
