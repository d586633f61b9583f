"""Pipeline layer: configuration, runs, provenance and cluster backends."""
