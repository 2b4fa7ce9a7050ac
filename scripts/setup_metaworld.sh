#!/usr/bin/env bash
# Create .venv-metaworld/, an overlay venv over .venv/ (scripts/setup.sh runs this at its end).
#
# Meta-World 3.1.1 (the 'metaworld' extra) pins mujoco==3.3.0, and its envs do not build on the
# MuJoCo 4 that .venv has for the rest of esmaml. So .venv-metaworld's own site-packages hold
# metaworld, mujoco 3.3.0 and the few packages they need that .venv lacks (about 90 MB, seconds
# to install), and a .pth file puts .venv's site-packages after them, .venv's .pth files (the
# editable esmaml) included: torch, gymnasium, wandb and esmaml come from .venv. pip sees .venv's
# packages through that .pth and never uninstalls outside its own environment, so .venv keeps
# its mujoco. Run Meta-World configs with .venv-metaworld/bin/python -m esmaml.cli ...
# Idempotent: a stamp keyed on the setup scripts and pyproject.toml.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
venv="$root/.venv"
overlay="$root/.venv-metaworld"
key="$(cat scripts/setup.sh scripts/setup_metaworld.sh pyproject.toml | sha256sum | cut -c1-16)"
stamp="$overlay/.esmaml-setup-$key"
if [[ -f "$stamp" ]]; then
    exit 0
fi
if [[ ! -x "$venv/bin/python" ]]; then
    echo "[setup] $venv is missing: run scripts/setup.sh" >&2
    exit 1
fi
echo "[setup] creating $overlay (Meta-World on mujoco 3.3.0) over $venv" >&2
# .venv's python makes a venv of .venv's base interpreter: the same Python, the same ABI.
[[ -x "$overlay/bin/python" ]] || "$venv/bin/python" -m venv "$overlay"
purelib='import sysconfig; print(sysconfig.get_paths()["purelib"])'
base_site="$("$venv/bin/python" -c "$purelib")"
overlay_site="$("$overlay/bin/python" -c "$purelib")"
echo "import site; site.addsitedir('$base_site')" >"$overlay_site/esmaml-base-venv.pth"
"$overlay/bin/python" -m pip --disable-pip-version-check -q install "metaworld==3.1.1" "mujoco==3.3.0"
"$overlay/bin/python" -c "import metaworld, mujoco, torch; assert mujoco.__version__ == '3.3.0'"
touch "$stamp"
echo "[setup] done: $overlay" >&2
