#!/usr/bin/env bash
# Create or reuse the Python virtualenv used by the reference tools.
#
#   tools/venv.sh            ensure the venv, print its python interpreter path on stdout
#   source tools/venv.sh     ensure the venv, set E5EMBED_PY to its python interpreter
#
# The venv lives outside the repo, at ${E5EMBED_VENV:-$HOME/.cache/e5embed/venv}.
# It holds exactly the pins in tools/requirements.txt. A stamp file inside the venv records
# the sha256 of requirements.txt plus the interpreter version; when it matches, nothing is
# installed and this script returns at once. Progress messages go to stderr, so stdout
# stays clean for `PY="$(tools/venv.sh)"`.
#
# Environment:
#   E5EMBED_VENV     venv directory (default $HOME/.cache/e5embed/venv)
#   E5EMBED_REQUIREMENTS  pins file (default tools/requirements.txt; tools/server-venv.sh
#                    passes tools/server-requirements.txt)
#   E5EMBED_VENV_IMPORTS  modules imported as a smoke test before the venv is stamped
#   E5EMBED_PYTHON   base interpreter used to create it (default: first python3.1x >= 3.11)

_e5embed_venv_ensure() (
    set -euo pipefail
    local tools_dir req venv stamp_file want_stamp base_py
    tools_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
    req="${E5EMBED_REQUIREMENTS:-$tools_dir/requirements.txt}"
    venv="${E5EMBED_VENV:-$HOME/.cache/e5embed/venv}"
    stamp_file="$venv/.e5embed-requirements.sha256"

    log() { echo "[venv] $*" >&2; }

    # Pick a base interpreter: numpy 2.4 needs Python >= 3.11.
    if [[ -n "${E5EMBED_PYTHON:-}" ]]; then
        base_py="$E5EMBED_PYTHON"
    else
        base_py=""
        for cand in python3.11 python3.12 python3.13 python3; do
            if command -v "$cand" >/dev/null 2>&1 &&
                "$cand" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
                base_py="$cand"
                break
            fi
        done
        if [[ -z "$base_py" ]]; then
            log "error: no Python >= 3.11 found (set E5EMBED_PYTHON)"
            exit 1
        fi
    fi

    # The stamp ties the venv to this requirements file and this interpreter version.
    want_stamp="$(
        {
            cat "$req"
            "$base_py" -c 'import sys; print(sys.version)'
        } | sha256sum | cut -d' ' -f1
    )"

    # Fast path: already installed with these exact pins.
    if [[ -x "$venv/bin/python" && -f "$stamp_file" && "$(cat "$stamp_file")" == "$want_stamp" ]]; then
        echo "$venv/bin/python"
        exit 0
    fi

    mkdir -p "$(dirname "$venv")"
    # Serialize concurrent installs (two tools started at once) when flock is available.
    if command -v flock >/dev/null 2>&1; then
        exec 9>"$venv.lock"
        flock 9
        # Another process may have finished the install while we waited.
        if [[ -x "$venv/bin/python" && -f "$stamp_file" && "$(cat "$stamp_file")" == "$want_stamp" ]]; then
            echo "$venv/bin/python"
            exit 0
        fi
    fi

    # Recreate when the venv is missing, broken, or built from another interpreter version.
    if [[ ! -x "$venv/bin/python" ]] ||
        [[ "$("$venv/bin/python" -c 'import sys; print(sys.version)' 2>/dev/null || true)" != \
            "$("$base_py" -c 'import sys; print(sys.version)')" ]]; then
        log "creating $venv with $("$base_py" --version 2>&1)"
        rm -rf "$venv"
        "$base_py" -m venv "$venv"
    fi

    log "installing pinned packages from tools/$(basename "$req")"
    rm -f "$stamp_file"
    # Wheels only: a fresh machine must not need a compiler for these.
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        --only-binary ':all:' -r "$req" >&2
    # Smoke-test the imports before stamping, so a half-installed venv is never reused.
    "$venv/bin/python" -c "import ${E5EMBED_VENV_IMPORTS:-onnxruntime, onnx, numpy, tokenizers, safetensors, openvino}" >&2
    echo "$want_stamp" >"$stamp_file"
    log "ready: $venv"
    echo "$venv/bin/python"
)

if [[ "${BASH_SOURCE[0]}" != "$0" ]]; then
    # Sourced: export the interpreter path for the caller.
    if E5EMBED_PY="$(_e5embed_venv_ensure)"; then
        export E5EMBED_PY
    else
        echo "[venv] failed" >&2
        return 1
    fi
else
    _e5embed_venv_ensure
fi
