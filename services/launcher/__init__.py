"""berthd, the launcher of the embedded suite."""
