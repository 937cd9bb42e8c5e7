#!/usr/bin/env bash
# Download (here, through pip) the wheels the GPU check needs on a machine that has torch + transformers +
# accelerate but no lm_eval and no network: lm_eval itself (--no-deps; the check imports only
# lm_eval.models.huggingface and lm_eval.api.instance, which need no `datasets`/`evaluate`) and requests & co.
# (lm_eval.utils imports requests; newer huggingface_hub no longer depends on it). All are pure-python
# (py3-none-any), so the GPU machine's Python version does not matter; PY_VERSION/PLATFORM only steer pip's
# resolver (default: cp312, manylinux x86_64 — the assumed GPU python; override if known).
#   bench/gpu_wheels.sh            -> bench/wheels/*.whl and their total size
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
PY_VERSION=${PY_VERSION:-3.12}
PLATFORM=${PLATFORM:-manylinux2014_x86_64}
LM_EVAL_VERSION=${LM_EVAL_VERSION:-$($PY -c 'from importlib.metadata import version; print(version("lm_eval"))' 2>/dev/null || echo 0.4.13)}
DEST=bench/wheels
mkdir -p "$DEST"
rm -f "$DEST"/*.whl
# charset_normalizer ships a py3-none-any wheel next to its compiled ones; --platform any picks it.
"$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version "$PY_VERSION" --platform any \
    --implementation py -d "$DEST" \
    "lm_eval==$LM_EVAL_VERSION" requests charset_normalizer idna urllib3 certifi
for w in "$DEST"/*.whl; do
  case "$w" in *-none-any.whl) ;; *) echo "error: $w is not pure-python" >&2; exit 1 ;; esac
done
ls -l "$DEST"/*.whl | awk '{printf "%10d  %s\n", $5, $9}'
total=$(du -cb "$DEST"/*.whl | tail -1 | cut -f1)
echo "total $(( total / 1024 )) KiB in $(ls "$DEST"/*.whl | wc -l) wheels (for python $PY_VERSION / $PLATFORM; all py3-none-any)"
