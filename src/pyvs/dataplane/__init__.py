"""The data plane: the XDP program, its maps, and the API that reads and writes them."""

from pyvs.dataplane.dataplane import (
    Dataplane,
    DataplaneError,
    attach_pass_program,
    migrate,
    open_dataplane,
    pinned_dataplane,
    remove_pins,
    scratch_dataplane,
)

__all__ = ["Dataplane", "DataplaneError", "attach_pass_program", "migrate", "open_dataplane", "pinned_dataplane",
           "remove_pins", "scratch_dataplane"]
