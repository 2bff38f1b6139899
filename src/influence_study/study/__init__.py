"""What every stage of the study shares: the config and its schema, file I/O, provenance, runtime, seeds."""
