"""LoRA training per dataset version, with an adapter registry (issue 5, part 1).

Public entry points: :func:`train_granted` (CLI and Dagster: the trainer's access to the datanet checked
first, see ``access``), :func:`train_latest` (the latest dataset version, unchecked), :func:`train_dataset_version`
(any Lance version or table), :class:`TrainingArguments`, :class:`AdapterRegistry`, :class:`AdapterRecord`.
"""

from pipelines.training.access import AccessDenied, train_granted
from pipelines.training.arguments import BaseModelSpec, TrainingArguments
from pipelines.training.registry import AdapterRecord, AdapterRegistry
from pipelines.training.train import load_adapter, train_dataset_version, train_latest

__all__ = ["AccessDenied", "AdapterRecord", "AdapterRegistry", "BaseModelSpec", "TrainingArguments", "load_adapter",
           "train_dataset_version", "train_granted", "train_latest"]
