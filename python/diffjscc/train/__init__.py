"""Training jobs (torch)."""
