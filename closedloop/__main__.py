"""`python -m closedloop ...` is the `closedloop` command."""

from closedloop.controller.cli import main

main(prog_name="closedloop")
