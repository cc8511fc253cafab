"""Throughput and latency benchmarks of the work-order queue on PostgreSQL (`make bench`).

Not a test suite (no module here starts with `test_`, so pytest never collects
it): `python -m tests.bench.run` creates a scratch database, starts a real
`conveyor serve queue` process, drives it over gRPC from this process and
writes `.bench/results.json`. See docs/benchmarks.md.
"""
