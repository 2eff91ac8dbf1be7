"""`retention report` writes one self-contained HTML page for an auditor: each promise
with its status, the audit trail's removals and verification, the legal holds. It judges
promises exactly as `check` does, reads the audit trail on every database, escapes every
text it shows, and renders in headless Chromium with the network blocked.
"""

from __future__ import annotations

import base64
import json
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from retention.demo import build_demo
from retention.loader import LoadedPolicy, load_policy
from retention.report import ChainResult, HoldEntry, ReportData, RuleReport, gather, render
from retention.report_cli import report
from retention.runner import RunOptions, RunReport, run_once
from tests.conftest import IN_CI, NOW

ROOT = Path(__file__).resolve().parents[1]
POLICY = ROOT / "policies" / "infraux.yaml"
ARTIFACTS = ROOT / "test-artifacts"
ENV = {"RETENTION_AUDIT_KEY": "report-test-key", "RETENTION_HASH_KEY": "report-hash-key"}
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")


def _policy(tmp_path: Path, url: str, *, audit_in_store: bool = False) -> LoadedPolicy:
    """The InfraUX policy, copied to `tmp_path` so its default audit file lands there; with
    `audit_in_store` its audit trail lives in the app store itself (``audit.store: app``)."""
    text = POLICY.read_text(encoding="utf-8")
    if audit_in_store:
        text = text.replace("\nstores:\n", "\naudit:\n  store: app\n\nstores:\n", 1)
    path = tmp_path / "infraux.yaml"
    path.write_text(text, encoding="utf-8")
    return load_policy(path, env={"RETENTION_DB_URL": url})


def _run(loaded: LoadedPolicy) -> RunReport:
    result = run_once(loaded, NOW, RunOptions(as_of=NOW), env=ENV)
    assert result.exit_code == 0
    return result


def _removed(result: RunReport) -> dict[str, int]:
    return {o.rule: o.rows for o in result.outcomes if o.rows}


# --- gather ------------------------------------------------------------------------------


def test_gather_reports_broken_promises_before_a_run_and_kept_ones_after(
    tmp_path: Path, sqlite_url: str
) -> None:
    build_demo(sqlite_url, NOW)
    loaded = _policy(tmp_path, sqlite_url)
    before = gather(loaded, NOW)
    rules = {r.name: r for r in before.rules}
    assert [r.name for r in before.rules] == [r.name for r in loaded.policy.rules]
    assert rules["security-logs-90d"].status == "overdue"
    assert rules["security-logs-90d"].overdue > 1000
    assert rules["security-logs-90d"].oldest_age_days is not None
    assert rules["security-logs-90d"].oldest_age_days > rules["security-logs-90d"].deadline_days
    assert before.chain.state == "empty"
    assert before.broken > 0

    result = _run(loaded)
    after = gather(loaded, NOW)
    statuses = {r.name: r for r in after.rules}
    assert {r.status for r in after.rules} == {"kept"}
    assert after.kept == len(loaded.policy.rules)
    # The litigation hold keeps rows past their cutoff: held, never overdue.
    assert statuses["security-logs-90d"].held == rules["security-logs-90d"].held > 0
    assert statuses["security-logs-90d"].overdue == 0
    # Every row the run removed is in the trail, under its rule and the day it committed.
    assert {r.name: r.removed_total for r in after.rules if r.removed_total} == _removed(result)
    for rule in after.rules:
        if rule.removed_total:
            assert rule.last_run is not None
            assert sum(n for _, n in rule.removed_by_day) == rule.removed_total
    assert after.chain.state == "intact"
    assert after.chain.records > 0
    assert after.chain.where == str(tmp_path / "infraux.audit.db")
    holds = {h.name: h for h in after.holds}
    assert holds["litigation-2026-017"].active
    assert not holds["chargeback-2026-004"].active
    assert after.policy_sha256 is not None
    assert len(after.policy_sha256) == 64


def test_gather_does_not_create_the_default_audit_file(tmp_path: Path, sqlite_url: str) -> None:
    build_demo(sqlite_url, NOW)
    loaded = _policy(tmp_path, sqlite_url)
    data = gather(loaded, NOW)
    assert data.chain == ChainResult(str(tmp_path / "infraux.audit.db"))
    assert not (tmp_path / "infraux.audit.db").exists()


def test_gather_reads_the_trail_on_each_database(tmp_path: Path, db_url: str) -> None:
    """The audit trail in the app store itself, on SQLite, PostgreSQL and MariaDB."""
    build_demo(db_url, NOW)
    loaded = _policy(tmp_path, db_url, audit_in_store=True)
    assert {r.status for r in gather(loaded, NOW).rules} >= {"overdue"}
    result = _run(loaded)
    data = gather(loaded, NOW)
    assert {r.status for r in data.rules} == {"kept"}
    assert {r.name: r.removed_total for r in data.rules if r.removed_total} == _removed(result)
    assert data.chain.state == "intact"
    assert data.chain.records > 0
    assert data.chain.first_at is not None
    assert data.chain.last_at is not None
    days = {day for r in data.rules for day, _ in r.removed_by_day}
    assert data.chain.first_at.date() <= min(days) <= max(days) <= data.chain.last_at.date()


# --- render ------------------------------------------------------------------------------


def _rule(name: str, status: Any, **changes: Any) -> RuleReport:
    values: dict[str, Any] = {
        "name": name,
        "promise": "Security logs: 90 days",
        "source_policy": "Privacy Policy",
        "clause": "8. Data Retention",
        "source_url": None,
        "store": "app",
        "table": "security_logs",
        "action": "delete",
        "period": "90 days",
        "grace": "1 day",
        "period_days": 90.0,
        "deadline_days": 91.0,
        "status": status,
    }
    return RuleReport(**{**values, **changes})


def _data(*rules: RuleReport, chain: ChainResult | None = None) -> ReportData:
    return ReportData(
        as_of=NOW,
        generated_at=NOW,
        policy_file="policies/example.yaml",
        policy_sha256="ab" * 32,
        policy_title="Example retention",
        tool_version="0.1.0",
        rules=rules,
        holds=(
            HoldEntry("case-1", "Litigation", "rule logs-90d", None, True),
            HoldEntry("case-0", "Settled", "rule logs-90d", NOW, False),
        ),
        chain=chain or ChainResult("audit.db", records=12),
    )


def test_render_escapes_every_text_it_shows() -> None:
    hostile = '<script>alert("x")</script>'
    data = _data(
        _rule(
            "logs-90d",
            "kept",
            promise=f"We delete logs {hostile} & more",
            clause='<img src=x onerror="alert(1)">',
        ),
        chain=ChainResult("<b>audit</b>", records=0, error="<i>down</i>"),
    )
    page = render(data)
    assert "<script" not in page
    assert "<img" not in page
    assert "<b>audit" not in page
    assert "We delete logs &lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; more" in page
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in page


def test_render_is_self_contained() -> None:
    page = render(_data(_rule("logs-90d", "kept")))
    assert "Content-Security-Policy" in page
    for reference in ("src=", "href=", "@import", "url(", "<link", "<script"):
        assert reference not in page
    # The only URL is the SVG namespace, which is a name, not a request.
    assert page.count("://") == page.count('xmlns="http://www.w3.org/2000/svg"')


def test_render_summarises_statuses_and_the_chain() -> None:
    data = _data(
        _rule("logs-90d", "kept", oldest_age_days=40.0, oldest_remaining=NOW),
        _rule("sessions-30d", "overdue", overdue=7, oldest_age_days=400.0, oldest_remaining=NOW),
        _rule("files-1y", "error", error="no such table: files"),
        _rule("old-rule", "disabled"),
        chain=ChainResult("audit.db", records=12, broken_seq=5, reason="does not link"),
    )
    page = render(data)
    assert data.kept == 1
    assert data.broken == 2
    assert "<title>Retention report — Example retention</title>" in page
    assert "1 of 3 promises overdue; 1 could not be checked; audit chain BROKEN at" in page
    for name, status in (
        ("logs-90d", "kept"),
        ("sessions-30d", "overdue"),
        ("files-1y", "error"),
        ("old-rule", "disabled"),
    ):
        assert f'data-rule="{name}" data-status="{status}"' in page
    assert "no such table: files" in page
    assert "record seq=5: does not link" in page
    assert '<svg id="age-chart"' in page
    assert '<svg id="removed-chart"' in page


def test_render_plots_removals_per_day() -> None:
    days = ((date(2026, 11, 20), 40), (date(2026, 11, 23), 1200))
    page = render(_data(_rule("logs-90d", "kept", removed_total=1240, removed_by_day=days)))
    assert "<title>2026-11-23: 1,200 rows</title>" in page
    assert "<title>logs-90d, 2026-11-20: 40 rows</title>" in page


# --- the command -------------------------------------------------------------------------


def test_report_command_writes_the_page_and_exits_0_with_broken_promises(
    tmp_path: Path, sqlite_url: str
) -> None:
    build_demo(sqlite_url, NOW)
    _policy(tmp_path, sqlite_url)
    out = tmp_path / "out" / "report.html"
    result = CliRunner().invoke(
        report,
        ["-c", str(tmp_path / "infraux.yaml"), "--out", str(out), "--as-of", NOW.isoformat()],
        env={"RETENTION_DB_URL": sqlite_url},
    )
    assert result.exit_code == 0, result.output
    assert "promises kept" in result.output
    page = out.read_text(encoding="utf-8")
    assert 'data-status="overdue"' in page
    assert "Judged as of</dt><dd>2026-11-23 12:00 UTC" in page


def test_report_command_exits_2_on_an_invalid_policy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from retention import cli as cli_module

    monkeypatch.setitem(cli_module.cli.commands, "report", report)
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nrules: nope\n", encoding="utf-8")
    with pytest.raises(SystemExit) as exit_info:
        cli_module.main(["report", "-c", str(bad), "--out", str(tmp_path / "r.html")])
    assert exit_info.value.code == 2
    assert not (tmp_path / "r.html").exists()


# --- the page in a browser ---------------------------------------------------------------


def _require(condition: bool, message: str) -> None:
    """Skip locally, fail in CI (`CI` set): CI must prove the browser test ran."""
    if not condition:
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)


@pytest.mark.slow
def test_report_renders_offline_in_headless_chromium(tmp_path: Path, sqlite_url: str) -> None:
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    _require(
        not missing, f"{' and '.join(missing)} missing: apt-get install chromium chromium-driver"
    )
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
        from selenium.webdriver.common.by import By
    except ImportError:
        _require(False, "selenium is not installed (pip install -e '.[test]')")
        raise

    build_demo(sqlite_url, NOW)
    loaded = _policy(tmp_path, sqlite_url)
    _run(loaded)
    page = tmp_path / "report.html"
    result = CliRunner().invoke(
        report,
        ["-c", loaded.file, "--out", str(page), "--as-of", NOW.isoformat()],
        env={"RETENTION_DB_URL": sqlite_url},
    )
    assert result.exit_code == 0, result.output
    expected_title = f"Retention report — {loaded.policy.title}"

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1400,1000",
        # No network: names resolve nowhere and every connection goes to a dead proxy.
        "--host-resolver-rules=MAP * ~NOTFOUND",
        "--proxy-server=http://127.0.0.1:9",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=str(CHROMEDRIVER)))
    try:
        driver.get(page.as_uri())
        assert driver.title == expected_title

        rows = driver.find_elements(By.CSS_SELECTOR, "#promise-table tbody tr")
        assert [r.get_attribute("data-rule") for r in rows] == [r.name for r in loaded.policy.rules]
        for chart in ("age-chart", "removed-chart"):
            element = driver.find_element(By.ID, chart)
            assert element.tag_name == "svg"
            assert element.size["width"] > 0
            assert element.size["height"] > 0
        bars = driver.find_elements(By.CSS_SELECTOR, "#removed-chart rect title")
        assert len(bars) > len(loaded.policy.rules) // 2

        errors = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
        assert errors == []
        events = [json.loads(e["message"])["message"] for e in driver.get_log("performance")]
        requested = [
            e["params"]["request"]["url"]
            for e in events
            if e["method"] == "Network.requestWillBeSent"
        ]
        assert requested == [page.as_uri()]
        resources = driver.execute_script("return performance.getEntriesByType('resource').length")
        assert resources == 0

        ARTIFACTS.mkdir(exist_ok=True)
        metrics = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})
        size = metrics["cssContentSize"]
        shot = driver.execute_cdp_cmd(
            "Page.captureScreenshot",
            {
                "format": "png",
                "captureBeyondViewport": True,
                "clip": {
                    "x": 0,
                    "y": 0,
                    "width": size["width"],
                    "height": size["height"],
                    "scale": 1,
                },
            },
        )
        (ARTIFACTS / "report.png").write_bytes(base64.b64decode(shot["data"]))
        (ARTIFACTS / "report.html").write_text(page.read_text(encoding="utf-8"), encoding="utf-8")
    finally:
        driver.quit()
    assert (ARTIFACTS / "report.png").stat().st_size > 10_000
