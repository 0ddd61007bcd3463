"""Cluster configuration: atomic storage (store) and the master's writer."""
