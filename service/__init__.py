"""Switchboard: a gRPC gateway that routes chat requests across LLM providers."""

__version__ = "0.1.0"
