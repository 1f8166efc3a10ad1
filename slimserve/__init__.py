"""The `slimserve` command: one door to both halves, the offline optimizer and the runtime. Each
subcommand imports only what it needs, so a runtime-only install (`pip install slimserve`) serves and
invokes without the optimizer's dependencies."""
