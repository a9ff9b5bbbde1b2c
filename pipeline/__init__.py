"""Distributed BN-Inception training on ImageNet."""
