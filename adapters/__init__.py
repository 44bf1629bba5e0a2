"""Adapters: platform payloads in, neutral events to the core, replies back in each platform's idiom."""
