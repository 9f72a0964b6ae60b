"""Fast checks without services: docs/audit.md documents exactly the database's columns, and the exact
apportioning of an account's payout to its contributions."""

from __future__ import annotations

import random
import re
from pathlib import Path

import duckdb
import pytest

from pipelines.audit.shares import apportion
from pipelines.audit.tables import TABLES, VIEWS, create_statements

DOCS = Path(__file__).resolve().parent.parent / "docs" / "audit.md"


def documented_columns() -> dict[str, list[tuple[str, str]]]:
    """Table -> [(column, type)] from the ``### <table>`` sections of docs/audit.md."""
    sections = re.split(r"^### ", DOCS.read_text().split("## Example queries")[0], flags=re.M)[1:]
    out = {}
    for section in sections:
        name = section.split()[0]
        rows = re.findall(r"^\| (\w+) \| ([^|]+?) \|", section, flags=re.M)
        out[name] = [(c, t) for c, t in rows if c != "column"]
    return out


def test_every_table_and_column_is_documented_with_its_type():
    con = duckdb.connect()
    for statement in create_statements():
        con.execute(statement)
    sql = "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = ? ORDER BY ordinal_position"
    actual = {name: con.execute(sql, [name]).fetchall() for name in {**TABLES, **VIEWS}}
    documented = documented_columns()
    assert set(documented) == set(actual)
    for name, columns in actual.items():
        assert [c for c, _ in documented[name]] == [c for c, _ in columns], name
        for (column, doc_type), (_, db_type) in zip(documented[name], columns, strict=True):
            assert doc_type.replace(" ", "") == db_type.replace(" ", ""), f"{name}.{column}"


def test_amounts_are_exact_decimals_never_floats():
    money = re.compile(r"(amount|total|pool|carry_in|carry_out|stake|min_stake)\b")
    for name, columns in documented_columns().items():
        for column, column_type in columns:
            if money.fullmatch(column) or column.endswith(("_amount", "_total")):
                assert column_type == "DECIMAL(38,0)", f"{name}.{column} is {column_type}"


@pytest.mark.parametrize("seed", range(20))
def test_shares_sum_to_the_leaf_and_follow_positive_influence(seed):
    rng = random.Random(seed)
    weights = {cid: rng.choice([0.0, -rng.random(), rng.random() * 10 ** rng.randint(-8, 3)]) for cid in range(8)}
    amount = rng.randrange(10**24)
    shares = apportion(amount, weights)
    positive = {c for c, w in weights.items() if w > 0}
    assert set(shares) == set(weights)
    assert sum(shares.values()) == (amount if positive else 0)
    assert all(shares[c] == 0 for c in set(weights) - positive)
    total = sum(weights[c] for c in positive)
    assert all(abs(shares[c] - amount * weights[c] / total) <= 1 + amount * 1e-12 for c in positive)
    assert apportion(amount, dict(reversed(list(weights.items())))) == shares, "independent of order"
