"""Fault campaigns (issue 21): scenarios described by data and a seed, run in parallel, reported."""
