"""Test support shipped with the package: throw-away clusters in a temp root."""
