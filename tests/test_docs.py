"""The README and docs/ say what the code does: links resolve, every arm is documented."""

import os
import re

from conftest import REPO
from dreamjax.configs import arms
from dreamjax.study import claims


def _markdown_files():
  yield os.path.join(REPO, "README.md")
  docs = os.path.join(REPO, "docs")
  for name in sorted(os.listdir(docs)):
    if name.endswith(".md"):
      yield os.path.join(docs, name)
  yield os.path.join(REPO, "benchmarks", "README.md")


def test_readme_is_one_page():
  with open(os.path.join(REPO, "README.md")) as f:
    assert len(f.read().splitlines()) <= 150


def test_relative_links_resolve():
  broken = []
  for path in _markdown_files():
    with open(path) as f:
      text = f.read()
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
      if "://" in target:
        continue
      if not os.path.exists(os.path.join(os.path.dirname(path), target)):
        broken.append(f"{os.path.relpath(path, REPO)} -> {target}")
  assert not broken, broken


def test_protocol_arm_table_is_the_registry():
  """docs/protocol.md's arm table names every registered arm once, with its group and kind."""
  with open(os.path.join(REPO, "docs", "protocol.md")) as f:
    text = f.read()
  table = text[text.index("| arm | group | kind |"):]
  table = table[:table.index("\n\n")]
  seen = []
  for row in table.splitlines()[2:]:
    names_cell, group, kind = (c.strip() for c in row.strip("|").split("|")[:3])
    for name in re.findall(r"`([^`]+)`", names_cell):
      assert name in arms.REGISTRY, f"protocol.md names an arm the registry lacks: {name}"
      assert (arms.get(name).group, arms.get(name).kind) == (group, kind), name
      seen.append(name)
  assert sorted(seen) == sorted(arms.names())


def test_protocol_claims_table_names_only_arms_the_rule_reads():
  with open(os.path.join(REPO, "docs", "protocol.md")) as f:
    text = f.read()
  for cid in claims.CLAIMS:
    row = next(l for l in text.splitlines() if l.startswith(f"| {cid} |"))
    named = [n for n in re.findall(r"`([^`]+)`", row) if n in arms.REGISTRY]
    assert set(named) <= set(claims.reads(cid)), (cid, set(named) - set(claims.reads(cid)))


def test_protocol_documents_every_arm_and_claim():
  with open(os.path.join(REPO, "docs", "protocol.md")) as f:
    text = f.read()
  missing = [a for a in arms.names() if f"`{a}`" not in text]
  assert not missing, f"arms missing from docs/protocol.md: {missing}"
  assert all(f"| {c} |" in text for c in claims.CLAIMS)
