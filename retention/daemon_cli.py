"""`retention daemon`: the command line of `retention.daemon`, and the process' main loop.

The main thread only waits: signal handlers set flags (SIGTERM/SIGINT: stop,
SIGHUP: reload), the main thread acts on them, and on stop shuts the scheduler
down, waiting for a running purge to reach its next batch boundary.
"""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path

import click

from retention.cli_options import config_option
from retention.daemon import Daemon, configure_daemon_logging
from retention.errors import ExitCode, PolicyError
from retention.health import Endpoints, serve
from retention.logs import get_logger

__all__ = ["daemon", "serve_daemon"]


def serve_daemon(
    config: Path,
    *,
    http_host: str = "0.0.0.0",
    http_port: int = 9464,
    jitter: int = 0,
    workers: int = 1,
    catch_up: bool = True,
    promises_every: float = 300.0,
) -> int:
    """Run the daemon until SIGTERM or SIGINT; return the process exit code."""
    configure_daemon_logging()
    log = get_logger()
    stop = threading.Event()
    reload = threading.Event()

    def on_stop(signum: int, _frame: object) -> None:
        stop.set()  # only a flag: work stops at the next batch boundary (a second one too)

    def on_reload(_signum: int, _frame: object) -> None:
        reload.set()

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGHUP, on_reload)
    service = Daemon(
        config,
        jitter=jitter or None,
        workers=workers,
        catch_up=catch_up,
        promises_every=promises_every,
        stop_event=stop,
    )
    try:
        service.start()
    except PolicyError as exc:
        log.error(
            "policy.invalid",
            policy=str(config),
            errors=[str(issue) for issue in exc.issues],
        )
        service.shutdown()
        return ExitCode.INVALID
    except Exception as exc:
        log.error("daemon.start_failed", error=f"{type(exc).__name__}: {exc}", exc_info=True)
        service.shutdown()
        return ExitCode.FAILED
    try:
        server = serve(
            Endpoints(service.metrics.text, service.alive, service.ready),
            http_host,
            http_port,
            log=lambda path, status: log.debug("http", path=path, status=status),
        )
    except OSError as exc:
        log.error("http.failed", host=http_host, port=http_port, error=str(exc))
        service.shutdown()
        return ExitCode.FAILED
    log.info("http.listening", host=server.host, port=server.port)
    try:
        while not stop.wait(0.25):
            if reload.is_set():
                reload.clear()
                service.reload()
    finally:
        # From here on a signal changes nothing. SIG_IGN rather than our handler: at
        # interpreter exit Python puts Python-level handlers back to SIG_DFL, and a
        # late second SIGTERM would then kill the process with status -15.
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)
        log.info("daemon.stopping")
        service.shutdown()
        server.shutdown()
    log.info("daemon.stopped")
    return ExitCode.OK


@click.command("daemon")
@config_option
@click.option(
    "--http-host", default="0.0.0.0", show_default=True, help="Address of /metrics and probes."
)
@click.option(
    "--http-port",
    type=click.IntRange(min=0, max=65535),
    default=9464,
    show_default=True,
    help="Port of /metrics, /livez and /readyz (0: any free port, logged).",
)
@click.option(
    "--jitter",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Start each run up to this many seconds after its slot (spreads load).",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Rules this process may run at the same time.",
)
@click.option(
    "--no-catch-up", is_flag=True, help="Do not run rules whose last slot was missed at start."
)
@click.option(
    "--check-every",
    type=click.FloatRange(min=0),
    default=300.0,
    show_default=True,
    help="Seconds between refreshes of the overdue/held metrics (0: only after runs).",
)
def daemon(
    config: Path,
    http_host: str,
    http_port: int,
    jitter: int,
    workers: int,
    no_catch_up: bool,
    check_every: float,
) -> None:
    """Run every enabled rule on its schedule until stopped (SIGTERM/SIGINT).

    Replicas coordinate through the audit store: each slot runs once, never two
    runs of a rule at once. SIGHUP reloads the policy (a bad one is rejected and the
    running schedule kept). Serves /metrics, /livez and /readyz on --http-port."""
    sys.exit(
        serve_daemon(
            config,
            http_host=http_host,
            http_port=http_port,
            jitter=jitter,
            workers=workers,
            catch_up=not no_catch_up,
            promises_every=check_every,
        )
    )


if __name__ == "__main__":  # pragma: no cover - `python -m retention.daemon_cli`
    daemon()
