"""The one place a Beam pipeline's options come from, so every pipeline runs where the configuration says.

``Settings.beam_options`` (PAYABLE_BEAM_OPTIONS, the stage commands' ``--beam-options``, Dagster's
``BeamResource``) selects the runner for validate, attribution and every pipeline to come; a stage adds
only what it alone knows (e.g. ``--direct_num_workers`` from its ``--workers`` flag). Without a runner
the pipelines run in-process on Beam's FnApiRunner. ``pipelines.runners.dask.DaskRunner`` runs them on a
Dask distributed cluster: ``--runner=pipelines.runners.dask.DaskRunner --dask_client_address=tcp://H:P``.
"""

from __future__ import annotations

from collections.abc import Iterable

from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from payable.settings import Settings

IN_PROCESS = ("--runner=DirectRunner", "--direct_running_mode=in_memory")


def pipeline_options(settings: Settings, extra: Iterable[str] = ()) -> PipelineOptions:
    """The configured Beam options plus a stage's ``extra`` ones; in-process when no runner is named."""
    args = [*settings.beam_options, *extra]
    if PipelineOptions(args).view_as(StandardOptions).runner is None:
        args = [*IN_PROCESS, *args]
    return PipelineOptions(args)
