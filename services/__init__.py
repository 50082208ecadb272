"""Cartmesh services: one package per service plus `common`, the shared Nameko dependency providers."""
