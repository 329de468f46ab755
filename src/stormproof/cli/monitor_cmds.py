"""``serve``, ``report`` and ``alerts``: watching runs (``stormproof.monitor``)."""

from __future__ import annotations

import socket
import sys
import time
from pathlib import Path

import click
from rich.markup import escape

from stormproof.errors import StormproofError
from stormproof.runtime.home import check_run_name

from .session import Session, common, err, out, session


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8765,
    show_default=True,
    help="Port to listen on (0: any free port; the URL is printed).",
)
@click.option(
    "--token",
    envvar="STORMPROOF_TOKEN",
    metavar="TOKEN",
    help="Required on every request (or STORMPROOF_TOKEN); needed for any --host but loopback.",
)
@common
def serve(
    host: str, port: int, token: str | None, home: str | None, config_path: str | None
) -> None:
    """Serve the dashboard, the JSON API and /metrics for the runs in the home."""
    from stormproof.monitor.web.security import check_bind

    with session(home, config_path) as s:
        token = token or None
        check_bind(host, token)
        sock = _listen(host, port)
        _serve(s, sock, host, token)


def _banner(s: Session, sock: socket.socket, host: str, token: str | None) -> None:
    url = f"http://{_url_host(host)}:{sock.getsockname()[1]}/"
    out.print(f"stormproof dashboard of {escape(str(s.home.root))} at {url}")
    if token is not None:
        out.print(f"  open {url}?token=… once (the token is kept in a cookie)")
    out.print("  API: /api/runs · OpenAPI: /api/openapi.json · Prometheus: /metrics")
    sys.stdout.flush()


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as exc:
        sock.close()
        raise StormproofError(
            f"--host {host} --port {port}: cannot listen there ({exc.strerror}); "
            "pick another --port (0 takes any free one) or --host"
        ) from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def _url_host(host: str) -> str:
    return f"[{host.strip('[]')}]" if ":" in host else host


def _serve(s: Session, sock: socket.socket, host: str, token: str | None) -> None:
    """Build the app, then say where it is (the URL is printed once it can answer), then run."""
    import uvicorn

    from stormproof.monitor.web.app import Reader, create_app
    from stormproof.monitor.web.security import Guard, is_loopback

    loopback_only = is_loopback(host)
    # the reader opens its own store on its own thread (an SQLite connection stays on one)
    reader = Reader(lambda: Session(s.cwd, s.config, s.home).store, s.home, writable=True)
    reader.warm()
    app = create_app(reader, Guard(token, loopback_only))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    _banner(s, sock, host, token)
    try:
        server.run(sockets=[sock])
    finally:
        reader.close()
        sock.close()


@click.command()
@click.argument("name")
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False),
    help="The HTML file to write.",
)
@common
def report(name: str, output: str, home: str | None, config_path: str | None) -> None:
    """Write one self-contained HTML file of run NAME (opens offline)."""
    from stormproof.monitor.report import render_report, report_data

    with session(home, config_path, read_only=True) as s:
        check_run_name(name)
        html = render_report(report_data(s.store, s.home, name))
        path = Path(output)
        try:
            path.write_text(html, encoding="utf-8")
        except OSError as exc:
            raise StormproofError(f"-o {output}: cannot write it ({exc.strerror})") from None
        out.print(f"wrote {escape(str(path))} ({len(html.encode()) / 1024:.0f} KiB)")


@click.group()
def alerts() -> None:
    """Alert rules (the `alerts:` of stormproof.yaml)."""


@alerts.command("test")
@click.option(
    "--url",
    "urls",
    multiple=True,
    metavar="URL",
    help="Send to this apprise URL instead of the rules' targets (repeatable).",
)
@common
def alerts_test(urls: tuple[str, ...], home: str | None, config_path: str | None) -> None:
    """Send a test notification to every target of the alert rules (or to --url)."""
    from stormproof.monitor.alerts.deliver import apprise_send
    from stormproof.monitor.alerts.rules import Alert

    with session(home, config_path) as s:
        targets = list(urls) or list(dict.fromkeys(u for a in s.config.alerts for u in a.notify))
        if not targets:
            where = s.config.source or "stormproof.yaml"
            raise StormproofError(
                f"{where}: no alert rules to test; add some under alerts: "
                '(like `- {on: workflow_failed, notify: "json://host/path"}`), or give --url'
            )
        now = time.time()
        alert = Alert(
            f"test:{now:.0f}",
            0,
            "test",
            "info",
            "stormproof: test notification",
            f"A test notification from `stormproof alerts test` in {s.home.root}.",
            now,
            0,
        )
        failed = 0
        for url in targets:
            ok, error, shown = apprise_send(url, alert)
            if ok:
                out.print(f"[green]sent[/] to {escape(shown)}")
            else:
                failed += 1
                err.print(f"[red]failed[/] {escape(shown)}: {escape(error)}")
        if failed:
            sys.exit(1)
