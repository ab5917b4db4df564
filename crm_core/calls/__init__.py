"""Calls: every call the PBX reports, linked to the manager and the client."""
