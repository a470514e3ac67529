"""Every picture dreamjax draws: image grids (``images``) and charts (``charts``)."""

from dreamjax.figures import charts
from dreamjax.figures.images import (image_grid, save_figure, save_gif, save_grid, save_strip,
                                     to_uint8)

__all__ = ["charts", "image_grid", "save_figure", "save_gif", "save_grid", "save_strip",
           "to_uint8"]
