"""LoRA training per dataset version on a registry of base models, with an adapter registry in the PEFT format.

Public entry points: :func:`train_granted` (CLI and Dagster: the trainer's access to the datanet checked
first, see ``access``; the launch's settings over the datanet spec's defaults), :func:`train_latest` (the latest
dataset version, unchecked), :func:`launch_arguments` (a launch's settings from defaults, the datanet's spec and
overrides), :func:`train_dataset_version` (any Lance version or table), :class:`TrainingArguments`,
:class:`AdapterRegistry`, :class:`AdapterRecord`, :func:`locate_adapter` (for servers: base model, PEFT folder,
lineage of an adapter id).
"""

from pipelines.training.access import AccessDenied, train_granted
from pipelines.training.arguments import BaseModelSpec, TrainingArguments
from pipelines.training.registry import AdapterRecord, AdapterRegistry, locate_adapter
from pipelines.training.train import launch_arguments, load_adapter, train_dataset_version, train_latest

__all__ = ["AccessDenied", "AdapterRecord", "AdapterRegistry", "BaseModelSpec", "TrainingArguments",
           "launch_arguments", "load_adapter", "locate_adapter", "train_dataset_version", "train_granted",
           "train_latest"]
