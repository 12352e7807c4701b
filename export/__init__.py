"""calora.export: arrives with its issue (see the tracker)."""
