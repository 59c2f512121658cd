"""The live toolbox's old import path: :class:`Toolbox` (now :mod:`.toolbox`), :class:`ViewRequest`
(:mod:`.requests`) and :class:`Input` (:mod:`.inputs`), with the toolbox's settings."""

from deepvis.apps.server.inputs import Input, InputNotFound
from deepvis.apps.server.requests import ViewRequest
from deepvis.apps.server.toolbox import (EXPORT_URL, GRID_BYTES, GRIDS, MAX_PIXELS, MAX_UPLOAD_BYTES, STORE_URL,
                                         TABS, TRACES, Toolbox)

__all__ = ["EXPORT_URL", "GRID_BYTES", "GRIDS", "Input", "InputNotFound", "MAX_PIXELS", "MAX_UPLOAD_BYTES",
           "STORE_URL", "TABS", "TRACES", "Toolbox", "ViewRequest"]
