"""dreamjax: measure whether Deep Dream (and its rivals) make useful training data.

Importing the package sets the XLA:CPU flags that dreamjax's speed depends on
(see ``dreamjax/_xla.py``), so import it before the first JAX computation.
"""

from dreamjax import _xla

_xla.configure()

__version__ = "0.1.0"

from dreamjax.errors import (  # noqa: E402
    CheckpointError,
    ConfigError,
    DataError,
    DivergenceError,
    DreamjaxError,
)

__all__ = [
    "__version__",
    "CheckpointError",
    "ConfigError",
    "DataError",
    "DivergenceError",
    "DreamjaxError",
]
