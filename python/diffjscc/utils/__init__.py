"""Command-line tools that are not part of the codec itself (evaluation)."""
