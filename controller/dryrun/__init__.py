"""dryrun."""
