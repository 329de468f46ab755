"""The dashboard and the report in a real headless Chromium.

Screenshots go to a temporary directory (its path is printed; see it with ``-s``).
``STORMPROOF_DOCS_PNG=1`` also writes the docs' screenshot, ``docs/img/dashboard.png``.
"""

from __future__ import annotations

import json
import os
import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ...cli.conftest import Cli, wait_for
from .._runs import make_runs
from ..test_metrics import compare, scrape
from ._browser import Page, chromium, serving

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[3]
XSS_NAME = "<img src=x onerror=alert(1)>"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as b:
        yield b


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("screenshots")
    print(f"\nscreenshots: {path}")
    return path


def test_the_runs_page_lists_a_finished_run(cli: Cli, browser: Any, shots: Path) -> None:
    make_runs(cli)
    with serving(cli) as url:
        p = Page(browser, shots)
        page = p.open(url)
        assert page.locator("#runs tbody tr").count() == 2
        demo = page.locator("tr[data-run='demo']")
        assert demo.locator(".state").inner_text() == "failed"
        assert "demo <i>workflow</i>" in demo.inner_text()  # markup shown as text
        assert demo.locator("td").nth(6).inner_text().endswith("3/4")
        assert page.locator("tr[data-run='small'] .state").inner_text() == "succeeded"
        p.shot("runs")
        demo.locator("a").click()
        page.wait_for_url(url + "runs/demo")
        page.wait_for_selector("body[data-ready='1']")
        assert page.locator("#run-name").inner_text() == "demo"
        small = p.open(url + "runs/small")
        small.wait_for_selector("body[data-ready='1']")
        figures = {
            f.locator(".label").inner_text(): f.locator(".value").inner_text()
            for f in small.locator("#figures .figure").all()
        }
        assert re.fullmatch(r"0\.[3-9]\d*\s*s|[1-9][\d.]*\s*s", figures["CPU time"]), figures
        assert re.fullmatch(r"(9\d|[1-9]\d\d) MiB", figures["peak memory (one attempt)"])
        assert p.errors == [] and p.dialogs == []


GATED = "while [ ! -f $STORMPROOF_DATA_DIR/{gate} ]; do sleep 0.1; done"
LIVE = f"""\
name: live
tasks:
  - {{id: long, vcpus: 1, memory: 256, command: "{GATED.format(gate="go-long")}"}}
  - {{id: a, vcpus: 1, memory: 256, command: "{GATED.format(gate="go-a")}"}}
  - {{id: b, vcpus: 1, memory: 256, command: "echo b", depends_on: [a]}}
"""
SPOT = """\
pools:
  - {name: spot, market: spot, vcpus: 1, memory: 1024, price: 0.05, count: 2}
  - {name: ondemand, market: on_demand, vcpus: 1, memory: 1024, price: 0.2, count: 1}
policy: {fallback_after_interruptions: 1}
"""


def instance_of(cli: Cli, run: str, attempt: str) -> str | None:
    proc = cli("fleet", run, "--json")
    if proc.returncode != 0:
        return None
    for inst in json.loads(proc.stdout):
        if attempt in inst["attempts"]:
            return str(inst["id"])
    return None


def state_is(task: str, state: str) -> str:
    """JS: the task's row in the task list shows ``state``."""
    return (
        f"document.querySelector(\"#tasks tr[data-task='{task}'] .state\")"
        f"?.textContent === '{state}'"
    )


RUN_STATE = "document.querySelector('#run-state').dataset.state === '{}'"
TIMELINE = "Chart.getChart('timeline')"


def test_a_live_run_updates_and_its_timeline_marks_the_interrupted_attempt(
    cli: Cli, browser: Any, shots: Path
) -> None:
    cli.write("stormproof.yaml", SPOT)
    cli.write("live.yaml", LIVE)
    proc = cli("run", "live.yaml", "--name", "live", "--detach")
    assert proc.returncode == 0, proc.stderr
    data = cli.data_dir / "live" / "data"
    with serving(cli) as url:
        p = Page(browser, shots)
        p.open(url + "runs/live")
        p.wait(RUN_STATE.format("running"), what="the run running")
        wait_for(lambda: instance_of(cli, "live", "long/1") is not None, what="long/1 placed")
        instance = instance_of(cli, "live", "long/1")
        assert instance is not None and instance.startswith("spot-")
        p.wait(state_is("long", "running"), what="long running on the page")
        seq_before = int(p.page.evaluate("document.body.dataset.lastSeq"))

        proc = cli("interrupt", "live", "--instance", instance, "--notice", "1s")
        assert proc.returncode == 0, proc.stderr
        # the page follows without a reload: long's first attempt ends interrupted
        p.wait(
            f"{TIMELINE}.data.datasets.some(d => d.label === 'interrupted')",
            what="the interrupted bar",
        )
        (data / "go-a").touch()
        p.wait(state_is("b", "succeeded"), what="b succeeded on the page")
        assert p.page.evaluate(state_is("a", "succeeded"))
        assert p.page.evaluate(state_is("long", "running"))
        (data / "go-long").touch()
        p.wait(RUN_STATE.format("succeeded"), what="the run's end on the page")
        assert int(p.page.evaluate("document.body.dataset.lastSeq")) > seq_before

        status = cli.status("live")
        attempts = {
            f"{t}/{a['number']}": a["state"]
            for t, v in status["tasks"].items()
            for a in v["attempts"]
        }
        assert attempts == {
            "long/1": "interrupted",
            "long/2": "succeeded",
            "a/1": "succeeded",
            "b/1": "succeeded",
        }
        # one bar per attempt, the interrupted one in its own colour, the notice marked
        assert p.bars() == {
            "succeeded": 3,
            "interrupted": 1,
            "interruption notice": 1,
            "instance lost": 0,
        }
        rows = p.page.evaluate(f"{TIMELINE}.data.labels")
        marked = p.page.evaluate(
            f"{TIMELINE}.data.datasets.find(d => d.label === 'interruption notice').data[0].y"
        )
        interrupted_on = p.page.evaluate(
            f"{TIMELINE}.data.datasets.find(d => d.label === 'interrupted').data[0].y"
        )
        assert marked == interrupted_on == instance and instance in rows
        figures = p.page.locator("#figures").inner_text()
        assert "interruptions\n1" in figures and "notices\n1" in figures
        # the run's figures: /metrics and status --json agree
        with urllib.request.urlopen(url + "metrics") as r:
            compare(scrape(r.read().decode()), status, "live")
        p.page.locator("tr[data-task='long']").click()
        p.page.wait_for_selector("#attempts tr[data-attempt='2']")
        assert "interrupted" in p.page.locator("#attempts tr[data-attempt='1']").inner_text()
        path = p.shot("run-live")
        assert p.errors == [] and p.dialogs == []
    if os.environ.get("STORMPROOF_DOCS_PNG"):
        docs_png(path)


def docs_png(path: Path) -> None:
    """The docs' screenshot: the top of the page, in 64 colours to stay small."""
    from PIL import Image

    with Image.open(path) as image:
        top = image.crop((0, 0, image.width, min(image.height, 1000)))
        small = top.convert("RGB").quantize(colors=64)
        small.save(ROOT / "docs" / "img" / "dashboard.png", optimize=True)


def xss_workflow() -> str:
    return (
        "name: '<script>window.__xss = 2</script>'\n"
        "global_config: {on_failure: continue}\n"
        "tasks:\n"
        f"  - id: evil\n    name: '{XSS_NAME}'\n"
        "    command: 'echo \"<img src=x onerror=alert(3)>\" >&2; exit 1'\n"
        "    retry_attempts: 0\n"
        "  - {id: fine, name: '<b onmouseover=alert(4)>bold</b>', command: 'true'}\n"
    )


def test_a_task_named_like_markup_runs_no_script_on_the_page_nor_in_the_report(
    cli: Cli, browser: Any, shots: Path
) -> None:
    from playwright.sync_api import expect

    cli.write("xss.yaml", xss_workflow())
    proc = cli("run", "xss.yaml", "--name", "xss", "-q")
    assert proc.returncode == 1, proc.stderr
    report = cli.cwd / "xss.html"
    assert cli("report", "xss", "-o", str(report)).returncode == 0
    with serving(cli) as url:
        for where in (url + "runs/xss", report.as_uri()):
            p = Page(browser, shots)
            page = p.open(where)
            assert page.locator("tr[data-task='evil'] .task-name").inner_text() == XSS_NAME
            page.locator("tr[data-task='evil']").click()
            page.wait_for_selector("#attempts tr[data-attempt='1']")
            page.locator("#attempts tr[data-attempt='1'] button", has_text="stderr").click()
            expect(page.locator("#log")).to_contain_text("img")
            assert page.locator("#log").inner_text().strip() == "<img src=x onerror=alert(3)>"
            page.locator("tr[data-task='fine'] .task-name").hover()
            page.wait_for_timeout(300)
            # nothing was parsed as markup: no element from the names, the log or the workflow
            assert page.evaluate("document.querySelectorAll('img, b, main script').length") == 0
            assert page.evaluate("window.__xss === undefined")
            shown = page.locator("#run-workflow").inner_text()
            assert "<script>window.__xss = 2</script>" in shown
            assert p.dialogs == [] and p.errors == []
            p.shot("xss-" + ("report" if where.startswith("file:") else "page"))


def test_the_report_is_one_file_that_opens_offline(cli: Cli, browser: Any, shots: Path) -> None:
    from playwright.sync_api import expect

    make_runs(cli)
    report = cli.cwd / "demo.html"
    proc = cli("report", "demo", "-o", str(report))
    assert proc.returncode == 0, proc.stderr
    text = report.read_text()
    assert "<script src=" not in text and "<link" not in text
    p = Page(browser, shots)
    p.page.route(
        "**/*",
        lambda route: route.continue_() if route.request.url.startswith("file:") else route.abort(),
    )
    page = p.open(report.as_uri())
    assert [u for u in p.requests if not u.startswith("file:")] == []
    status = cli.status("demo")
    attempts = sum(len(t["attempts"]) for t in status["tasks"].values())
    bars = p.bars()
    assert bars["succeeded"] + bars["failed"] == attempts and bars["failed"] == 2
    assert page.locator("#run-state").inner_text() == "failed"
    assert "spent" in page.locator("#figures").inner_text()
    assert page.locator("#tasks tbody tr").count() == 4
    assert page.locator("#cancel").is_hidden()
    page.locator("tr[data-task='broken']").click()
    page.locator("#attempts tr[data-attempt='1'] button", has_text="stderr").click()
    expect(page.locator("#log")).to_contain_text("broken")
    page.locator("tr[data-task='analyse']").click()
    page.locator("#attempts tr[data-attempt='1'] button", has_text="stdout").click()
    # a locator assertion, not wait_for_function: the pages' CSP forbids the eval it uses
    expect(page.locator("#log")).to_contain_text("failed attempts only")
    assert p.errors == [] and p.dialogs == []
    p.shot("report")


def test_a_log_the_server_will_not_serve_shows_why_in_the_pane(
    cli: Cli, browser: Any, shots: Path
) -> None:
    """The pane shows the API's ``detail`` (for an AWS attempt, S3's one-line refusal and its
    fix: ``test_aws_logs``); here the refusal of a log replaced by a link out of the run."""
    from playwright.sync_api import expect

    make_runs(cli)
    log = cli.data_dir / "demo" / "tasks" / "analyse" / "attempt-1" / "stdout.log"
    log.unlink()
    os.symlink(cli.cwd / "stormproof.yaml", log)
    with serving(cli) as url:
        p = Page(browser, shots)
        page = p.open(url + "runs/demo")
        page.locator("tr[data-task='analyse']").click()
        page.locator("#attempts tr[data-attempt='1'] button", has_text="stdout").click()
        expect(page.locator("#log")).to_contain_text("404: ")
        shown = page.locator("#log").inner_text()
        assert shown == "404: the stdout log of analyse/1 is not in the run's directory"
        assert p.errors == [] and p.dialogs == []
