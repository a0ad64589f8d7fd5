"""pyvs: Linux Virtual Server for Direct Routing with an XDP data plane."""

__version__ = "0.1.0"
