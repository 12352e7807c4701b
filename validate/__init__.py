"""calora.validate: arrives with its issue (see the tracker)."""
