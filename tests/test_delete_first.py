"""`delete_first` over several levels of foreign keys, on SQLite, PostgreSQL and MariaDB:
grandchildren go before children before parents, in the batch's transaction; a held
grandchild or one under a legal minimum keeps its whole chain; the schema checks name
what is wrong (links, order, cycles, foreign keys from unlisted tables)."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from retention.loader import LoadedPolicy, load_text
from retention.planner import build_plan
from retention.runner import RunOptions, RunReport, run_once
from retention.stores.preview import statements_for
from retention.stores.rulesql import RuleSchemaError, RuleSql, compile_rule
from retention.stores.schema import Catalog
from tests.conftest import NOW, audit_records, outbox_records

ENV = {"RETENTION_AUDIT_KEY": "test-audit-key"}
RECALLED = "RECALL-7"


def _table(name: str, *columns: sa.Column[Any], meta: sa.MetaData | None = None) -> sa.Table:
    """A table with an integer primary key ``id`` and `columns`."""
    key = sa.Column("id", sa.Integer, primary_key=True, autoincrement=False)
    return sa.Table(name, meta or sa.MetaData(), key, *columns)


def _fk(name: str, target: sa.Column[Any] | str, constraint: str, **options: Any) -> sa.Column[Any]:
    """An indexed integer column with the foreign key `constraint` to `target`."""
    reference = sa.ForeignKey(target, name=constraint, **options)
    return sa.Column(name, sa.Integer, reference, index=True)


META = sa.MetaData()
ACCOUNTS = _table("accounts", sa.Column("closed_at", sa.DateTime, index=True), meta=META)
ORDERS = _table("orders", _fk("account_id", "accounts.id", "orders_account_fk"), meta=META)
ITEMS = _table(
    "order_items",
    _fk("order_id", "orders.id", "items_order_fk"),
    sa.Column("sku", sa.String(20), nullable=False),
    sa.Column("shipped_at", sa.DateTime, nullable=True),
    meta=META,
)
PAYMENTS = _table("payments", _fk("account_id", "accounts.id", "payments_account_fk"), meta=META)
TABLES = (ACCOUNTS, ORDERS, ITEMS, PAYMENTS)
CHAIN = "[order_items, orders, payments]"

OLD = datetime(2024, 6, 1, 9, 30)  # long before the 1-year cutoff (2025-11-23)
RECENT = datetime(2026, 10, 1, 9, 30)  # within 90 days of NOW

Snapshot = dict[str, dict[int, dict[str, Any]]]


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Policies are loaded as ``test.yaml`` here, so the audit store lands in tmp_path."""
    monkeypatch.chdir(tmp_path)


def _policy(
    url: str,
    delete_first: str = CHAIN,
    *,
    hold: bool = True,
    minimum: bool = True,
    extra: str = "",
) -> str:
    protections = ""
    if minimum:
        protections += (
            "minimums:\n  - {name: items-90d, reason: warranty, store: app, "
            "table: order_items, timestamp: shipped_at, period: 90 days}\n"
        )
    if hold:
        protections += (
            "holds:\n  - {name: recall, reason: product recall, "
            f"subjects: {{column: sku, values: [{RECALLED}]}}}}\n"
        )
    return f"""\
version: 1
stores: {{app: {{url: "{url}"}}}}
{protections}defaults:
  batch: {{size: 4, min_size: 2, max_size: 8}}
rules:
  - name: accounts-1y
    promise: "closed accounts are deleted with their orders after 1 year"
    source: {{policy: t, clause: "1"}}
    store: app
    table: accounts
    timestamp: closed_at
    period: 1 year
    delete_first: {delete_first}
{extra}"""


def _loaded(policy: str) -> LoadedPolicy:
    return load_text(policy, "test.yaml", env={})


def _run(policy: str) -> RunReport:
    return run_once(_loaded(policy), NOW, RunOptions(as_of=NOW), env=ENV)


def _create(url: str, rows: dict[sa.Table, list[dict[str, Any]]]) -> None:
    engine = sa.create_engine(url)
    META.create_all(engine)
    with engine.begin() as conn:
        for table in TABLES:
            if rows.get(table):
                conn.execute(table.insert(), rows[table])
    engine.dispose()


def _snapshot(url: str) -> Snapshot:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        snap = {t.name: {r.id: r._asdict() for r in conn.execute(sa.select(t))} for t in TABLES}
    engine.dispose()
    return snap


def _without(before: Snapshot, accounts: set[int]) -> Snapshot:
    """`before` minus `accounts` and every row that belongs to them."""
    orders = {k for k, o in before["orders"].items() if o["account_id"] in accounts}
    gone = {
        "accounts": accounts,
        "orders": orders,
        "order_items": {k for k, i in before["order_items"].items() if i["order_id"] in orders},
        "payments": {k for k, p in before["payments"].items() if p["account_id"] in accounts},
    }
    return {t: {k: r for k, r in rows.items() if k not in gone[t]} for t, rows in before.items()}


def _audit(policy: str, url: str) -> list[dict[str, Any]]:
    assert not outbox_records(url), "the run left audit records in the outbox"
    return [r._asdict() for r in audit_records(_loaded(policy))]


def _many() -> dict[sa.Table, list[dict[str, Any]]]:
    """40 accounts, 0-3 orders each, 0-2 items per order, 0-1 payment per account."""
    accounts = [
        {
            "id": a,
            "closed_at": None if a % 5 == 0 else RECENT if a % 3 == 0 else OLD - timedelta(a),
        }
        for a in range(1, 41)
    ]
    orders = [{"id": a * 10 + j, "account_id": a} for a in range(1, 41) for j in range(a % 4)]
    items = [
        {
            "id": o["id"] * 10 + k,
            "order_id": o["id"],
            "sku": RECALLED if (o["id"] * 10 + k) % 37 == 0 else f"SKU-{k}",
            "shipped_at": (
                None
                if (o["id"] * 10 + k) % 29 == 0
                else RECENT
                if (o["id"] * 10 + k) % 23 == 0
                else OLD
            ),
        }
        for o in orders
        for k in range(o["id"] % 3)
    ]
    payments = [{"id": 1000 + a, "account_id": a} for a in range(1, 41) if a % 2]
    return {ACCOUNTS: accounts, ORDERS: orders, ITEMS: items, PAYMENTS: payments}


def test_three_levels_go_children_first_and_exactly_the_expected_rows(db_url: str) -> None:
    _create(db_url, _many())
    before = _snapshot(db_url)
    # Independently: an account goes when it was closed before the cutoff and none of
    # the items of its orders is recalled (held), unshipped or shipped within 90 days.
    account_of = {k: o["account_id"] for k, o in before["orders"].items()}
    held = {
        account_of[i["order_id"]] for i in before["order_items"].values() if i["sku"] == RECALLED
    }
    minimum = {
        account_of[i["order_id"]]
        for i in before["order_items"].values()
        if i["shipped_at"] is None or i["shipped_at"] >= datetime(2026, 8, 25, 12)
    }
    closed = {
        k
        for k, a in before["accounts"].items()
        if a["closed_at"] is not None and a["closed_at"] < datetime(2025, 11, 23, 12)
    }
    gone = closed - held - minimum
    assert closed & held - minimum, "no account is kept by the hold alone"
    assert closed & minimum - held, "no account is kept by the minimum alone"
    expected = _without(before, gone)
    policy = _policy(db_url)

    report = _run(policy)

    assert report.exit_code == 0, [(o.rule, o.error) for o in report.outcomes]
    after = _snapshot(db_url)
    assert after == expected
    removed = {t: len(before[t]) - len(after[t]) for t in before}
    assert min(removed.values()) > 3, removed
    records = _audit(policy, db_url)
    audited: dict[str, int] = {}
    for record in records:
        audited[record["table_name"]] = audited.get(record["table_name"], 0) + record["rows"]
    assert audited == removed
    # One record per table per batch; a child table's record names its batch's parent keys.
    parents = {r["batch"]: r for r in records if r["table_name"] == "accounts"}
    assert len(parents) > 1
    for record in records:
        assert [r["table_name"] for r in records if r["batch"] == record["batch"]].count(
            record["table_name"]
        ) == 1
        parent = parents[record["batch"]]
        assert (record["key_min"], record["key_max"], record["key_digest"]) == (
            parent["key_min"],
            parent["key_max"],
            parent["key_digest"],
        )


def _small() -> dict[sa.Table, list[dict[str, Any]]]:
    """Four old accounts: 1 with a plain item, 2 with a recalled item, 3 with an item
    shipped recently, 4 with an order but no items."""
    return {
        ACCOUNTS: [{"id": a, "closed_at": OLD} for a in (1, 2, 3, 4)],
        ORDERS: [{"id": 10 * a, "account_id": a} for a in (1, 2, 3, 4)],
        ITEMS: [
            {"id": 100, "order_id": 10, "sku": "SKU-1", "shipped_at": OLD},
            {"id": 200, "order_id": 20, "sku": RECALLED, "shipped_at": OLD},
            {"id": 201, "order_id": 20, "sku": "SKU-1", "shipped_at": OLD},
            {"id": 300, "order_id": 30, "sku": "SKU-1", "shipped_at": RECENT},
        ],
        PAYMENTS: [{"id": 1000 + a, "account_id": a} for a in (1, 2, 3, 4)],
    }


@pytest.mark.parametrize(
    ("protection", "kept"), [("hold", {2}), ("minimum", {3}), ("both", {2, 3})]
)
def test_a_protected_grandchild_keeps_its_whole_chain(
    db_url: str, protection: str, kept: set[int]
) -> None:
    _create(db_url, _small())
    before = _snapshot(db_url)
    policy = _policy(
        db_url, hold=protection in ("hold", "both"), minimum=protection in ("minimum", "both")
    )

    report = _run(policy)

    assert report.exit_code == 0, [(o.rule, o.error) for o in report.outcomes]
    assert _snapshot(db_url) == _without(before, {1, 2, 3, 4} - kept)


def _compile(url: str, policy: str) -> tuple[RuleSql, sa.Dialect]:
    """The policy's only rule compiled against the database at `url`, and its dialect."""
    plan = build_plan(_loaded(policy).policy, NOW)
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return compile_rule(plan.rules[0], Catalog(conn, "app")), conn.dialect
    finally:
        engine.dispose()


def _problems(url: str, policy: str) -> list[tuple[tuple[str | int, ...], str]]:
    with pytest.raises(RuleSchemaError) as raised:
        _compile(url, policy)
    return [(p.path, p.message) for p in raised.value.problems]


def test_grandchildren_are_deleted_through_a_subquery_or_on_mariadb_a_join(db_url: str) -> None:
    """MariaDB runs ``IN (SELECT ...)`` in a single-table DELETE as a dependent subquery
    that scans the whole table (2.3 s against 2 ms for a join, 500,000 items), so it joins."""
    _create(db_url, {})
    sql, dialect = _compile(db_url, _policy(db_url))
    statement = sql.children[0].delete_for([1, 2])
    text = str(statement.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))
    expected = (
        "DELETE FROM order_items USING order_items, orders WHERE order_items.order_id = "
        "orders.id AND orders.account_id IN (1, 2)"
        if dialect.name == "mysql"
        else "DELETE FROM order_items WHERE order_items.order_id IN (SELECT orders.id FROM "
        "orders WHERE orders.account_id IN (1, 2))"
    )
    assert " ".join(text.split()) == expected


def test_plan_shows_the_child_deletes_in_order_before_the_parents(db_url: str) -> None:
    _create(db_url, {})
    sql, dialect = _compile(db_url, _policy(db_url))
    steps = [s.step for s in statements_for(sql, dialect)]
    deletes = [s for s in steps if s.startswith("delete")]
    assert deletes == [
        "delete_first:order_items",
        "delete_first:orders",
        "delete_first:payments",
        "delete_batch",
    ]


def _extra_tables(url: str, *tables: sa.Table) -> None:
    engine = sa.create_engine(url)
    for table in tables:
        table.create(engine)
    engine.dispose()


def test_a_wrong_order_is_refused_naming_an_order_that_works(db_url: str) -> None:
    _create(db_url, {})
    policy = _policy(db_url, "[orders, payments, order_items]")
    assert _problems(db_url, policy) == [
        (
            ("delete_first", 2),
            "order_items references orders but is listed after it; delete_first deletes in "
            "list order, children first: list them as [order_items, orders, payments]",
        )
    ]


def test_each_listed_table_needs_exactly_one_link_into_the_chain(db_url: str) -> None:
    _create(db_url, {})
    _extra_tables(
        db_url,
        _table("products", sa.Column("name", sa.String(20))),
        _table(
            "reviews",
            _fk("account_id", ACCOUNTS.c.id, "reviews_account_fk"),
            _fk("order_id", ORDERS.c.id, "reviews_order_fk"),
        ),
    )
    policy = _policy(db_url, "[order_items, orders, products, reviews, payments]")
    assert _problems(db_url, policy) == [
        (
            ("delete_first", 2),
            "products needs exactly one foreign key to accounts or another delete_first "
            "table (order_items, orders, reviews, payments); found none (its foreign keys: "
            "none)",
        ),
        (
            ("delete_first", 3),
            "reviews needs exactly one foreign key to accounts or another delete_first table "
            "(order_items, orders, products, payments); found reviews_account_fk (account_id)"
            " -> accounts(id), reviews_order_fk (order_id) -> orders(id)",
        ),
    ]


def _add_loop(url: str) -> None:
    """loop_a and loop_b referencing each other (the second key added by ALTER TABLE,
    or on SQLite by rebuilding loop_a)."""
    loop_a = _table("loop_a", sa.Column("b_id", sa.Integer))
    _extra_tables(url, loop_a, _table("loop_b", _fk("a_id", loop_a.c.id, "loop_b_a_fk")))
    constraint = "CONSTRAINT loop_a_b_fk FOREIGN KEY (b_id) REFERENCES loop_b (id)"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        if conn.dialect.name == "sqlite":
            conn.exec_driver_sql("DROP TABLE loop_a")
            conn.exec_driver_sql(
                f"CREATE TABLE loop_a (id INTEGER PRIMARY KEY, b_id INTEGER, {constraint})"
            )
        else:
            conn.exec_driver_sql(f"ALTER TABLE loop_a ADD {constraint}")
    engine.dispose()


def _drop_loop(url: str) -> None:
    """Drop the loop (`reset_database` cannot order the tables of a cycle)."""
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        if conn.dialect.name == "mysql":
            conn.exec_driver_sql("SET FOREIGN_KEY_CHECKS = 0")
        for name in ("loop_a", "loop_b"):
            conn.exec_driver_sql(
                f"DROP TABLE {name}{' CASCADE' * (conn.dialect.name == 'postgresql')}"
            )
        if conn.dialect.name == "mysql":
            conn.exec_driver_sql("SET FOREIGN_KEY_CHECKS = 1")
    engine.dispose()


def test_a_cycle_among_listed_tables_is_refused(db_url: str) -> None:
    _create(db_url, {})
    _add_loop(db_url)
    policy = _policy(db_url, "[order_items, orders, payments, loop_a, loop_b]")
    try:
        problems = _problems(db_url, policy)
    finally:
        _drop_loop(db_url)
    assert problems == [
        (
            ("delete_first", 3),
            "the foreign keys of delete_first tables form a cycle "
            "(loop_a -> loop_b -> loop_a); none of them leads to accounts",
        )
    ]


@pytest.mark.parametrize(
    ("ondelete", "accept_cascade", "refused"),
    [
        (None, False, True),
        ("CASCADE", False, True),
        ("CASCADE", True, False),
        ("SET NULL", True, False),
    ],
)
def test_an_unlisted_table_referencing_a_listed_child_is_refused_naming_the_key(
    db_url: str, ondelete: str | None, accept_cascade: bool, refused: bool
) -> None:
    _create(db_url, {})
    _extra_tables(
        db_url, _table("notes", _fk("order_id", ORDERS.c.id, "notes_order_fk", ondelete=ondelete))
    )
    extra = "    accept_cascade: true\n" if accept_cascade else ""
    policy = _policy(db_url, extra=extra)
    if not refused:
        sql, _dialect = _compile(db_url, policy)
        assert [c.table.name for c in sql.children] == ["order_items", "orders", "payments"]
        return
    assert _problems(db_url, policy) == [
        (
            ("delete_first", 1),
            f"rows of orders are referenced by foreign keys notes_order_fk on notes "
            f"(ON DELETE {ondelete or 'NO ACTION'}): list the child tables in delete_first, "
            "or set accept_cascade: true when every one is ON DELETE CASCADE / SET NULL",
        )
    ]


_PG_REFUSE = """\
CREATE OR REPLACE FUNCTION retention_test_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF OLD.id = {key} THEN RAISE EXCEPTION 'refused by test trigger'; END IF;
  RETURN OLD;
END $$"""


def _refuse_deleting(url: str, table: str, key: int) -> None:
    """A trigger that fails the DELETE of row `key` of `table`: a real error mid-batch."""
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        name = conn.dialect.name
        if name == "sqlite":
            conn.exec_driver_sql(
                f"CREATE TRIGGER refuse BEFORE DELETE ON {table} WHEN OLD.id = {key} "
                "BEGIN SELECT RAISE(ABORT, 'refused by test trigger'); END"
            )
        elif name == "postgresql":
            conn.exec_driver_sql(_PG_REFUSE.format(key=key))
            conn.exec_driver_sql(
                f"CREATE TRIGGER refuse BEFORE DELETE ON {table} "
                "FOR EACH ROW EXECUTE FUNCTION retention_test_refuse()"
            )
        else:
            conn.exec_driver_sql(
                f"CREATE TRIGGER refuse BEFORE DELETE ON {table} FOR EACH ROW BEGIN "
                f"IF OLD.id = {key} THEN SIGNAL SQLSTATE '45000' "
                "SET MESSAGE_TEXT = 'refused by test trigger'; END IF; END"
            )
    engine.dispose()


def _drop_trigger(url: str, table: str) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        on = f" ON {table}" if conn.dialect.name == "postgresql" else ""
        conn.exec_driver_sql(f"DROP TRIGGER refuse{on}")
    engine.dispose()


@pytest.mark.parametrize(("table", "key"), [("orders", 30), ("accounts", 4)])
def test_a_failing_delete_rolls_back_the_whole_batch_children_included(
    db_url: str, table: str, key: int
) -> None:
    """The batch's child, grandchild and parent deletes and its audit records commit
    together or not at all: a statement that fails after the grandchildren (and for
    `accounts` the children) were deleted leaves every table as it was."""
    _create(db_url, _small())
    before = _snapshot(db_url)
    _refuse_deleting(db_url, table, key)
    policy = _policy(db_url, hold=False, minimum=False)

    report = _run(policy)

    outcome = report.outcomes[0]
    assert (report.exit_code, outcome.rows) == (1, 0)
    assert "refused by test trigger" in (outcome.error or "")
    assert _snapshot(db_url) == before
    assert _audit(policy, db_url) == []

    _drop_trigger(db_url, table)
    assert _run(policy).exit_code == 0
    assert _snapshot(db_url) == _without(before, {1, 2, 3, 4})
