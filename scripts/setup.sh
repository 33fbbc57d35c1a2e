#!/usr/bin/env bash
# Creates (or reuses) the virtual environment .venv and installs the project with its pinned dependencies.
# Re-running it is cheap: it installs again only when pyproject.toml changed since the last install.
# --quick: install nothing (say whether an install is due), then check the environment as usual.
set -euo pipefail
quick=${1:-}
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  if [ "${quick}" = --quick ]; then echo "setup: --quick: no .venv to check" >&2; exit 1; fi
  echo "setup: creating .venv with $($python --version)"
  "$python" -m venv .venv
fi
stamp=.venv/.textwsss-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  if [ "$quick" = --quick ]; then
    echo "setup: --quick: an install is due (stamp $stamp missing or older than pyproject.toml); not installing"
  else
    echo "setup: installing the project and its pinned dependencies (first time: several minutes)"
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q -e .
    touch "$stamp"
  fi
fi
.venv/bin/python -c "import torch, torchvision, open_clip, pydensecrf.densecrf, dvc, dvclive" \
  || { echo "setup: the environment is broken; remove .venv and run again" >&2; exit 1; }
echo "setup: ready (.venv, torch $(.venv/bin/python -c 'import torch; print(torch.__version__)'))"
