#!/usr/bin/env bash
# Create or reuse the Python virtualenv of the Python package's tests and tools/pybench.
#
#   tools/python-venv.sh     ensure the venv, print its python interpreter path on stdout
#
# tools/venv.sh does the work (interpreter choice, stamp, lock, wheels-only install) with the
# pins in python/requirements-test.txt, in ${E5EMBED_PYTHON_VENV:-$HOME/.cache/e5embed/venv-python}.
# The e5embed package itself is not among the pins: tools/test-python builds and installs it.
set -euo pipefail
tools_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
E5EMBED_VENV="${E5EMBED_PYTHON_VENV:-$HOME/.cache/e5embed/venv-python}" \
    E5EMBED_REQUIREMENTS="$tools_dir/../python/requirements-test.txt" \
    E5EMBED_VENV_IMPORTS="maturin, pytest, numpy, langchain_core, ray, pyarrow, fastembed, onnxruntime, tokenizers" \
    exec "$tools_dir/venv.sh"
