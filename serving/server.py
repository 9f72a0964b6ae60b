"""Assembling and running the server: engine + usage writer + app under uvicorn, on 127.0.0.1 by default.

``payable serve`` runs :func:`serve` in the foreground; tests and the benchmark run the same app in a
thread with :class:`ServerThread`. A running server leaves its state file (``serving.status``: pid, host,
port) so that ``payable serve --status`` and Dagster find it.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

import torch
import uvicorn
from fastapi import FastAPI

from payable.settings import Settings
from pipelines.training.arguments import TINY, BaseModelSpec
from serving.adapter_source import AdapterSource
from serving.agent import load_agent
from serving.api import create_app
from serving.cache import AdapterCache
from serving.engine import Engine, ServedBase
from serving.influence import AnswerAttributor
from serving.rag import Retriever
from serving.status import state_file
from serving.usage import UsageWriter


@dataclass(frozen=True)
class ServeOptions:
    base: str = TINY
    """The base model (a name of ``pipelines.training.base_model``'s registry, as ``payable train --base`` takes):
    only adapters trained on it are served."""
    context: int = 2048
    """Tokens of context served at most (the model's own when smaller): the KV cache is max_batch rows of it."""
    host: str = "127.0.0.1"
    port: int = 8000
    max_batch: int = 16
    """Rows of the running batch (and of the KV cache)."""
    max_adapters: int = 1024
    max_adapter_bytes: int = 512 << 20
    pin: tuple[str, ...] = ()
    """Model names (ids, aliases, ensembles) loaded at start and never evicted."""
    threads: int = 1
    """Torch threads of the batcher: one by default, as on the shared 2-core machines."""
    usage_topic: str | None = None
    agent_key_file: Path | None = None
    """Where the serving agent's key is (default: ``PAYABLE_AGENT_KEY``/``_KEYSTORE``, or the local dev account)."""


@dataclass
class Service:
    """The parts of one running server, started and stopped together."""

    engine: Engine
    usage: UsageWriter
    retriever: Retriever | None = None
    settings: Settings | None = None
    """The data directory behind the chat page (none: the OpenAI API alone)."""
    app: FastAPI = field(init=False)

    def __post_init__(self) -> None:
        self.app = create_app(self.engine, self.usage, self.retriever, self.settings)

    def start(self, pin: tuple[str, ...] = ()) -> None:
        self.usage.start()
        self.engine.start()
        for name in pin:
            resolved = self.engine.resolve(name)
            for entry, _ in resolved.parts:
                self.engine.cache.load_now(entry.adapter_id, lambda e=entry: self.engine.load(e))
                self.engine.cache.pin(entry.adapter_id)

    def stop(self, usage_timeout_s: float = 10.0) -> None:
        """Stops generating, then gives the usage writer ``usage_timeout_s`` to deliver what is buffered."""
        self.engine.stop()
        self.usage.stop(usage_timeout_s)


def build(settings: Settings, options: ServeOptions, base: ServedBase | None = None) -> Service:
    """A service over the data directory's adapters, writing usage events to the configured Kafka."""
    torch.set_num_threads(options.threads)
    base = base or ServedBase.load(BaseModelSpec(name=options.base), options.max_batch, options.context)
    cache = AdapterCache(options.max_adapters, options.max_adapter_bytes)
    kwargs = {"topic": options.usage_topic} if options.usage_topic else {}
    usage = UsageWriter(settings.kafka_bootstrap, agent=load_agent(settings, options.agent_key_file), **kwargs)
    engine = Engine(base, AdapterSource(settings.adapters_dir), cache, usage, AnswerAttributor(settings))
    return Service(engine, usage, Retriever(settings), settings)


def serve(settings: Settings, options: ServeOptions) -> None:
    """Runs until interrupted; the state file lives exactly as long as the server."""
    service = build(settings, options)
    service.start(options.pin)
    config = uvicorn.Config(service.app, host=options.host, port=options.port, log_level="warning")
    path = state_file(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"pid": os.getpid(), "host": options.host, "port": options.port}))
    # uvicorn re-raises SIGTERM after its graceful shutdown; as an exception here, the cleanup below runs
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        uvicorn.Server(config).run()
    finally:
        path.unlink(missing_ok=True)
        service.stop()


class ServerThread:
    """The app under a real uvicorn server on its own thread (tests, benchmark)."""

    def __init__(self, service: Service, host: str = "127.0.0.1", port: int = 0,
                 usage_timeout_s: float = 10.0) -> None:
        from payable.services import free_port

        self.service, self.usage_timeout_s = service, usage_timeout_s
        self.host, self.port = host, port or free_port()
        self._server = uvicorn.Server(uvicorn.Config(service.app, host=self.host, port=self.port, log_level="warning"))
        self._thread = threading.Thread(target=self._server.run, name="uvicorn", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def __enter__(self) -> ServerThread:
        self.service.start()
        self._thread.start()
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError("uvicorn exited during start-up")
            self._thread.join(timeout=0.02)
        return self

    def __exit__(self, *exc) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self.service.stop(self.usage_timeout_s)
