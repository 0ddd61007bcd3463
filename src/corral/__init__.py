"""Corral: a cluster manager for KVM virtual machines."""

__version__ = "0.1.0"
