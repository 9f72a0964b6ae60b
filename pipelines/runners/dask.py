"""Beam on a Dask distributed cluster, with the two fixes that make Beam's own DaskRunner give right results.

Beam 2.77's ``apache_beam.runners.dask.dask_runner.DaskRunner`` silently computes wrong results (measured
here on a real scheduler with two worker processes):

1. it computes only the last-applied leaf of the pipeline: every other branch (validate's nine other
   staged outputs) never runs, and the run still "succeeds";
2. one output receiver is built per ParDo and shared by all its bundles, never cleared: a bundle returns
   the elements of the bundles that ran before it in the same process too (influence scores off by up to
   68, an ``AsSingleton`` seeing two elements), and ``finish_bundle`` outputs are dropped.

``DaskRunner`` here computes every leaf and runs each bundle with a fresh receiver and a fresh copy of
its DoFn, collected after ``finish_bundle``. What it still cannot run it refuses before anything runs
(``UnsupportedOnDask``): state and timers, splittable DoFns, multi-output ParDos (``with_outputs`` sends
every element to every tag) and primitives it does not translate (the stock runner passes them through
unchanged, e.g. ``WindowInto``).
Select it by configuration alone: ``--runner=pipelines.runners.dask.DaskRunner
--dask_client_address=tcp://HOST:PORT`` (see ``pipelines.runners.pipeline_options``).
"""

from __future__ import annotations

import dataclasses

import apache_beam as beam
from apache_beam import pvalue
from apache_beam.internal import pickler
from apache_beam.pipeline import AppliedPTransform, PipelineVisitor
from apache_beam.runners.common import DoFnContext, DoFnInvoker, DoFnSignature, _OutputHandler
from apache_beam.runners.dask import dask_runner, transform_evaluator
from apache_beam.runners.dask.overrides import _GroupAlsoByWindow, _Reshuffle, dask_overrides
from apache_beam.transforms.sideinputs import SideInputMap
from apache_beam.transforms.window import GlobalWindows


class UnsupportedOnDask(ValueError):
    """The pipeline uses a Beam feature that the Dask runner cannot run correctly."""


def _run_bundle(items, pickled_fn: bytes, window_fn, invoker_kwargs: dict) -> list:
    """One Dask partition as one Beam bundle: its own DoFn instance and output receiver, so nothing a
    previous bundle emitted leaks into this one, and ``finish_bundle`` outputs are kept."""
    receivers = transform_evaluator.OneReceiver()
    handler = _OutputHandler(window_fn=window_fn, main_receivers=receivers[None], tagged_receivers=receivers,
                             per_element_output_counter=None, output_batch_converter=None,
                             process_yields_batches=False, process_batch_yields_elements=False)
    invoker = DoFnInvoker.create_invoker(DoFnSignature(pickler.loads(pickled_fn)), handler, **invoker_kwargs)
    invoker.invoke_setup()
    invoker.invoke_start_bundle()
    for item in items:
        invoker.invoke_process(item)
    invoker.invoke_finish_bundle()
    invoker.invoke_teardown()
    return [value.value for value in receivers.values]


class ParDo(transform_evaluator.ParDo):
    """Beam's Dask ParDo translation with a fresh receiver and DoFn per bundle."""

    def apply(self, input_bag, side_inputs=None):
        transform = self.transform
        args, kwargs = transform.raw_side_inputs
        main_input = next(iter(self.applied.main_inputs.values()))
        window_fn = main_input.windowing.windowfn if hasattr(main_input, "windowing") else None
        invoker_kwargs = {
            "context": DoFnContext(transform.label, state=None), "side_inputs": side_inputs,
            "input_args": list(args), "input_kwargs": kwargs, "user_state_context": None,
            "bundle_finalizer_param": beam.DoFn.BundleFinalizerParam(),
        }
        return input_bag.map(transform_evaluator.get_windowed_value, window_fn).map_partitions(
            _run_bundle, pickler.dumps(transform.fn), window_fn, invoker_kwargs)


# Identity is right for these two: a reshuffle changes no element, and the grouping before a global-window
# GroupAlsoByWindow already is the whole GroupByKey (other windowing is refused below).
TRANSLATIONS = {**transform_evaluator.TRANSLATIONS, beam.ParDo: ParDo,
                _Reshuffle: transform_evaluator.NoOp, _GroupAlsoByWindow: transform_evaluator.NoOp}


def refuse_unsupported(node: AppliedPTransform) -> None:
    """Raises ``UnsupportedOnDask`` for a primitive this runner would run wrongly."""
    transform = node.transform
    kind = type(transform)
    if kind not in TRANSLATIONS:
        raise UnsupportedOnDask(f"{node.full_label}: {kind.__name__} is not translated to Dask")
    if kind is _GroupAlsoByWindow and not isinstance(transform.windowing.windowfn, GlobalWindows):
        raise UnsupportedOnDask(f"{node.full_label}: only the global window is supported on Dask")
    if kind is beam.ParDo:
        signature = DoFnSignature(transform.fn)
        if signature.is_stateful_dofn() or signature.has_timers():
            raise UnsupportedOnDask(f"{node.full_label}: state and timers are not supported on Dask")
        if signature.is_splittable_dofn():
            raise UnsupportedOnDask(f"{node.full_label}: splittable DoFns are not supported on Dask")
        if len(node.outputs) > 1:
            raise UnsupportedOnDask(f"{node.full_label}: multi-output ParDo (with_outputs) is not supported on Dask")


@dataclasses.dataclass
class BagVisitor(PipelineVisitor):
    """Translates each primitive into a Dask bag (as Beam's DaskBagVisitor does) and remembers the leaves:
    the bags no other transform consumes, which together are the whole pipeline."""

    bag_kwargs: dict
    bags: dict = dataclasses.field(default_factory=dict)
    consumed: set = dataclasses.field(default_factory=set)

    def visit_transform(self, transform_node: AppliedPTransform) -> None:
        refuse_unsupported(transform_node)
        op = TRANSLATIONS[type(transform_node.transform)](transform_node, bag_kwargs=self.bag_kwargs)
        inputs = []
        for value in transform_node.inputs:
            if isinstance(value, pvalue.PBegin):
                inputs.append(None)
            elif value.producer in self.bags:
                inputs.append(self.bags[value.producer])
                self.consumed.add(value.producer)
        single = len(inputs) == 1 and not isinstance(op, transform_evaluator.Flatten)
        side_inputs = None
        if transform_node.side_inputs:
            side_inputs = []
            for side in transform_node.side_inputs:
                self.consumed.add(side.pvalue.producer)
                values = transform_evaluator.DaskBagWindowedIterator(self.bags.get(side.pvalue.producer),
                                                                     side._window_mapping_fn)
                side_inputs.append(SideInputMap(type(side), side._view_options(), values))
        self.bags[transform_node] = op.apply(input_bag=inputs[0] if single else (inputs or None),
                                             side_inputs=side_inputs)

    def leaves(self) -> list:
        return [bag for node, bag in self.bags.items() if node not in self.consumed]


class DaskRunnerResult(dask_runner.DaskRunnerResult):
    """The stock result, closing its client once the pipeline finished (the stock one leaves it open, and
    it keeps reconnecting after the scheduler is gone)."""

    def wait_until_finish(self, duration=None) -> str:
        try:
            return super().wait_until_finish(duration)
        finally:
            self.client.close()


class DaskRunner(dask_runner.DaskRunner):
    """Beam's DaskRunner computing every leaf of the pipeline, each bundle with its own output receiver."""

    def run_pipeline(self, pipeline, options):
        import dask
        import dask.distributed as ddist

        dask_options = options.view_as(dask_runner.DaskOptions).get_all_options(drop_default=True,
                                                                                current_only=True)
        bag_kwargs = dask_runner.DaskOptions._extract_bag_kwargs(dask_options)
        pipeline.replace_all(dask_overrides())
        visitor = BagVisitor(bag_kwargs)
        pipeline.visit(visitor)  # refuses an unsupported pipeline before connecting to the cluster
        client = ddist.Client(**dask_options)
        futures = client.compute(list(dask.optimize(*visitor.leaves())))
        return DaskRunnerResult(client, futures)
