"""The data plane: the XDP program, its maps, and the API that reads and writes them.

base.py (shared names, the error), codec.py (struct fields <-> model values), plan.py (the pure planning step of a
change), dataplane.py (the Dataplane class), lifecycle.py (pins, tables and programs: open_dataplane, migrate, ...).
"""

from pyvs.dataplane.base import DataplaneError
from pyvs.dataplane.dataplane import Dataplane
from pyvs.dataplane.lifecycle import (
    attach_pass_program,
    migrate,
    open_dataplane,
    pinned_dataplane,
    remove_pins,
    scratch_dataplane,
)

__all__ = ["Dataplane", "DataplaneError", "attach_pass_program", "migrate", "open_dataplane", "pinned_dataplane",
           "remove_pins", "scratch_dataplane"]
