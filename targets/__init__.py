"""calora.targets: arrives with its issue (see the tracker)."""
