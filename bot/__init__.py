"""The process: configuration, wiring, lifecycle, HTTP and the command line."""
