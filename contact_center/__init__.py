"""Composition root: configuration, HTTP/WebSocket server, CLI and the services that wire the
adapters (AMI, channels, routing, recordings) to the CRM core."""

__version__ = "0.1.0"
