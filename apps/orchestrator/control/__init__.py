"""What operators do: decide at gates, cancel and resume runs, check configuration, manage API
keys."""
