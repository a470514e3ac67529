#!/usr/bin/env bash
# dreamjax launcher: set up (virtualenv, package, dataset), then run a job.
#
#   ./launch.sh                 the main job (the quick study) on Fashion-MNIST
#   ./launch.sh test [ARGS]     the whole test suite (pytest ARGS)
#   ./launch.sh NAME [FLAGS]    experiments/NAME.py with absl FLAGS
#
# Environment: DREAMJAX_VENV (default .venv), PYTHON (default python3),
# DREAMJAX_DATA_DIR (a folder with the four Fashion-MNIST IDX files).
set -euo pipefail
cd "$(dirname "$0")"

PYTHON=${PYTHON:-python3}
VENV=${DREAMJAX_VENV:-.venv}
DATA_DIR=/usr/share/datasets/fashion-mnist

say() { printf '[launch] %s\n' "$*" >&2; }

setup_venv() {
  if [ ! -x "$VENV/bin/python" ]; then
    say "creating virtual environment $VENV"
    "$PYTHON" -m venv "$VENV"
  fi
  # Reinstall only when the dependency list changed.
  local stamp="$VENV/.dreamjax-installed"
  local want
  want=$(sha256sum pyproject.toml | cut -d' ' -f1)
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    say "installing dreamjax and its dependencies into $VENV"
    "$VENV/bin/python" -m pip install -q --upgrade pip
    "$VENV/bin/python" -m pip install -q -e ".[test]"
    echo "$want" > "$stamp"
  fi
}

have_data() {
  local d
  for d in "${DREAMJAX_DATA_DIR:-}" "$DATA_DIR"; do
    [ -n "$d" ] || continue
    if ls "$d"/train-images-idx3-ubyte* "$d"/t10k-labels-idx1-ubyte* >/dev/null 2>&1; then
      return 0
    fi
  done
  return 1
}

setup_data() {
  have_data && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "installing Debian's dataset-fashion-mnist (Fashion-MNIST IDX files)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q dataset-fashion-mnist >/dev/null \
      || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive \
           apt-get install -y -q dataset-fashion-mnist >/dev/null; }
  fi
  if ! have_data; then
    say "Fashion-MNIST is missing (looked in ${DREAMJAX_DATA_DIR:-\$DREAMJAX_DATA_DIR unset} and $DATA_DIR)."
    say "Fix: as root run 'apt-get install dataset-fashion-mnist', or put the four IDX"
    say "files in a folder and export DREAMJAX_DATA_DIR=/that/folder."
    exit 1
  fi
}

setup_venv
setup_data

job=${1:-main}
[ $# -gt 0 ] && shift
case "$job" in
  test)
    exec "$VENV/bin/python" -m pytest -q "$@"
    ;;
  main)
    exec "$VENV/bin/python" experiments/study.py "$@"
    ;;
  *)
    if [ -f "experiments/$job.py" ]; then
      exec "$VENV/bin/python" "experiments/$job.py" "$@"
    fi
    say "unknown job '$job': use 'test', nothing (the main job), or one of:"
    ls experiments/*.py | sed 's|experiments/||; s|\.py$||' | sed 's/^/[launch]   /' >&2
    exit 2
    ;;
esac
