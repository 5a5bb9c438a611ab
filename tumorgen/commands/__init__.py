"""One module per `tumorgen` subcommand group; see tumorgen.cli."""
