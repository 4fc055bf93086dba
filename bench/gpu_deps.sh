#!/usr/bin/env bash
# Builds .gpu-deps/augsearch-gpu-deps.tar.xz: augsearch's dependencies that the project's bare
# GPU machine lacks (Ray Tune, Optuna, albumentations, MLflow, pydantic and their needs), as
# x86-64 CPython 3.12 wheels unpacked into one folder, pruned and stripped to fit under 40 MB.
# That machine (docs/GPU.md) has Python 3.12, CUDA, torch and the packages in ON_MACHINE below,
# and reaches no package index; bench/gpu_check.sh unpacks the archive there.
#
#   bash bench/gpu_deps.sh            # needs python3.12 with pip, strip, xz and PyPI
#   PYTHON=/path/to/python3.12 bash bench/gpu_deps.sh
#
# Versions are what pyproject.toml asks (its dependencies and the `test` extra, less ON_MACHINE,
# ruff and the docs site's mkdocs); the versions pip picked are listed in the archive's AUGSEARCH_GPU_DEPS.txt.
set -euo pipefail

cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.12}
DEST=.gpu-deps
ARCHIVE=$DEST/augsearch-gpu-deps.tar.xz
MAX_MB=${MAX_MB:-40}  # decimal MB; the device tool carries at most 64 MiB with the repo

# The GPU machine's own packages (/work/.library/device/KINDS.md, "Python packages already there",
# read 2026-11-17). pip pulls many of them in as dependencies; they are deleted from the archive so
# the machine's builds (numpy 2.5, torch 2.11+cu130, opencv, ...) are the ones imported. Never carry
# torch or nvidia-*: PYTHONPATH comes first on sys.path and would shadow the CUDA build.
ON_MACHINE="absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio
attrs botorch build certifi charset-normalizer chex click cloudpickle cmake colorama contourpy
coverage cuda-bindings cuda-core cuda-pathfinder cuda-toolkit cupy-cuda13x cycler cython diffrax
e3nn einops equinox etils execnet filelock flatbuffers flax fonttools formulaic frozenlist fsspec
gpytorch grpcio h11 h5py hf-xet httpcore httpx huggingface-hub humanize hypothesis idna imageio
iniconfig interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin jaxlib jaxtyping jinja2 joblib
kiwisolver lazy-loader lightning lightning-utilities linear-operator lineax llvmlite lxml markdown
markdown-it-py markupsafe matplotlib mdurl meson ml-dtypes mpi4py mpmath msgpack multidict
multipledispatch mypy-extensions nanobind narwhals networkx ninja numba numba-cuda numpy numpyro
nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc nvidia-cuda-runtime nvidia-cudnn-cu13
nvidia-cufft nvidia-cufile nvidia-curand nvidia-cusolver nvidia-cusparse nvidia-cusparselt-cu13
nvidia-ml-py nvidia-nccl-cu13 nvidia-nvjitlink nvidia-nvshmem-cu13 nvidia-nvtx onnx onnx-ir
onnxruntime onnxscript opencv-python-headless optax opt-einsum opt-einsum-fx optimistix
orbax-checkpoint packaging pandas pathspec patsy peft pillow pip pluggy portalocker
prometheus-client propcache protobuf psutil pyarrow pybind11 py-cpuinfo pygments pyparsing
pyproject-hooks pyre-extensions pytest pytest-benchmark pytest-cov pytest-mock pytest-timeout
pytest-xdist python-dateutil pytorch-lightning pyyaml regex requests rich sacrebleu safetensors
scikit-build-core scikit-image scikit-learn scipy seaborn sentencepiece sentence-transformers
setuptools shellingham simplejson six sortedcontainers statsmodels sympy tabulate tensorboard
tensorboard-data-server tensorstore threadpoolctl tifffile tiktoken timm tokenizers toolz torch
torchaudio torchdiffeq torch-geometric torchmetrics torchvision tqdm transformers treescope triton
typer typing-extensions typing-inspect urllib3 uvloop wadler-lindig werkzeug wheel wrapt
xarray xxhash yarl zipp"
# On the machine, but carried anyway: pydantic 2.14 needs typing-extensions>=4.16 and the
# machine's version is unknown; typing_extensions only ever adds names, so a newer one shadowing
# the machine's is safe (one 165 kB file).
KEEP_ANYWAY="typing-extensions"
# Parts of Ray and MLflow that augsearch never loads: Ray's Java jars, RLlib, Serve, its LLM
# library and the dashboard's web front end; MLflow's web UI bundle (the tracking store, the
# server and `mlflow ui`'s API still work; the UI page itself is left out: set KEEP_MLFLOW_UI=1
# to keep it, about 4.7 MB more in the archive).
PRUNE="ray/jars ray/rllib ray/serve ray/llm ray/dashboard/client/build"
if [[ ${KEEP_MLFLOW_UI:-0} != 1 ]]; then PRUNE="$PRUNE mlflow/server/js/build"; fi

mb() { du -sm "$1" | cut -f1; }

ver=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null) ||
    { echo "gpu_deps: cannot run $PY; set PYTHON to a CPython 3.12 with pip" >&2; exit 2; }
# pip evaluates environment markers against the interpreter it runs in, so it must be 3.12 too.
[[ $ver == 3.12 ]] || { echo "gpu_deps: $PY is Python $ver; the GPU machine has 3.12" >&2; exit 2; }
for tool in strip xz tar; do
    command -v $tool >/dev/null || { echo "gpu_deps: $tool not found" >&2; exit 2; }
done

mapfile -t REQS < <(ON_MACHINE="$ON_MACHINE" "$PY" - <<'EOF'
import os, re, tomllib
norm = lambda n: re.sub(r"[-_.]+", "-", n).lower()
machine = {norm(n) for n in os.environ["ON_MACHINE"].split()}
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
for req in project["dependencies"] + project["optional-dependencies"]["test"]:
    name = norm(re.match(r"[A-Za-z0-9._-]+", req).group())
    if name not in machine and name not in ("ruff", "mkdocs", "mkdocs-material"):
        print(req)
EOF
)
((${#REQS[@]})) || { echo "gpu_deps: could not read the requirements from pyproject.toml" >&2; exit 1; }
echo "gpu_deps: carrying ${REQS[*]}"

rm -f "$ARCHIVE"
mkdir -p "$DEST"
# Unpacked in a temporary folder, so that .gpu-deps holds only the archive and pip's log.
SITE=$(mktemp -d "${TMPDIR:-/tmp}/augsearch-gpu-site.XXXXXX")
trap 'rm -rf "$SITE"' EXIT
PLATFORMS=()
for p in manylinux2014 manylinux_2_17 manylinux_2_24 manylinux_2_27 manylinux_2_28; do
    PLATFORMS+=(--platform "${p}_x86_64")
done
echo "gpu_deps: pip install --target $SITE (log: $DEST/pip.log; a few minutes)"
if ! "$PY" -m pip install --target "$SITE" --only-binary=:all: --no-compile \
        --python-version 3.12 --implementation cp "${PLATFORMS[@]}" \
        "${REQS[@]}" >"$DEST/pip.log" 2>&1; then
    grep -v "is ignored: it is neither a file nor a directory" "$DEST/pip.log" | tail -30 >&2
    exit 1
fi
echo "gpu_deps: installed $(mb "$SITE") MB"

# Delete the dists the machine already has (every file in each one's RECORD), and write the
# manifest that bench/gpu_check.sh prints.
ON_MACHINE="$ON_MACHINE" KEEP_ANYWAY="$KEEP_ANYWAY" "$PY" - "$SITE" "${REQS[@]}" <<'EOF'
import email.parser, os, pathlib, re, shutil, sys, datetime
norm = lambda n: re.sub(r"[-_.]+", "-", n).lower()
machine = {norm(n) for n in os.environ["ON_MACHINE"].split()}
keep = {norm(n) for n in os.environ["KEEP_ANYWAY"].split()}
site = pathlib.Path(sys.argv[1])
carried, deleted = [], []
for info in sorted(site.glob("*.dist-info")):
    meta = email.parser.Parser().parsestr((info / "METADATA").read_text())
    name, version = norm(meta["Name"]), meta["Version"]
    if name in keep or name not in machine:
        carried.append(f"{name}=={version}")
        continue
    deleted.append(f"{name}=={version}")
    for line in (info / "RECORD").read_text().splitlines():
        rel = line.rsplit(",", 2)[0]
        # pip --target records scripts and data as ../../bin/NAME, ../../share/... and puts
        # them in SITE/bin, SITE/share
        path = site / (rel[len("../../"):] if rel.startswith("../../") else rel)
        if site.resolve() not in path.resolve().parents:
            sys.exit(f"gpu_deps: {info.name} RECORD names {rel}, outside {site}")
        if path.is_file() or path.is_symlink():
            path.unlink()
    shutil.rmtree(info, ignore_errors=True)
for d in sorted(site.rglob("*"), key=lambda p: -len(p.parts)):  # folders left empty
    if d.is_dir() and not any(d.iterdir()):
        d.rmdir()
(site / "AUGSEARCH_GPU_DEPS.txt").write_text(
    f"built {datetime.date.today()} for CPython 3.12 x86-64 by bench/gpu_deps.sh\n"
    f"asked: {' '.join(sys.argv[2:])}\n\n"
    f"carried ({len(carried)}):\n  " + "\n  ".join(carried) + "\n\n"
    f"resolved but left to the machine's own ({len(deleted)}):\n  " + "\n  ".join(deleted) + "\n"
)
print(f"gpu_deps: {len(carried)} dists carried, {len(deleted)} left to the machine")
EOF
echo "gpu_deps: after deleting the machine's packages $(mb "$SITE") MB"

for p in $PRUNE; do
    [[ -e $SITE/$p ]] || { echo "gpu_deps: $p not found to prune (layout changed?)" >&2; exit 1; }
    rm -rf "${SITE:?}/$p"
done
find "$SITE" -name __pycache__ -type d -prune -exec rm -rf {} +
echo "gpu_deps: after pruning $PRUNE: $(mb "$SITE") MB"

n=0
while IFS= read -r -d '' f; do
    strip --strip-debug "$f"
    n=$((n + 1))
done < <(find "$SITE" -type f \( -name '*.so' -o -name '*.so.*' \
    -o -path '*/ray/core/src/ray/gcs/gcs_server' -o -path '*/ray/core/src/ray/raylet/raylet' \) -print0)
echo "gpu_deps: stripped debug info from $n files: $(mb "$SITE") MB"

# Console scripts point at this machine's interpreter; point them at the one on PATH there.
if [[ -d $SITE/bin ]]; then
    for f in "$SITE"/bin/*; do
        if head -c 2 "$f" | grep -q '^#!'; then sed -i '1s|^#!.*python.*$|#!/usr/bin/env python3|' "$f"; fi
    done
fi

echo "gpu_deps: compressing (xz -9, a few minutes)"
tar -C "$SITE" -cf - . | xz -9 -T1 >"$ARCHIVE"
bytes=$(stat -c %s "$ARCHIVE")
size=$(awk -v b="$bytes" 'BEGIN { printf "%.1f MB", b / 1e6 }')
echo "gpu_deps: $ARCHIVE: $size ($bytes bytes), $(mb "$SITE") MB unpacked"
if ((bytes > MAX_MB * 1000 * 1000)); then
    echo "gpu_deps: over the ${MAX_MB} MB limit" >&2
    exit 1
fi
