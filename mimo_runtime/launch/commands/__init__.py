"""One file per `mimo-run` subcommand: `add_arguments(parser)` and `run(args) -> exit code`."""
