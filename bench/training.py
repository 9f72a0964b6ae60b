"""Training bench: where the time of ``payable train`` goes, before (another checkout) and after, in one run.

Run from the repository root: ``.venv/bin/python bench/training.py [--rows 64] [--before /work/main]``.
It starts a real local stack (anvil + broker) in a temp dir, creates a datanet, submits ``--rows`` short
contributions on-chain, ingests and validates them, then runs ``payable train --datanet 1`` twice as a user
would (a fresh process each: the first trains, the second ends in "dataset unchanged"), first with the code of
``--before`` (when given) on its own copy of the data, then with this checkout. Then, in this process, it times
the stages of the unchanged path and of a training run separately: imports, the log read for the datanet's spec,
the Lance reads, the base model hash, tokenizer and model build, the training loop, the registry write.
Prints a rich table and writes ``bench/out/training.json``. The load average is printed: the machine is shared.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from rich.console import Console
from rich.table import Table

OUT = Path(__file__).parent / "out"
ROOT = Path(__file__).resolve().parents[1]


def seed_stack(settings, rows: int) -> None:
    """A datanet with ``rows`` short contributions, ingested and validated through the real stages."""
    from contracts.deploy import TOKEN_UNIT, deploy
    from payable.chain import Chain
    from payable.content_store import ContentStore
    from payable.datanets import DatanetSpec, contribute, create_datanet
    from payable.keys import Role, dev_account
    from pipelines.ingest.ingester import ingest_until_head
    from pipelines.validate.run import validate_new_offsets

    chain = Chain(settings.rpc_url)
    deployment = deploy(chain, dev_account(Role.DEPLOYER.value), dev_account(Role.OPERATOR.value).address)
    deployment.save(settings.deployment_file)
    store = ContentStore(settings.content_dir)
    spec = DatanetSpec("bench", eval_queries=("the soup needs salt and a little pepper", "bake the bread slowly"))
    owner = dev_account(Role.DEPLOYER.value)
    datanet = create_datanet(chain, deployment, store, owner, spec, min_stake=TOKEN_UNIT, max_contribution_size=4096,
                             validators=[dev_account(Role.VALIDATOR.value).address])
    contributor = dev_account(5)
    token = chain.contract(__import__("contracts").OPEN_TOKEN, deployment.token)
    chain.transact(owner, token.functions.transfer(contributor.address, 100 * TOKEN_UNIT))
    folder = settings.data_dir / "bench-inputs"
    folder.mkdir(parents=True, exist_ok=True)
    words = ["salt", "pepper", "bread", "soup", "rice", "beans", "garlic", "onion", "oven", "pan", "simmer",
             "roast", "bake", "stir"]
    files = []
    for i in range(rows):
        path = folder / f"c{i}.txt"
        path.write_text(" ".join(words[(i * 7 + k * 3) % len(words)] for k in range(8 + i % 5)) + f" step {i} .")
        files.append(path)
    contribute(chain, deployment, store, contributor, datanet, files)
    chain.w3.provider.make_request("anvil_mine", [hex(settings.confirmations + 1)])
    ingest_until_head(settings, deployment)
    validate_new_offsets(settings)


def cli_train(settings, code: Path) -> tuple[float, dict]:
    """``payable train --datanet 1`` in a fresh process running the code of ``code``: (wall s, its JSON line)."""
    env = os.environ | {"PYTHONPATH": str(code), "PAYABLE_DATA_DIR": str(settings.data_dir),
                        "PAYABLE_ANVIL_PORT": str(settings.anvil_port), "PAYABLE_KAFKA_PORT": str(settings.kafka_port),
                        "PAYABLE_CONFIRMATIONS": str(settings.confirmations)}
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", "from payable.cli import main; main()", "train", "--datanet", "1"],
                          env=env, cwd=code, capture_output=True, text=True, check=True)
    return round(time.perf_counter() - started, 2), json.loads(done.stdout.strip().splitlines()[-1])


def stage_times(settings) -> dict[str, float]:
    """Seconds per stage of the unchanged path and of a training run, in this process."""
    seconds: dict[str, float] = {}

    def timed(name, fn):
        started = time.perf_counter()
        value = fn()
        seconds[name] = round(time.perf_counter() - started, 3)
        return value

    timed("import torch + transformers + peft", lambda: __import__("peft"))
    train = timed("import pipelines.training", lambda: __import__("pipelines.training.train", fromlist=["x"]))
    from pipelines.training.base_model import base_model_hash, load_model, load_tokenizer
    from pipelines.training.data import datanet_spec, dataset_of, read_version, split_train_eval, tokenize
    from pipelines.training.lora import train_lora
    from pipelines.training.registry import AdapterRegistry

    spec = timed("log read: datanet spec", lambda: datanet_spec(settings, 1))
    args = train.resolve_arguments(spec.training if spec else None)
    dataset = timed("Lance read: dataset version", lambda: read_version(dataset_of(settings.lance_dir, 1)))
    rows, queries = timed("Lance read: eval set + split",
                          lambda: split_train_eval(dataset.table, settings.lance_dir, 1, args.eval_holdout_mod))
    args = train.resolved(args)
    timed("base model hash", lambda: base_model_hash(args.base))
    tokenizer = timed("tokenizer build", lambda: load_tokenizer(args.base))
    examples = timed("tokenize", lambda: tokenize(rows["text"].to_pylist(), tokenizer, args.max_length))
    evals = tokenize(queries["text"].to_pylist(), tokenizer, args.max_length)
    model = timed("model build", lambda: load_model(args.base))
    result = timed("train loop", lambda: train_lora(model, examples, evals, args, show_progress=False))
    seconds["per step"] = result.seconds["per_step"]
    seconds["steps"] = result.metrics["steps"]
    registry = AdapterRegistry(Path(tempfile.mkdtemp()))
    record = train.train_dataset_version(registry, settings.lance_dir, 1, dataset, replace(args, seed=1),
                                         show_progress=False).record
    timed("registry: record read", lambda: registry.record(1, record.adapter_id))
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=64)
    parser.add_argument("--before", type=Path, default=None, help="a checkout of the code to compare against")
    opts = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from payable import services
    from payable.settings import Settings

    tmp = Path(tempfile.mkdtemp(prefix="payable-bench-train-"))
    settings = replace(Settings.from_env(tmp / "data"), anvil_port=services.free_port(),
                       kafka_port=services.free_port(), confirmations=2)
    settings = replace(settings, rpc_url=f"http://127.0.0.1:{settings.anvil_port}",
                       kafka_bootstrap=f"127.0.0.1:{settings.kafka_port}")
    figures: dict = {"rows": opts.rows, "load_average_start": os.getloadavg()[0]}
    services.up(settings)
    try:
        seed_stack(settings, opts.rows)
        runs = {}
        if opts.before:
            saved = tmp / "adapters-after"
            runs["before"] = [cli_train(settings, opts.before.resolve()) for _ in range(2)]
            shutil.move(str(settings.adapters_dir), saved)  # "after" trains from scratch on the same data
        runs["after"] = [cli_train(settings, ROOT) for _ in range(2)]
        figures["cli"] = {name: {"train_s": r[0][0], "unchanged_s": r[1][0], "first": r[0][1], "second": r[1][1]}
                          for name, r in runs.items()}
        figures["stages_s"] = stage_times(settings)
    finally:
        services.down(settings)
    figures["load_average_end"] = os.getloadavg()[0]
    table = Table(title=f"payable train, {opts.rows} short rows (load {figures['load_average_start']:.1f})")
    table.add_column("what")
    table.add_column("seconds")
    for name, run in figures["cli"].items():
        table.add_row(f"{name}: payable train (trains)", f"{run['train_s']:.1f}")
        table.add_row(f"{name}: payable train (dataset unchanged)", f"{run['unchanged_s']:.1f}")
    for name, value in figures["stages_s"].items():
        table.add_row(f"stage: {name}", f"{value}")
    Console(width=160).print(table)
    OUT.mkdir(exist_ok=True)
    (OUT / "training.json").write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
