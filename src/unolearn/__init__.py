"""unolearn: make a deployed LLM system better from its own user logs (the UNO method)."""

__version__ = "0.1.0"
