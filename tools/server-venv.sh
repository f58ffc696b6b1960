#!/usr/bin/env bash
# Create or reuse the Python virtualenv of the server's tests and load test.
#
#   tools/server-venv.sh     ensure the venv, print its python interpreter path on stdout
#
# The venv lives outside the repo, at ${E5EMBED_SERVER_VENV:-$HOME/.cache/e5embed/venv-server},
# and holds exactly the pins of tools/server-requirements.txt (transitive ones included). A
# stamp of the file's sha256 plus the interpreter version makes reuse instant. Progress goes to
# stderr, so `PY="$(tools/server-venv.sh)"` works.
#
# Environment:
#   E5EMBED_SERVER_VENV  venv directory
#   E5EMBED_PYTHON       base interpreter (default: first python3.1x >= 3.11)
set -euo pipefail
tools_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
req="$tools_dir/server-requirements.txt"
venv="${E5EMBED_SERVER_VENV:-$HOME/.cache/e5embed/venv-server}"
stamp_file="$venv/.e5embed-requirements.sha256"
log() { echo "[server-venv] $*" >&2; }

base_py="${E5EMBED_PYTHON:-}"
if [[ -z "$base_py" ]]; then
    for cand in python3.11 python3.12 python3.13 python3; do
        if command -v "$cand" >/dev/null 2>&1 &&
            "$cand" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
            base_py="$cand"
            break
        fi
    done
fi
[[ -n "$base_py" ]] || { log "error: no Python >= 3.11 found (set E5EMBED_PYTHON)"; exit 1; }

want_stamp="$({ cat "$req"; "$base_py" -c 'import sys; print(sys.version)'; } | sha256sum | cut -d' ' -f1)"
ready() { [[ -x "$venv/bin/python" && -f "$stamp_file" && "$(cat "$stamp_file")" == "$want_stamp" ]]; }
if ready; then echo "$venv/bin/python"; exit 0; fi

mkdir -p "$(dirname "$venv")"
exec 9>"$venv.lock"
flock 9
if ready; then echo "$venv/bin/python"; exit 0; fi
if [[ ! -x "$venv/bin/python" ]]; then
    log "creating $venv with $("$base_py" --version 2>&1)"
    "$base_py" -m venv "$venv"
fi
log "installing pinned packages from tools/server-requirements.txt"
rm -f "$stamp_file"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --only-binary ':all:' -r "$req" >&2
"$venv/bin/python" -c 'import openai, pytest, schemathesis, numpy, matplotlib' >&2
echo "$want_stamp" >"$stamp_file"
log "ready: $venv"
echo "$venv/bin/python"
