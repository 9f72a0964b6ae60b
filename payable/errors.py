"""The one exception type whose message is meant for the person at the keyboard.

A ``PayableError`` says, in one line, what went wrong and what to do about it (a malformed key, a chain
that cannot be reached, a deployment that was never made). The CLI prints such an error as one line and
exits 1 wherever it is raised, so library code raises it instead of every command catching it. Kept free
of imports so that the CLI can name it without loading web3.
"""

from __future__ import annotations


class PayableError(Exception):
    """A refusal or failure the user can act on; ``str(exc)`` is the complete, one-line explanation."""
