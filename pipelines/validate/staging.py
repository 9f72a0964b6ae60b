"""Files one pipeline run leaves for the driver: Arrow tables and JSON, through Beam's FileSystems.

Beam's FileSystems resolves local paths and object-store URIs alike, so the same pipeline stages its
outputs wherever the runner's workers can write; the driver reads them back after the run finished.
"""

from __future__ import annotations

import json

import pyarrow as pa
from apache_beam.io.filesystems import FileSystems


def join(*parts: str) -> str:
    return FileSystems.join(*parts)


def write_table(path: str, table: pa.Table) -> None:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    _write_bytes(path, sink.getvalue().to_pybytes())


def read_table(path: str) -> pa.Table:
    with FileSystems.open(path) as stream:
        return pa.ipc.open_file(pa.BufferReader(stream.read())).read_all()


def write_json(path: str, doc: object) -> None:
    _write_bytes(path, json.dumps(doc, sort_keys=True).encode())


def read_json(path: str) -> object:
    with FileSystems.open(path) as stream:
        return json.loads(stream.read())


def glob(pattern: str) -> list[str]:
    """Paths matching ``pattern``, sorted (so the driver reads staged files in a stable order)."""
    return sorted(metadata.path for result in FileSystems.match([pattern]) for metadata in result.metadata_list)


def _write_bytes(path: str, data: bytes) -> None:
    with FileSystems.create(path) as stream:
        stream.write(data)
