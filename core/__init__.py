"""Rapport's platform-neutral core: events, ports, and the assistant that ties them together."""
