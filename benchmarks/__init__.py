"""Benchmarks of the relay against a bare Bolt app and a naive relay (see README.md)."""
