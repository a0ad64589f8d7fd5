"""The LVS-DR cluster in network namespaces: topology as data, the builder, the RS web server."""

from pyvs.lab.lab import LabError, down, status, up
from pyvs.lab.topology import Topology, default_topology

__all__ = ["LabError", "Topology", "default_topology", "down", "status", "up"]
