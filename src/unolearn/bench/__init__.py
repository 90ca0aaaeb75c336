"""Benchmarks (``unolearn bench ...``): each measures one target side by side in one run and returns
JSON-ready figures. ``ingest``, ``cluster``, ``train``, ``throughput`` (against ``server``, a
fixed-latency OpenAI-compatible responder), ``serve`` (the proxy), ``quality`` and ``demo``."""
