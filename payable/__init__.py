"""payable: pay data contributors by their measured influence on AI models.

This package holds what every stage shares: settings, the local services, and the small clients
at the I/O edges (chain, Kafka, content store). The stages themselves live in the top-level
packages named after the loop: ``pipelines``, ``assets``, ``orchestration``, ``contracts``, ``schemas``.
"""

__version__ = "0.1.0"
