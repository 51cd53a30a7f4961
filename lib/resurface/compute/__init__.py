"""Where and how things run: the device and dtype, threads, the worker pool, data-parallel launchers."""
