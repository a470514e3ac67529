"""Every shell command the README and docs show exists, takes its flags, and the cheap ones run.

What counts as a command, in README.md, docs/*.md and benchmarks/README.md:

* each line of a fenced block tagged ``bash``, ``sh`` or ``console`` (in a
  console block, the lines after a ``$ `` prompt), a trailing backslash
  joining the next line. Every fence must name its language (``text`` for a
  block that holds no command), so no command escapes through an untagged one;
* an inline code span whose first word is in ``INLINE_PROGRAMS``, or is a
  script (``NAME.py``, ``experiments/NAME.py``, ``benchmarks/NAME.py``)
  followed by a flag; the spans in ``NOT_COMMANDS`` are text.

A line is cut into commands at ``&&``, ``||``, ``;`` and ``|``. Comments,
redirections (``2> FILE``) and leading ``VAR=value`` words are dropped and
``$(...)`` stands for one word. ``NAME`` in a command's place (``dreamjax
NAME``, ``./launch.sh NAME``, ``experiments/NAME.py``) stands for every
command; any other placeholder (``CELL``, ``WORKDIR``, ``…``) is a flag's
value or a positional word, which this checker never interprets.

Each command's program must be one of: ``./launch.sh`` and its jobs (``test``,
nothing = the study, ``NAME`` = experiments/NAME.py); ``dreamjax NAME`` for a
NAME of dreamjax/commands.py; ``python``/``python3``/``.venv/bin/python``
with a module or a script of the repository (a bare ``SCRIPT.py`` in prose
reads as ``python SCRIPT.py``); an executable file of the repository; a
program of the project's environment; or a tool in ``OUTSIDE_TOOLS``, which
says where to get it. Flags are then checked against the program's own:
a dreamjax command's absl flags as it defines them, and every
``--config.a.b`` against the ConfigDict that the command's config file (the
one ``--config FILE[:PRESET]`` names, else the command's default) returns;
another script's argparse options, read from its source; another program's
``--help``. The cheap commands also run, as ``how_to_run`` says; a command
that needs hours is checked for its flags only.
"""

import ast
import dataclasses
import functools
import hashlib
import importlib.util
import json
import os
import re
import runpy
import shlex
import subprocess
import sys

import pytest

from conftest import REPO
from dreamjax import commands
from dreamjax.study.run import cells as cells_lib

BIN = os.path.dirname(sys.executable)  # the project's environment (./launch.sh's .venv)

DOCS = ["README.md",
        *(f"docs/{n}" for n in sorted(os.listdir(os.path.join(REPO, "docs"))) if n.endswith(".md")),
        "benchmarks/README.md"]

SHELL_LANGUAGES = ("bash", "sh", "console")

# An inline code span starting with one of these is a command.
INLINE_PROGRAMS = ("./launch.sh", "dreamjax", "python", "python3", ".venv/bin/python",
                   "tensorboard", "pip", "git", "tfds", "gcloud", "apt-get", "nvidia-smi",
                   "kill", "uptime", "source", ".ci/run")

# Inline spans that start like a command but name a text.
NOT_COMMANDS = {"dreamjax error:": "how every one-line error message starts"}

# Programs the docs show that the project's environment does not provide: where
# each comes from. Their flags are not checked.
OUTSIDE_TOOLS = {
    "apt-get": "Debian's package manager (./launch.sh uses it, as root, for the dataset)",
    "benchmarks/.venv-torch/bin/pip": "the PyTorch environment benchmarks/README.md makes"
                                      " (python3 -m venv benchmarks/.venv-torch)",
    "cd": "the shell",
    "gcloud": "the Google Cloud SDK, for TPU VMs (docs/multihost.md)",
    "kill": "the shell",
    "source": "the shell (.venv/bin/activate, which ./launch.sh makes)",
    "tfds": "TensorFlow Datasets' command line: `tfds build` needs TensorFlow, which dreamjax"
            " never installs",
    "uptime": "procps",
}

# The flag of an outside tool whose value is a shell line run elsewhere: checked too.
NESTED_COMMAND_FLAGS = {"gcloud": "--command"}

PYTHONS = ("python", "python3", ".venv/bin/python")
EVERY_COMMAND = "NAME"
SCRIPT_FOLDERS = ("experiments", "benchmarks")  # where a bare NAME.py is looked up


# --- reading the docs --------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Command:
  doc: str                # the markdown file, from the repository root
  line: int
  argv: tuple[str, ...]

  def __str__(self) -> str:
    return f"{self.doc}:{self.line}: `{shlex.join(self.argv)}`"


def fences(text: str) -> list[tuple[int, str]]:
  """``(line, language)`` of every fenced block's opening line."""
  out, inside = [], False
  for i, line in enumerate(text.split("\n"), 1):
    if line.strip().startswith("```"):
      if not inside:
        out.append((i, line.strip()[3:].strip()))
      inside = not inside
  return out


def doc_commands(text: str, doc: str) -> list[Command]:
  """Every command of a markdown ``text`` (``doc``: its path, for messages and scripts)."""
  lines = text.split("\n")
  prose = list(lines)  # the text outside fences (fenced lines blanked, numbers kept)
  out, language, pending, start = [], None, "", 0
  for i, line in enumerate(lines, 1):
    stripped = line.strip()
    if stripped.startswith("```"):
      prose[i - 1] = ""
      language = stripped[3:].strip() if language is None else None
      continue
    if language is None:
      continue
    prose[i - 1] = ""
    if language not in SHELL_LANGUAGES:
      continue
    if language == "console" and not pending:
      if not stripped.startswith("$ "):
        continue  # a console block's output
      line = stripped[2:]
    if not pending:
      start = i
    if line.rstrip().endswith("\\"):
      pending += line.rstrip()[:-1] + " "
      continue
    out += split_line(pending + line, doc, start)
    pending = ""
  text = "\n".join(prose)
  for m in re.finditer(r"`([^`]+)`", text):
    span = " ".join(m.group(1).split())  # a span may run over a line break
    if span not in NOT_COMMANDS and _looks_like_command(span):
      out += split_line(span, doc, text.count("\n", 0, m.start()) + 1)
  return out


def _looks_like_command(span: str) -> bool:
  words = span.split()
  if words[0] in INLINE_PROGRAMS:
    return True
  return words[0].endswith(".py") and len(words) > 1 and words[1].startswith("-")


def split_line(line: str, doc: str, number: int) -> list[Command]:
  """The commands of one shell line."""
  line = re.sub(r"\$\([^)]*\)", "SUBSTITUTED", line)
  words = shlex.split(line, comments=True)
  parts, part = [], []
  for word in words + [";"]:
    if word in ("&&", "||", ";", "|"):
      parts.append(part)
      part = []
    else:
      part.append(word)
  out = []
  for argv in parts:
    argv = _without_redirections(argv)
    while argv and re.fullmatch(r"[A-Za-z_]\w*=.*", argv[0]):
      argv = argv[1:]  # VAR=value before the program
    if not argv:
      continue
    out.append(Command(doc, number, tuple(argv)))
    nested = NESTED_COMMAND_FLAGS.get(argv[0])
    if nested and flag_value(argv[1:], nested[2:]):
      out += split_line(flag_value(argv[1:], nested[2:]), doc, number)
  return out


def _without_redirections(words: list[str]) -> list[str]:
  out, skip = [], False
  for word in words:
    if skip:
      skip = False
    elif re.fullmatch(r"\d*>>?", word):
      skip = True  # and the file after it
    elif not re.match(r"\d*>>?\S", word):
      out.append(word)
  return out


def flag_value(args, name: str) -> str | None:
  """The value of ``--name=V`` or ``--name V`` in ``args``, if given."""
  for i, word in enumerate(args):
    flag, eq, value = word.lstrip("-").partition("=")
    if word.startswith("-") and flag == name:
      return value if eq else (args[i + 1] if i + 1 < len(args) else None)
  return None


def all_doc_commands() -> list[Command]:
  out = []
  for doc in DOCS:
    with open(os.path.join(REPO, doc)) as f:
      out += doc_commands(f.read(), doc)
  return out


# --- what a command runs ------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Target:
  """What a command runs: ``kind`` is command, script, module, file, environment or outside."""
  kind: str
  name: str                    # the dreamjax command, script path, module or program
  args: tuple[str, ...] = ()
  problem: str | None = None   # set when the program does not exist


def resolve(cmd: Command) -> list[Target]:
  """The programs a command runs (several for ``NAME``), or one Target with its problem."""
  prog, args = cmd.argv[0], cmd.argv[1:]
  if prog in OUTSIDE_TOOLS:
    return [Target("outside", prog)]
  if prog in PYTHONS:
    if not args:
      return [Target("environment", "python")]
    if args[0] == "-m":
      module = args[1] if len(args) > 1 else ""
      found = bool(module) and importlib.util.find_spec(module) is not None
      return [Target("module", module, problem=None if found else f"no module {module!r}")]
    return _script(args[0], args[1:], cmd.doc)
  if prog == "./launch.sh":
    job = args[0] if args else "main"
    if job == "test":
      return [Target("environment", "pytest")]  # pytest takes its own arguments
    if job == "main":
      return [Target("command", "study", args[1:])]
    if job == EVERY_COMMAND:
      return [t for name in commands.COMMANDS for t in _script(f"experiments/{name}.py",
                                                               args[1:], cmd.doc)]
    if not os.path.exists(os.path.join(REPO, "experiments", f"{job}.py")):
      return [Target("command", job, problem=f"./launch.sh has no job {job!r}"
                     " (test, nothing for the study, or a name of experiments/*.py)")]
    return _script(f"experiments/{job}.py", args[1:], cmd.doc)
  if prog == "dreamjax":
    if not args:
      return [Target("environment", "dreamjax")]  # lists the commands
    names = list(commands.COMMANDS) if args[0] == EVERY_COMMAND else [args[0]]
    return [Target("command", n, args[1:], None if n in commands.COMMANDS else
                   f"dreamjax has no command {n!r} (dreamjax/commands.py)") for n in names]
  if prog.endswith(".py"):
    return _script(prog, args, cmd.doc)
  if "/" in prog:
    executable = os.access(os.path.join(REPO, prog), os.X_OK)
    return [Target("file", prog, args, None if executable else
                   f"{prog} is no executable file of the repository")]
  if os.path.exists(os.path.join(BIN, prog)):
    return [Target("environment", prog, args)]
  return [Target("outside", prog, problem=f"`{prog}` is neither in the project's environment"
                 f" ({BIN}) nor a script of the repository nor in OUTSIDE_TOOLS")]


def _script(script: str, args, doc: str) -> list[Target]:
  if os.path.basename(script) == f"{EVERY_COMMAND}.py":
    return [t for name in commands.COMMANDS for t in _script(
        os.path.join(os.path.dirname(script), f"{name}.py"), args, doc)]
  if "/" in script:
    candidates = [script]
  else:
    candidates = [os.path.join(os.path.dirname(doc), script),
                  *(os.path.join(d, script) for d in SCRIPT_FOLDERS)]
  for path in candidates:
    if os.path.isfile(os.path.join(REPO, path)):
      path = os.path.normpath(path)
      if path.startswith("experiments" + os.sep):
        return [Target("command", _command_of(path), tuple(args))]
      return [Target("script", path, tuple(args))]
  return [Target("script", script, problem=f"no script {script} in the repository")]


def _command_of(script: str) -> str:
  """The dreamjax command an experiments/ script runs (its ``run_command("NAME")``)."""
  with open(os.path.join(REPO, script)) as f:
    return re.search(r"run_command\(\"(\w+)\"\)", f.read()).group(1)


# --- the flags each program takes ---------------------------------------------------

_FLAGS_OF_COMMAND = """
import json, sys
from absl import app, flags
from dreamjax import commands
app.define_help_flags()
commands.COMMANDS[sys.argv[1]]()
FLAGS = flags.FLAGS
print(json.dumps({"flags": {n: FLAGS[n].flag_type() for n in FLAGS},
                  "config": FLAGS["config"].config_filename if "config" in FLAGS else None}))
"""


@functools.lru_cache(maxsize=None)
def command_flags(name: str) -> dict:
  """``{"flags": {name: type}, "config": default config file}`` of a dreamjax command.

  Read from the command's own flag definitions, in a fresh process as
  ``dreamjax NAME`` makes them (two commands cannot share one absl registry).
  """
  out = subprocess.run([sys.executable, "-c", _FLAGS_OF_COMMAND, name], capture_output=True,
                       text=True, cwd=REPO, timeout=120)
  assert out.returncode == 0, out.stderr[-3000:]
  return json.loads(out.stdout.strip().splitlines()[-1])


@functools.lru_cache(maxsize=None)
def load_config(spec: str):
  """The ConfigDict of ``FILE[:PRESET]`` (FILE from the repository root), as absl loads it."""
  path, _, preset = spec.partition(":")
  get_config = runpy.run_path(os.path.join(REPO, path))["get_config"]
  return get_config(preset) if preset else get_config()


_MISSING = object()


def config_field(config, dotted: str):
  node = config
  for part in dotted.split("."):
    if not hasattr(node, "keys") or part not in node.keys():
      return _MISSING
    node = node[part]
  return node


def _check_absl(name: str, args) -> list[str]:
  spec = command_flags(name)
  known, problems, config = spec["flags"], [], None
  config_spec = flag_value(args, "config") or spec["config"]
  if "config" in known:
    try:
      config = load_config(config_spec)
    except Exception as e:  # noqa: BLE001 - any failure to load is the doc's problem
      problems.append(f"--config {config_spec} does not load: {type(e).__name__}: {e}")
  i = 0
  while i < len(args):
    word = args[i]
    i += 1
    if not word.startswith("-"):
      problems.append(f"`{word}` is no flag's value: {name} takes no positional words")
      continue
    flag, eq, _ = word.lstrip("-").partition("=")
    if flag.startswith("config.") and "config" in known:
      if config is None:
        continue
      value = config_field(config, flag[len("config."):])
      if value is _MISSING:
        problems.append(f"--{flag}: {config_spec} has no field {flag[len('config.'):]}")
        continue
      takes_value = not isinstance(value, bool)
    elif flag in known:
      takes_value = known[flag] != "bool"
    elif flag.startswith("no") and known.get(flag[2:]) == "bool":
      takes_value = False
    else:
      problems.append(f"--{flag}: `dreamjax {name}` has no such flag")
      continue
    if takes_value and not eq:
      i += 1  # its value
  return problems


@functools.lru_cache(maxsize=None)
def argparse_options(script: str) -> tuple[dict[str, bool], int]:
  """A script's argparse options (name -> takes a value) and number of positionals."""
  with open(os.path.join(REPO, script)) as f:
    tree = ast.parse(f.read())
  options, positionals = {}, 0
  for node in ast.walk(tree):
    if not (isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "add_argument"):
      continue
    names = [a.value for a in node.args if isinstance(a, ast.Constant)]
    action = next((k.value.value for k in node.keywords if k.arg == "action"), None)
    if names and names[0].startswith("-"):
      for n in names:
        options[n] = action not in ("store_true", "store_false", "count")
    elif names:
      positionals += 1
  return options, positionals


def _check_argparse(script: str, args) -> list[str]:
  options, positionals = argparse_options(script)
  if not options and not positionals:
    return [f"{script} defines no argparse arguments this checker can read"]
  problems, words, i = [], 0, 0
  while i < len(args):
    word = args[i]
    i += 1
    if not word.startswith("-"):
      words += 1
      continue
    flag, eq, _ = word.partition("=")
    if flag not in options:
      problems.append(f"{flag}: {script} has no such option")
    elif options[flag] and not eq:
      i += 1
  if words > positionals:
    problems.append(f"{script} takes {positionals} positional words, the command gives {words}")
  return problems


@functools.lru_cache(maxsize=None)
def help_text(program: str, words: tuple[str, ...]) -> str:
  out = subprocess.run([os.path.join(BIN, program), *words, "--help"], capture_output=True,
                       text=True, timeout=120)
  return out.stdout + out.stderr


def _check_help(program: str, args) -> list[str]:
  """An environment program's flags, each as its ``--help`` (of the subcommand) names it."""
  words = []
  for word in args:
    if word.startswith("-"):
      break
    words.append(word)  # subcommand and its leading words: `pip install .`
  text = help_text(program, tuple(words))
  return [f"{flag}: `{program} --help` does not name it" for flag in
          (w.partition("=")[0] for w in args if w.startswith("-"))
          if not re.search(r"(?<![\w-])" + re.escape(flag) + r"(?![\w-])", text)]


def check(cmd: Command) -> list[str]:
  """What is wrong with a command (``[]``: its programs exist and take its flags)."""
  problems = []
  for target in resolve(cmd):
    if target.problem:
      problems.append(target.problem)
    elif target.kind == "command":
      problems += _check_absl(target.name, target.args)
    elif target.kind == "script":
      problems += _check_argparse(target.name, target.args)
    elif target.kind == "environment" and target.name not in ("python", "pytest", "dreamjax"):
      problems += _check_help(target.name, target.args)
  return [f"{cmd}: {p}" for p in problems]


def problems_in(text: str, doc: str = "docs/doctored.md") -> list[str]:
  return [p for cmd in doc_commands(text, doc) for p in check(cmd)]


# --- which commands run here, and how ------------------------------------------------

STUDY = "{small_study}"      # the workdir of conftest's finished small study
SCRATCH = "{scratch}"        # the folder a command runs in


def how_to_run(cmd: Command) -> tuple[str, ...] | None:
  """The argv a cheap command runs with here, or None (its flags are checked only).

  * a dreamjax command with ``--dry_run`` or a help flag runs as shown;
  * ``dreamjax compare`` of two folders of the repository (published studies)
    runs as shown, its tables written to ``--out`` in the scratch folder (by
    default it writes into ``--b``);
  * ``tensorboard ... --logdir DIR`` runs as ``tensorboard --inspect --logdir``
    on the small study (it would otherwise serve until stopped);
  * ``benchmarks/profile_study.py DIR`` reads the small study.
  """
  targets = resolve(cmd)
  if len(targets) != 1 or targets[0].problem:
    return None
  target = targets[0]
  if target.kind == "command":
    if target.name == "compare" and all(os.path.isdir(os.path.join(REPO, flag_value(
        target.args, f) or "-")) for f in ("a", "b")):
      return ("dreamjax", "compare", *target.args, f"--out={SCRATCH}/comparison")
    if {"--dry_run", "--help", "--helpshort", "--helpfull"} & set(target.args):
      return ("dreamjax", target.name, *target.args)
  if target.kind == "environment" and target.name == "tensorboard" and flag_value(
      target.args, "logdir"):
    return ("tensorboard", "--inspect", "--logdir", STUDY)
  if target.kind == "script" and target.name == "benchmarks/profile_study.py":
    return ("python", target.name, STUDY, *(a for a in target.args if a.startswith("-")))
  return None


def runnable_commands() -> dict[tuple[str, ...], Command]:
  """Each distinct run of ``how_to_run``, with the first command that asks for it."""
  out = {}
  for cmd in all_doc_commands():
    form = how_to_run(cmd)
    if form and form not in out:
      out[form] = cmd
  return out


def _scratch(tmp_path) -> str:
  """An empty folder with the repository's folders linked in, for a command to run in.

  Inputs the docs name from the repository root (``docs/results/quick``)
  resolve; whatever the command makes lands here, not in the repository.
  """
  scratch = tmp_path / "scratch"
  scratch.mkdir()
  for name in ("dreamjax", "docs", "experiments", "benchmarks"):
    os.symlink(os.path.join(REPO, name), scratch / name)
  return os.path.realpath(scratch)


def first_log_line(stderr: str) -> str:
  """The message of the first absl log line in ``stderr``."""
  for line in stderr.splitlines():
    if re.match(r"[IWEF]\d{4} ", line):
      return line.split("] ", 1)[1]
  return ""


# --- the tests -----------------------------------------------------------------------


@pytest.mark.parametrize("doc", DOCS)
def test_doc_commands_exist_and_take_their_flags(doc):
  with open(os.path.join(REPO, doc)) as f:
    problems = problems_in(f.read(), doc)
  assert not problems, "\n".join(problems)


def test_every_fence_names_its_language():
  untagged = []
  for doc in DOCS:
    with open(os.path.join(REPO, doc)) as f:
      untagged += [f"{doc}:{line}" for line, language in fences(f.read()) if not language]
  assert not untagged, ("tag each fence: bash, sh or console for commands (then checked),"
                        f" text or python otherwise: {untagged}")


def test_reader_finds_the_commands_the_readme_shows():
  """The reader is not silently blind: the README's commands, fenced and inline, are found."""
  found = {shlex.join(c.argv) for c in all_doc_commands() if c.doc == "README.md"}
  assert {"./launch.sh", "./launch.sh test", "dreamjax study --dry_run",
          "tensorboard --logdir runs/study", "dreamjax study --recheck CELL",
          "pip install ."} <= found  # the last an inline span over a line break
  assert not any(c.startswith("dreamjax/") or c.startswith("dreamjax error") for c in found)


def test_outside_tools_and_exceptions_are_all_used():
  """Each entry of OUTSIDE_TOOLS and NOT_COMMANDS is there because a doc needs it."""
  programs = {c.argv[0] for c in all_doc_commands()}
  assert not set(OUTSIDE_TOOLS) - programs, set(OUTSIDE_TOOLS) - programs
  text = "".join(open(os.path.join(REPO, d)).read() for d in DOCS)
  assert all(f"`{span}`" in text for span in NOT_COMMANDS)


# A doc text with one thing wrong, and what the checker must say about it.
DOCTORED = {
    "unknown flag": ("```bash\ndreamjax study --no_such_flag=1\n```",
                     "--no_such_flag: `dreamjax study` has no such flag"),
    "unknown flag inline": ("Run `dreamjax study --no_such_flag=1` first.", "--no_such_flag"),
    "unknown config field": ("```sh\n./launch.sh study --config.no_such_field=3\n```",
                             "has no field no_such_field"),
    "unknown nested field": ("```bash\n./launch.sh train_classifier --config.attack.nope=1 \\\n"
                             "  --workdir runs/x\n```", "has no field attack.nope"),
    "unknown preset": ("```bash\npython experiments/dream.py"
                       " --config dreamjax/configs/dream.py:no_such_preset\n```", "does not load"),
    "unknown command": ("```bash\ndreamjax dreams --workdir runs/x\n```", "no command 'dreams'"),
    "unknown launch job": ("```bash\n./launch.sh no_such_job\n```", "no job 'no_such_job'"),
    "stray word": ("```bash\ndreamjax study --workdir runs/x stray\n```",
                   "`stray` is no flag's value"),
    "unknown benchmark option": (
        "```console\n$ python benchmarks/bench.py --no_such_option 2> table.txt\nsome output\n```",
        "--no_such_option: benchmarks/bench.py has no such option"),
    "bare script, unknown option": ("`study_bound.py --preset quick --wall`",
                                    "--wall: benchmarks/study_bound.py has no such option"),
    "unknown tensorboard flag": ("```bash\ntensorboard --logdir runs/x --no_such_option\n```",
                                 "--no_such_option: `tensorboard --help` does not name it"),
    "unknown program": ("```bash\ncd somewhere && no_such_program --help\n```",
                        "`no_such_program` is neither"),
    "missing script": ("```bash\npython experiments/no_such_script.py\n```", "no script"),
    "missing module": ("```bash\npython -m no_such_module\n```", "no module 'no_such_module'"),
    "nested command": ("```bash\ngcloud ssh pod --command \"cd dreamjax && dreamjax dream"
                       " --nope\"\n```", "--nope: `dreamjax dream` has no such flag"),
}


@pytest.mark.parametrize("snippet,problem", DOCTORED.values(), ids=DOCTORED.keys())
def test_checker_fails_on_a_doctored_snippet(snippet, problem):
  problems = problems_in(snippet)
  assert problems and any(problem in p for p in problems), problems


def test_checker_passes_a_correct_snippet():
  snippet = ("```bash\ndreamjax study --dry_run --workdir runs/x  # a comment\n"
             "./launch.sh train_generator --model=gan --config.conditional=True \\\n"
             "    --workdir runs/gan\n```\n"
             "Then `tensorboard --logdir runs/x`, or `dreamjax NAME --helpshort`, or\n"
             "`python benchmarks/study_bound.py --preset quick --wall_s 9330`.\n")
  assert len(doc_commands(snippet, "docs/snippet.md")) == 5
  assert not problems_in(snippet)


def _run_params():
  return [pytest.param(form, id=shlex.join(form)) for form in runnable_commands()]


@pytest.mark.parametrize("form", _run_params())
def test_cheap_doc_command_runs(form, request, tmp_path, real_data_dir):
  del real_data_dir  # a dry run reads it
  scratch = _scratch(tmp_path)
  study = request.getfixturevalue("small_study") if STUDY in form else None
  argv = [w.replace(STUDY, study or STUDY).replace(SCRATCH, scratch) for w in form]
  argv[0] = {"python": sys.executable}.get(argv[0], os.path.join(BIN, argv[0]))
  out = subprocess.run(argv, capture_output=True, text=True, cwd=scratch, timeout=300)
  assert out.returncode == 0, f"{runnable_commands()[form]}\n{out.stderr[-3000:]}"
  if "--dry_run" in form:  # the folder it would write, absolute, first; under the caller's
    line = first_log_line(out.stderr)
    assert line.startswith(f"workdir: {scratch}{os.sep}"), line
  if form[0] == "tensorboard":
    for record in open(os.path.join(study, "results.jsonl")):
      record = json.loads(record)
      if "history" in record:
        folder = cells_lib.folder_of(record["cell"])
        assert os.path.join(study, folder, "tensorboard") in out.stdout, folder


def test_tensorboard_reads_every_cells_curves(small_study):
  """TensorBoard's own reader sees each cell's loss, accuracy and validation curves,
  the mean over seeds and each seed, at the steps and values of the cell's history."""
  from tensorboard.backend.event_processing import event_accumulator  # pylint: disable=g-import-not-at-top
  records = [json.loads(line) for line in open(os.path.join(small_study, "results.jsonl"))]
  assert {r["cell"] for r in records} >= {"oracle", "N100/baseline", "N100/classical"}
  for record in records:
    if "history" not in record:
      continue  # the C3 alignment trains nothing
    folder = cells_lib.folder_of(record["cell"])
    events = event_accumulator.EventAccumulator(
        os.path.join(small_study, folder, "tensorboard"),
        size_guidance={event_accumulator.SCALARS: 0})
    events.Reload()
    tags = set(events.Tags()["scalars"])
    history = record["history"]
    seeds = len(history[0]["loss"])
    for metric in ("loss", "accuracy", "val_accuracy"):
      assert metric in tags, (record["cell"], tags)
      curve = events.Scalars(metric)
      assert [e.step for e in curve] == [h["step"] for h in history], record["cell"]
      assert [e.value for e in curve] == pytest.approx(
          [sum(h[metric]) / seeds for h in history], rel=1e-5), (record["cell"], metric)
      if seeds > 1:
        assert {f"{metric}/seed{s}" for s in range(seeds)} <= tags, record["cell"]
        assert [e.value for e in events.Scalars(f"{metric}/seed1")] == pytest.approx(
            [h[metric][1] for h in history], rel=1e-5)


def _install_stamp_is_current(venv: str) -> bool:
  """Whether ./launch.sh would find ``venv`` installed from this pyproject and constraints."""
  digest = hashlib.sha256()
  for name in ("pyproject.toml", "constraints.txt"):
    with open(os.path.join(REPO, name), "rb") as f:
      digest.update(f.read())
  try:
    with open(os.path.join(venv, ".dreamjax-installed")) as f:
      return f.read().strip() == digest.hexdigest()
  except OSError:
    return False


def test_launch_sh_runs_a_job_in_the_callers_folder(tmp_path, real_data_dir):
  """``/path/to/launch.sh study --workdir runs/x`` means ./runs/x, as ``dreamjax study``
  would, and names it as an absolute path in its first log line (a dry run creates
  nothing, there or in the repository)."""
  del real_data_dir  # launch.sh checks it is there
  if not _install_stamp_is_current(sys.prefix):
    pytest.skip("this environment was installed from another pyproject.toml or"
                " constraints.txt: ./launch.sh would reinstall it; run ./launch.sh once")
  env = {k: v for k, v in os.environ.items() if k != "DREAMJAX_CONSTRAINTS"}
  env["DREAMJAX_VENV"] = sys.prefix
  caller = os.path.realpath(tmp_path)
  in_repo = os.path.exists(os.path.join(REPO, "runs", "x"))
  out = subprocess.run([os.path.join(REPO, "launch.sh"), "study", "--dry_run", "--config",
                        os.path.join(REPO, "dreamjax/configs/study.py:tiny"),
                        "--workdir", "runs/x"],
                       capture_output=True, text=True, cwd=caller, env=env, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  assert first_log_line(out.stderr) == f"workdir: {os.path.join(caller, 'runs', 'x')}"
  assert not os.path.exists(os.path.join(caller, "runs", "x"))  # a dry run writes nothing
  assert os.path.exists(os.path.join(REPO, "runs", "x")) == in_repo
