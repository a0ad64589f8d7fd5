"""The director daemon: config file, health checks, live reload, metrics and status (keepalived's job)."""
