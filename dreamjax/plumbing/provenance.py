"""What a result was computed with: Python, package versions, XLA flags.

The same code gives other numbers under another jaxlib (XLA's fusions and
its CPU kernels change between releases) or without the XLA flags dreamjax
sets (``dreamjax/_xla.py``, measured on one jaxlib). A workdir records
:func:`versions` when it is made; resuming it checks the record with
:func:`check_same_versions`, so one study's cells are never computed by two
different stacks. ``./launch.sh`` installs the tested versions from
``constraints.txt``.
"""

import importlib.metadata
import os
import platform
import shlex

import jax

import dreamjax
from dreamjax import _xla
from dreamjax.errors import ConfigError

# The distributions whose versions can change a result, by their pip names.
PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy", "chex", "dm-pix",
            "tensorflow-datasets")
NOT_INSTALLED = "not installed"


def versions() -> dict[str, str]:
  """``{"python", each of PACKAGES, "dreamjax", "xla_flags"}`` -> version or value.

  ``xla_flags`` holds the flags of :data:`dreamjax._xla.CPU_FLAGS` as XLA
  gets them (``--name=value``, space separated): dreamjax's own values, a
  value the user put in ``XLA_FLAGS`` instead, or "" where dreamjax set none
  (``DREAMJAX_NO_XLA_FLAGS``, an older jaxlib). Flags the user added for
  other reasons (a simulated device count, say) are not part of it.
  """
  out = {"python": platform.python_version()}
  for name in PACKAGES:
    try:
      out[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      out[name] = NOT_INSTALLED
  out["dreamjax"] = dreamjax.__version__  # the code running, not an installed copy
  out["xla_flags"] = _dreamjax_xla_flags()
  return out


def _dreamjax_xla_flags() -> str:
  try:
    given = shlex.split(os.environ.get("XLA_FLAGS", ""))
  except ValueError:  # unbalanced quotes: XLA would split on spaces
    given = os.environ.get("XLA_FLAGS", "").split()
  ours = [flag for flag in given
          if flag.startswith("--") and flag[2:].split("=", 1)[0] in _xla.CPU_FLAGS]
  return " ".join(ours)


def check_same_versions(recorded: dict[str, str], current: dict[str, str]) -> None:
  """Raises ConfigError listing what differs between two :func:`versions` records.

  Only keys both records have are compared, so a record from a dreamjax that
  recorded fewer things still resumes.
  """
  differ = [(k, recorded[k], current[k]) for k in sorted(set(recorded) & set(current))
            if str(recorded[k]) != str(current[k])]
  if not differ:
    return
  listed = "; ".join(f"{k}: {_show(old)} recorded, {_show(new)} now" for k, old, new in differ)
  raise ConfigError(
      f"this workdir was made with other versions than run now ({listed}). Its results"
      " would mix numbers from two software stacks: finish this workdir with the recorded"
      " versions (./launch.sh installs constraints.txt) or start a fresh --workdir.")


def _show(value: str) -> str:
  return repr(value) if value == "" or " " in str(value) else str(value)


def record(data) -> dict:
  """What a results file records of its making: :func:`versions` and the data read.

  ``data`` is a :class:`dreamjax.data.RawDataset` or :class:`dreamjax.data.Splits`.
  """
  source = getattr(data, "source", None) or getattr(data, "data_source", "")
  digest = getattr(data, "digest", None) or getattr(data, "data_digest", "")
  return {"versions": versions(), "data": {"name": data.name, "source": source,
                                           "digest": digest}}


def machine() -> dict:
  """Where a run happens: host, CPU model, cores, JAX devices and the load when it starts.

  The load average tells a reader of a wall time whether the machine was
  shared with other work.
  """
  cpu = platform.processor() or platform.machine()
  try:
    with open("/proc/cpuinfo") as f:
      cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")),
                 cpu)
  except OSError:
    pass
  devices = jax.devices()
  try:
    load = round(os.getloadavg()[0], 2)
  except OSError:
    load = None
  return {"host": platform.node(), "cpu": cpu, "cores": os.cpu_count(),
          "device": f"{len(devices)} × {devices[0].device_kind}", "load_1min": load}


def describe_machine(m: dict) -> str:
  """``machine()`` in a few words, for reports."""
  return f"{m.get('cpu', '?')}, {m.get('cores', '?')} cores, {m.get('device', '?')}"
