#!/usr/bin/env bash
# Create or reuse the Python virtualenv of the server's tests and load test.
#
#   tools/server-venv.sh     ensure the venv, print its python interpreter path on stdout
#
# tools/venv.sh does the work (interpreter choice, stamp, lock, wheels-only install) with the
# server's pins, tools/server-requirements.txt, in ${E5EMBED_SERVER_VENV:-$HOME/.cache/e5embed/venv-server}.
set -euo pipefail
tools_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
E5EMBED_VENV="${E5EMBED_SERVER_VENV:-$HOME/.cache/e5embed/venv-server}" \
    E5EMBED_REQUIREMENTS="$tools_dir/server-requirements.txt" \
    E5EMBED_VENV_IMPORTS="openai, pytest, schemathesis, numpy, matplotlib" \
    exec "$tools_dir/venv.sh"
