#!/usr/bin/env bash
# dreamjax launcher: set up (virtualenv, package, dataset), then run a job.
#
#   ./launch.sh                 the main job (the first study: the Deep Dream claims) on Fashion-MNIST
#   ./launch.sh test [ARGS]     the whole test suite (pytest ARGS)
#   ./launch.sh NAME [FLAGS]    experiments/NAME.py with absl FLAGS
#
# Jobs run in the folder launch.sh was called from: relative paths in FLAGS
# (--workdir, --config FILE, augmented-set files) are that folder's, as they
# are for `dreamjax NAME`. The set-up itself works in the repository.
#
# Environment: DREAMJAX_VENV (default .venv), PYTHON (default python3),
# DREAMJAX_DATA_DIR (a folder with the four Fashion-MNIST IDX files),
# DREAMJAX_CONSTRAINTS (default constraints.txt: the tested versions of every
# dependency; set it empty to take the newest versions pyproject.toml allows).
set -euo pipefail
CALLER_DIR=$PWD
cd "$(dirname "$0")"
ROOT=$PWD

PYTHON=${PYTHON:-python3}
VENV=${DREAMJAX_VENV:-.venv}
DATA_DIR=/usr/share/datasets/fashion-mnist

say() { printf '[launch] %s\n' "$*" >&2; }

setup_venv() {
  if [ ! -x "$VENV/bin/python" ]; then
    say "creating virtual environment $VENV"
    "$PYTHON" -m venv "$VENV"
  fi
  # The tested versions, so that a workdir gives the same numbers on another
  # machine or next month (a workdir records the versions it was made with).
  local constraints=${DREAMJAX_CONSTRAINTS-constraints.txt}
  local pins=()
  if [ -n "$constraints" ]; then
    [ -f "$constraints" ] || { say "DREAMJAX_CONSTRAINTS=$constraints: no such file."; exit 1; }
    pins=(-c "$constraints")
  fi
  # Reinstall only when the dependency list or the pinned versions changed.
  local stamp="$VENV/.dreamjax-installed"
  local want
  want=$( { cat pyproject.toml; [ -z "$constraints" ] || cat "$constraints"; } \
          | sha256sum | cut -d' ' -f1)
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    say "installing dreamjax and its dependencies into $VENV${constraints:+ (versions from $constraints)}"
    "$VENV/bin/python" -m pip install -q --upgrade pip
    "$VENV/bin/python" -m pip install -q ${pins[@]+"${pins[@]}"} -e ".[test]"
    echo "$want" > "$stamp"
  fi
}

IDX_FILES="train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte"

has_idx_files() {  # all four, each raw or gzipped
  local f
  for f in $IDX_FILES; do
    [ -f "$1/$f" ] || [ -f "$1/$f.gz" ] || return 1
  done
}

have_data() {
  has_idx_files "$DATA_DIR"
}

setup_data() {
  # A folder the user named is the only place dreamjax reads (as in Python):
  # refuse it here rather than install a dataset that would not be read.
  if [ -n "${DREAMJAX_DATA_DIR:-}" ]; then
    has_idx_files "$DREAMJAX_DATA_DIR" && return 0
    say "DREAMJAX_DATA_DIR=$DREAMJAX_DATA_DIR does not hold the four Fashion-MNIST IDX files"
    say "($IDX_FILES, each may be .gz). Put them there, point DREAMJAX_DATA_DIR at the"
    say "folder that holds them, or unset it to use $DATA_DIR."
    exit 1
  fi
  have_data && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "installing Debian's dataset-fashion-mnist (Fashion-MNIST IDX files)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q dataset-fashion-mnist >/dev/null \
      || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive \
           apt-get install -y -q dataset-fashion-mnist >/dev/null; }
  fi
  if ! have_data; then
    say "Fashion-MNIST is missing (looked in $DATA_DIR; DREAMJAX_DATA_DIR is unset)."
    say "Fix: as root run 'apt-get install dataset-fashion-mnist', or put the four IDX"
    say "files in a folder and export DREAMJAX_DATA_DIR=/that/folder."
    exit 1
  fi
}

setup_venv
setup_data
PY=$(cd "$VENV" && pwd)/bin/python

job=${1:-main}
[ $# -gt 0 ] && shift
case "$job" in
  test)
    exec "$PY" -m pytest -q "$@"
    ;;
  main)
    cd "$CALLER_DIR"
    exec "$PY" "$ROOT/experiments/study.py" "$@"
    ;;
  *)
    if [ -f "experiments/$job.py" ]; then
      cd "$CALLER_DIR"
      exec "$PY" "$ROOT/experiments/$job.py" "$@"
    fi
    say "unknown job '$job': use 'test', nothing (the main job), or one of:"
    ls experiments/*.py | sed 's|experiments/||; s|\.py$||' | sed 's/^/[launch]   /' >&2
    exit 2
    ;;
esac
