"""Helpers shared by the tests (not part of any product package)."""
