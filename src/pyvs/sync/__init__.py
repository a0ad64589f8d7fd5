"""IPVS-style connection synchronisation between directors: the kernel's sync protocol version 1 (codec), the
engine that sends the data plane's connection events and applies received ones (engine), and the background
daemon `pyvsadm --start-daemon` runs (daemon)."""
