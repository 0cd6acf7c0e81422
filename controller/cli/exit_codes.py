"""The exit codes every command uses (stable: scripts and CI depend on them)."""

EXIT_OK = 0  # done; a campaign stopped by one of its stop rules
EXIT_FAILED = 1  # the campaign or instrument failed, paused on a fault, or a dry run found a problem
EXIT_BAD_INPUT = 2  # a bad protocol, argument, CSV or campaign file: nothing was changed
EXIT_PAUSED_BY_OPERATOR = 130  # Ctrl-C or SIGTERM paused the campaign; `closedloop resume` continues it
