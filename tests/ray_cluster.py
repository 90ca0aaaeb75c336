"""The real local Ray cluster of :mod:`unolearn.bench.ray_local`, for the tests (a head and a worker node)."""

from unolearn.bench.ray_local import ray_cluster

__all__ = ["ray_cluster"]
