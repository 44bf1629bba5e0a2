"""Storage: the tortoise models and the implementations of the core's ports."""
