"""The Dask workers' DoFn pool (``pipelines.runners.dofn_pool``), in one process: an instance is set up once
and reused for the bundles of its run, never by two bundles at once, never by another run, and torn down
when its run ends, is evicted, or its bundle failed. (``tests/test_runners.py`` checks the same on a real
cluster, through the runner.)"""

from __future__ import annotations

import pytest
from apache_beam import DoFn

from pipelines.runners.dofn_pool import DoFnPool, dumps

LOG: list[tuple[str, int]] = []


class Recorded(DoFn):
    """Records its lifecycle calls in LOG (the pool's instances are unpickled copies of one DoFn)."""

    def setup(self):
        LOG.append(("setup", id(self)))

    def teardown(self):
        LOG.append(("teardown", id(self)))


@pytest.fixture
def pickled():
    LOG.clear()
    return dumps(Recorded())


def _events(kind: str) -> list[int]:
    return [instance for event, instance in LOG if event == kind]


def test_one_instance_is_set_up_once_and_serves_every_bundle_of_its_run(pickled):
    pool = DoFnPool()
    seen = set()
    for _ in range(3):
        with pool.instance("run", "digest", pickled) as instance:
            seen.add(id(instance.fn))
    assert len(seen) == 1 and _events("setup") == list(seen)
    assert _events("teardown") == []
    assert pool.release("run") == 1
    assert _events("teardown") == list(seen)


def test_concurrent_bundles_get_their_own_instances(pickled):
    pool = DoFnPool()
    with pool.instance("run", "digest", pickled) as first, pool.instance("run", "digest", pickled) as second:
        assert first.fn is not second.fn
    assert len(_events("setup")) == 2 and pool.release("run") == 2


def test_another_run_never_reuses_an_instance_set_up_for_an_earlier_run(pickled):
    pool = DoFnPool()
    with pool.instance("first", "digest", pickled) as first:
        pass
    with pool.instance("second", "digest", pickled) as second:
        assert second.fn is not first.fn
    assert len(_events("setup")) == 2


def test_a_failed_bundle_tears_its_instance_down_and_the_next_bundle_sets_up_afresh(pickled):
    pool = DoFnPool()
    with pytest.raises(RuntimeError), pool.instance("run", "digest", pickled) as failed:
        raise RuntimeError("bundle failed")
    assert _events("teardown") == [id(failed.fn)]
    with pool.instance("run", "digest", pickled) as fresh:
        assert fresh.fn is not failed.fn


def test_runs_beyond_the_bound_are_evicted_and_torn_down(pickled):
    pool = DoFnPool(max_runs=2)
    for run in ("a", "b", "c"):
        with pool.instance(run, "digest", pickled):
            pass
    assert len(_events("teardown")) == 1, "run a evicted when run c started"
    assert pool.release("a") == 0 and pool.release("b") == 1 and pool.release("c") == 1
