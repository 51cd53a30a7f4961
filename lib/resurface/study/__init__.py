"""What the notebooks call: `session.start` (one per notebook), one orchestration module per notebook, the
figures, the declared notebook graph (pipeline), the runner that executes it, the report and the command line."""
