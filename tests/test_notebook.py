"""experiments/colab.ipynb runs end to end on CPU with the tiny study preset.

The notebook is executed cell by cell in a fresh Python process (no Jupyter
needed): cells tagged ``colab-only`` (installation) are skipped and the
``parameters`` cell is replaced by a tiny run with two arms.
"""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(ROOT, "experiments", "colab.ipynb")


def _cells(notebook):
  for cell in notebook["cells"]:
    if cell["cell_type"] == "code":
      yield set(cell["metadata"].get("tags", ())), "".join(cell["source"])


def test_notebook_is_valid_and_tagged():
  nb = json.load(open(NOTEBOOK))
  assert nb["nbformat"] == 4
  tags = [t for t, _ in _cells(nb)]
  assert sum("parameters" in t for t in tags) == 1
  assert any("colab-only" in t for t in tags)
  for _, src in _cells(nb):
    compile(src, NOTEBOOK, "exec")  # every code cell is plain Python (no ! magics)


def test_notebook_runs_tiny_study(tmp_path, real_data_dir):
  nb = json.load(open(NOTEBOOK))
  params = (f"PRESET = 'tiny'\nWORKDIR = {str(tmp_path / 'study')!r}\n"
            "ARMS = ('baseline', 'classical')\nDISTRIBUTED = False\n")
  script = []
  for tags, src in _cells(nb):
    if "colab-only" in tags:
      continue
    script.append(params if "parameters" in tags else src)
  path = tmp_path / "notebook.py"
  path.write_text("\n".join(script) + "\nprint('NOTEBOOK-DONE', sorted(summary))\n")
  env = dict(os.environ, DREAMJAX_DATA_DIR=str(real_data_dir), MPLBACKEND="Agg")
  res = subprocess.run([sys.executable, str(path)], cwd=tmp_path, env=env, capture_output=True,
                       text=True, timeout=900)
  out = res.stdout + res.stderr
  assert res.returncode == 0, out[-3000:]
  assert "NOTEBOOK-DONE" in res.stdout, out[-3000:]
  assert (tmp_path / "study").is_dir()
