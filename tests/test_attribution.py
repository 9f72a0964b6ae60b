"""Influence scoring: coverage, planted harm, duplicates, leave-one-out direction, Beam parity, the math."""

from __future__ import annotations

import random
from dataclasses import replace

import lance
import numpy as np
import pyarrow as pa
import pytest
import torch
from torch.func import functional_call

from pipelines.attribution import ScoreArguments, attribute, harmful_contributions
from pipelines.attribution.aggregate import contribution_scores, contributor_totals
from pipelines.attribution.beam import score_examples_beam
from pipelines.attribution.gradients import Layout, Projector, sampled_gradients
from pipelines.attribution.methods import Moments, datainf_correction, datainf_damping, moments, precondition
from pipelines.attribution.scoring import score_examples
from pipelines.attribution.synthetic import corrupted, make_datanet, rows
from pipelines.attribution.table import influence_uri
from pipelines.attribution.task import LoRALanguageModelTask, Task
from pipelines.training import AdapterRegistry, load_adapter, train_latest
from pipelines.training.base_model import load_model, load_tokenizer
from pipelines.training.data import tokenize
from pipelines.training.lora import train_lora
from tests.attribution_fixtures import FAST, settings_in, write_evals, write_version

BAD = "0xbad0000000000000000000000000000000000000"
COPIER = "0xc0b1000000000000000000000000000000000000"
TRACIN = ScoreArguments(method="tracin", projection_dim=64)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory):
    """A datanet with helpful, off-topic, one planted corrupted and one duplicated contribution, trained once."""
    settings = settings_in(tmp_path_factory.mktemp("attr"))
    dn = make_datanet(contributors={"on_topic": 3, "off_topic": 1}, per_contributor=3, num_queries=8)
    planted = rows(1, [(BAD, corrupted(random.Random(7), 160))], first_id=500)
    first = dn.table.slice(0, 1)
    while first["contributor"][0].as_py() not in {c for c, k in dn.kinds.items() if k == "on_topic"}:
        first = dn.table.slice(int(first["contribution_id"][0].as_py()), 1)
    duplicate = rows(1, [(COPIER, first["text"][0].as_py())], first_id=600)
    table = pa.concat_tables([dn.table, planted, duplicate])
    write_version(settings, 1, table)
    write_evals(settings, 1, dn.eval_texts)
    record = train_latest(settings, 1, replace(FAST, num_checkpoints=3), show_progress=False).record
    scored = attribute(settings, 1, record.adapter_id, TRACIN).table
    return settings, table, record, scored, first["contribution_id"][0].as_py(), dn


def test_table_covers_every_accepted_contribution_exactly_once(run) -> None:
    settings, table, record, scored, _, _ = run
    assert sorted(scored["contribution_id"].to_pylist()) == sorted(table["contribution_id"].to_pylist())
    again = attribute(settings, 1, record.adapter_id, TRACIN).table  # idempotent rewrite
    stored = lance.dataset(influence_uri(settings.lance_dir)).to_table()
    assert stored.num_rows == table.num_rows
    assert again["score"].to_pylist() == scored["score"].to_pylist()
    assert set(scored["rank"].to_pylist()) == set(range(1, table.num_rows + 1))


def test_planted_harmful_contribution_ranks_last_as_an_outlier_with_its_evidence(run) -> None:
    """Whether it is also flagged is the interval's call: with 8 eval queries it may reach above zero (the old
    rule flagged any score below -0.1 median |score|, which also flagged honest contributions)."""
    _, _, _, scored, _, _ = run
    bottom = scored.sort_by("rank").slice(scored.num_rows - 1).to_pylist()[0]
    assert bottom["contributor"] == BAD and bottom["score"] < 0
    assert bottom["robust_z"] < -3.5 and len(bottom["hurt_queries"]) > 0
    assert bottom["score_low"] <= bottom["score"] <= bottom["score_high"]
    assert sum(bottom["checkpoint_scores"]) == pytest.approx(bottom["score"])
    flagged = harmful_contributions(scored)
    assert set(flagged["contributor"].to_pylist()) <= {BAD}, "nothing honest is flagged"
    assert bottom["harmful"] == (bottom["score_high"] < 0)


def test_exact_duplicate_does_not_double_its_owners_credit(run) -> None:
    _, _, _, scored, original_id, _ = run
    rows_ = {r["contribution_id"]: r for r in scored.to_pylist()}
    original, copy = rows_[original_id], rows_[600]
    assert original["copies"] == copy["copies"] == 2
    assert original["score"] == pytest.approx(copy["score"])
    # pure check: two identical examples split what one of them would get alone
    alone = contribution_scores(np.array([[[2.0], [4.0]]]), np.array([0]), ["h"], np.array([-1]))
    both = contribution_scores(np.array([[[2.0], [4.0]], [[2.0], [4.0]]]), np.array([0, 1]), ["h", "h"],
                               np.array([-1, -1]))
    assert contributor_totals(["a", "a"], both.score)["a"] == pytest.approx(alone.score[0])


def test_leave_one_out_moves_eval_loss_the_way_the_score_predicts(run) -> None:
    _, table, record, scored, _, dn = run
    tokenizer = load_tokenizer(FAST.base)
    args = replace(FAST, num_checkpoints=3)
    queries = tokenize(dn.eval_texts, tokenizer, args.max_length)

    def eval_loss_without(contribution_id: int) -> float:
        kept = table.filter(pa.compute.not_equal(table["contribution_id"], contribution_id))
        train = tokenize(kept["text"].to_pylist(), tokenizer, args.max_length)
        return train_lora(load_model(args.base), train, queries, args, show_progress=False).metrics["eval_loss"]

    full = record.metrics["eval_loss"]
    ordered = scored.sort_by("rank")
    worst, best = ordered["contribution_id"][-1].as_py(), ordered["contribution_id"][0].as_py()
    assert ordered["score"][-1].as_py() < 0 < ordered["score"][0].as_py()
    assert eval_loss_without(worst) < full  # removing the harmful one helps
    assert eval_loss_without(best) > full  # removing the most helpful one hurts


def test_beam_pipeline_matches_in_process_scores(run) -> None:
    settings, _, record, _, _, dn = run
    model, checkpoints = load_adapter(AdapterRegistry(settings.adapters_dir), record)
    task = LoRALanguageModelTask(model)
    tokenizer = load_tokenizer(FAST.base)
    train = tokenize(dn.table["text"].to_pylist()[:10], tokenizer, FAST.max_length)
    queries = tokenize(dn.eval_texts[:3], tokenizer, FAST.max_length)
    lrs = [c.learning_rate for c in record.checkpoints]
    # datainf: the two-pass method (both combines, the side inputs); influence: seeded sampled-target gradients
    for method in ("datainf", "influence"):
        args = ScoreArguments(method=method, projection_dim=32, batch_size=4)
        local = score_examples(task, checkpoints, lrs, train.batch(slice(None)), queries.batch(slice(None)), args)
        beam = score_examples_beam(task, checkpoints, lrs, train, queries, args)
        np.testing.assert_allclose(beam, local, rtol=1e-6, atol=1e-9)


def test_datainf_and_trak_match_their_explicit_formulas() -> None:
    rng = np.random.default_rng(0)
    g = rng.normal(size=(12, 1, 5))
    q = rng.normal(size=(3, 1, 5))
    slices = [slice(0, 2), slice(2, 5)]
    datainf = ScoreArguments(method="datainf", damping=0.3)
    stats = moments(g[:7], "datainf", slices).merge(moments(g[7:], "datainf", slices))
    lam = datainf_damping(stats, datainf.damping)
    pre = precondition(q, stats, datainf, slices, [1.0], datainf_correction(g, q, lam, slices))
    for layer, s in enumerate(slices):
        v = g[:, 0, s]
        inverse = np.mean([np.linalg.inv(lam[0, layer] * np.eye(v.shape[1]) + np.outer(x, x)) for x in v], axis=0)
        np.testing.assert_allclose(pre[:, 0, s], q[:, 0, s] @ inverse, rtol=1e-10)
    trak = ScoreArguments(method="trak", damping=0.3)
    stats = moments(g, "trak", slices).merge(Moments())
    gram = g[:, 0].T @ g[:, 0]
    expected = q[:, 0] @ np.linalg.inv(gram + 0.3 * np.trace(gram) / 5 * np.eye(5))
    np.testing.assert_allclose(precondition(q, stats, trak, slices, [1.0])[:, 0], expected, rtol=1e-10)


def test_influence_preconditions_with_the_mean_sampled_outer_product() -> None:
    rng = np.random.default_rng(1)
    g, q = rng.normal(size=(6, 1, 4)), rng.normal(size=(2, 1, 4))
    sampled = rng.normal(size=(6, 3, 1, 4)).astype(np.float32)
    args = ScoreArguments(method="influence", damping=0.2)
    stats = moments(g[:4], "influence", [slice(0, 4)], sampled[:4]).merge(
        moments(g[4:], "influence", [slice(0, 4)], sampled[4:]))
    f = sampled[:, :, 0].reshape(-1, 4).astype(np.float64)
    fisher = f.T @ f / 3
    expected = q[:, 0] @ np.linalg.inv(fisher + 0.2 * np.trace(fisher) / 4 * np.eye(4))
    np.testing.assert_allclose(precondition(q, stats, args, [slice(0, 4)], [1.0])[:, 0], expected, rtol=1e-6)


class _Softmax(Task):
    """A 3-class linear softmax model behind the Task hooks (the LoRA task's base is not needed)."""

    def __init__(self) -> None:
        self.model = torch.nn.Linear(3, 3, bias=False)

    def params(self, checkpoint):
        return dict(checkpoint)

    def example_loss(self, params, example):
        logits = functional_call(self.model, params, (example["x"][None],))
        return torch.nn.functional.cross_entropy(logits, example["y"][None])

    def sample_targets(self, params, batch, generator):
        probs = torch.softmax(functional_call(self.model, params, (batch["x"],)), -1)
        return {**batch, "y": torch.multinomial(probs, 1, generator=generator)[:, 0]}

    def layer(self, name):
        return "all"


def test_sampled_target_gradients_estimate_the_gauss_newton_hessian() -> None:
    """Mean outer product of gradients at model-drawn labels -> J^T (diag p - p p^T) J, the exact GGN."""
    task = _Softmax()
    params = {"weight": torch.tensor([[1.0, -0.5, 0.2], [0.3, 0.8, -1.0], [-0.7, 0.1, 0.5]])}
    x = torch.tensor([[1.0, 0.5, -0.3], [-0.2, 1.0, 0.4]])
    batch = {"x": x, "y": torch.zeros(2, dtype=torch.long)}
    layout = Layout.of(task, params, dim=16)  # 9 weights < 16: kept exact
    f = sampled_gradients(task, [params], batch, Projector(layout, seed=0), samples=4000, seed=3)[:, :, 0]
    estimate = np.einsum("bsk,bsl->kl", f, f) / f.shape[1]
    exact = np.zeros((9, 9))
    for xi in x:
        p = torch.softmax(params["weight"] @ xi, -1).numpy()
        exact += np.kron(np.diag(p) - np.outer(p, p), np.outer(xi.numpy(), xi.numpy()))
    np.testing.assert_allclose(estimate, exact, atol=0.03)
    again = sampled_gradients(task, [params], batch, Projector(layout, seed=0), samples=4000, seed=3)
    assert np.array_equal(again[:, :, 0], f)  # seeded draws: replay gives the same gradients


def test_the_projector_draws_each_block_once_a_run_when_its_cache_holds_them(monkeypatch) -> None:
    """A cached block is reused, not drawn again, and the projection is the same whether blocks are kept or not
    (each is seeded by its position), so the cache size never changes a score."""
    params = {"weight": torch.zeros(3 * 8192 + 100)}  # one layer of four blocks (1.6 MB), projected to 16 columns
    layout = Layout.of(_Softmax(), params, dim=16)
    grads = {"weight": torch.randn(5, params["weight"].numel(), generator=torch.Generator().manual_seed(1))}
    draws = []
    randn = torch.randn
    monkeypatch.setattr(torch, "randn", lambda *a, **k: draws.append(a) or randn(*a, **k))
    kept, uncached = Projector(layout, seed=4, cache_mb=2), Projector(layout, seed=4, cache_mb=0)
    first = kept(grads)
    assert len(draws) == 4
    assert torch.equal(kept(grads), first) and len(draws) == 4, "a second batch draws nothing"
    assert torch.equal(uncached(grads), first) and torch.equal(uncached(grads), first)
    assert len(draws) == 4 + 8, "without a cache every batch draws every block"
