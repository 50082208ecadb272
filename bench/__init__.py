"""`make bench`: load tests of a running Cartmesh against a minimal Nameko baseline (docs/PERFORMANCE.md)."""
