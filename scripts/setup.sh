#!/usr/bin/env bash
# Create .venv/ at the repository root with everything esmaml needs, extras included, then the
# overlay venv .venv-metaworld/ for the Meta-World extra (scripts/setup_metaworld.sh).
# Idempotent: a stamp keyed on this script and pyproject.toml makes a second run return at once.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
venv="$root/.venv"
py="${ESMAML_PYTHON:-python3.11}"
command -v "$py" >/dev/null || py=python3
key="$(cat scripts/setup.sh pyproject.toml | sha256sum | cut -c1-16)"
stamp="$venv/.esmaml-setup-$key"
if [[ -f "$stamp" ]]; then
    exec bash scripts/setup_metaworld.sh
fi
echo "[setup] creating $venv with $("$py" --version)" >&2
[[ -x "$venv/bin/python" ]] || "$py" -m venv "$venv"
pip=("$venv/bin/python" -m pip --disable-pip-version-check -q)
"${pip[@]}" install --upgrade pip
# torch and torchvision first: the CPU machines here serve them from local files.
"${pip[@]}" install "torch==2.14.1" "torchvision==0.29.1"
"${pip[@]}" install cython "setuptools<81" wheel

# learn2learn 0.2.0: its shipped C files come from an old Cython that fails on Python 3.11, so
# regenerate them. Installed without its declared requirements (gsutil, qpth -> numpy<2), with the
# ones its import needs named in the 'learn2learn' extra instead.
if ! "$venv/bin/python" -c "import importlib.metadata as m; m.version('learn2learn')" 2>/dev/null; then
    build="$(mktemp -d)"
    trap 'rm -rf "$build"' EXIT
    "${pip[@]}" download --no-deps --no-binary learn2learn "learn2learn==0.2.0" -d "$build"
    tar -xzf "$build"/learn2learn-0.2.0.tar.gz -C "$build"
    src="$build/learn2learn-0.2.0"
    for pyx in meta_dataset task_dataset transforms; do
        "$venv/bin/cython" -3 "$src/learn2learn/data/$pyx.pyx"
    done
    "${pip[@]}" install --no-build-isolation --no-deps "$src"
fi
"${pip[@]}" install -e ".[all]" gym==0.26.2 torchvision==0.29.1 scipy requests
touch "$stamp"
echo "[setup] done" >&2
exec bash scripts/setup_metaworld.sh
