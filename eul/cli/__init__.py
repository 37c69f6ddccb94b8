"""The `eul` command line: one module per command group, plus the demo and the doctor."""
