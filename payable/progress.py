"""Progress display for long work: on stderr, so commands can keep stdout for their JSON output."""

from __future__ import annotations

from rich.console import Console

console = Console(stderr=True)
