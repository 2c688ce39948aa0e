"""Plan instances on CPUs, build their environment, supervise their processes."""
