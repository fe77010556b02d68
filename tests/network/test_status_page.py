"""The operator's status page in headless Chromium, against a real federation on loopback.

A server over TLS and four client processes; the browser (Debian's ``chromium`` driven by
the ``playwright`` package, no browser download) is refused without the operator's token,
logs in through the page's own form, watches round 1 wait for its clients (deadline
counting down), then the run finish: round, client counts, the chart's points, the run id
and the refusals are read off the page. A second test feeds the same page (no server) a
status with an evaluation set, differential privacy, a retry and hostile strings: the
accuracy chart, the budget spent, escaped text, the login form on 401 and a vanished
server. Screenshots go to ``tmp_path`` and, when ``FEDLAKE_TEST_ARTIFACTS`` names a
folder, there too.

Missing tools fail the test (never a skip), with the commands that install them.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import shutil
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from fedlake.backends.remote.status_page import STATUS_HTML
from tests.network.harness import free_port, prepare, processes, url, write_config

pytestmark = pytest.mark.integration

CHROMIUM = Path(os.environ.get("FEDLAKE_CHROMIUM", "/usr/bin/chromium"))
INSTALL = (
    "the status page test needs Debian's chromium and the playwright package: "
    "`apt-get install -y chromium` and `.venv/bin/pip install playwright` "
    "(do not run `playwright install`: the test drives /usr/bin/chromium; "
    "FEDLAKE_CHROMIUM names another binary)"
)
ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
ROUNDS, PER_ROUND = 3, 3  # of the 4 digits clients
WAIT_MS = 30_000  # the longest any one step in the browser waits
RUN_MS = 180_000  # the whole federation, from its clients' start to its end


def browser_tools() -> Any:
    """playwright's sync API, or the test fails saying how to install what is missing."""
    if not (CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK)):
        pytest.fail(f"no chromium at {CHROMIUM}; {INSTALL}", pytrace=False)
    try:
        from playwright import sync_api
    except ImportError:
        pytest.fail(f"no playwright package; {INSTALL}", pytrace=False)
    return sync_api


def spki_pin(cert_pem: Path) -> str:
    """base64 SHA-256 of the certificate's public key: Chromium accepts this key only."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    key = x509.load_pem_x509_certificate(cert_pem.read_bytes()).public_key()
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(hashlib.sha256(der).digest()).decode()


@contextlib.contextmanager
def chromium(profile: Path, *extra: str) -> Iterator[Any]:
    """A headless Chromium context with a fresh profile; closed (the browser too) at the end."""
    sync_api = browser_tools()
    with sync_api.sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(profile),
            executable_path=str(CHROMIUM),
            headless=True,
            args=[*ARGS, *extra],
            viewport={"width": 1100, "height": 900},
            timeout=WAIT_MS,
        )
        try:
            context.set_default_timeout(WAIT_MS)
            yield context
        finally:
            context.close()


def save(page: Any, tmp_path: Path, name: str) -> Path:
    """A full-page screenshot in ``tmp_path``, copied to $FEDLAKE_TEST_ARTIFACTS if set."""
    shot = tmp_path / name
    page.screenshot(path=str(shot), full_page=True, timeout=WAIT_MS)
    assert shot.stat().st_size > 10_000, "the screenshot is (nearly) empty"
    stable = os.environ.get("FEDLAKE_TEST_ARTIFACTS")
    if stable:
        Path(stable).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, Path(stable) / name)
    print(f"screenshot: {shot}" + (f" (and {stable}/{name})" if stable else ""))
    return shot


def text(page: Any, selector: str) -> str:
    return str(page.locator(selector).inner_text(timeout=WAIT_MS)).strip()


def seconds(clock: str) -> int:
    """``m:ss`` in seconds."""
    minutes, secs = clock.split(":")
    return 60 * int(minutes) + int(secs)


def test_the_status_page_in_headless_chromium(tmp_path: Path) -> None:
    browser_tools()  # first: without the tools nothing else is worth starting
    ids = prepare(tmp_path)
    assert len(ids) == 4
    config = write_config(
        tmp_path,
        federation__rounds=ROUNDS,
        federation__clients_per_round=PER_ROUND,
        deployment__round_timeout_s=120,
        deployment__linger_s=600,  # the server stays up after the run (killed at the end)
    )
    certs = tmp_path / "certs"
    token = (certs / "operator.token").read_text().strip()
    port = free_port()
    base = url(port, tls=True)
    ca = ssl.create_default_context(cafile=certs / "ca.pem")
    asked: list[str] = []
    js_errors: list[str] = []

    with processes(tmp_path) as procs:
        procs.server(config, port)

        # Without the token: the page, the API and a wrong login answer 401.
        for path in ("/status", "/v1/status"):
            assert httpx.get(base + path, verify=ca, timeout=10).status_code == 401
            bad = {"Authorization": "Bearer not-the-token"}
            assert httpx.get(base + path, headers=bad, verify=ca, timeout=10).status_code == 401
        wrong = httpx.post(base + "/status/login", data={"token": "nope"}, verify=ca, timeout=10)
        assert wrong.status_code == 401 and "set-cookie" not in wrong.headers
        auth = {"Authorization": f"Bearer {token}"}
        run_id = httpx.get(base + "/v1/status", headers=auth, verify=ca, timeout=10).json()["run"]

        # Chromium trusts the server's key only (no CA import into a browser profile).
        pin = spki_pin(certs / "server.pem")
        with chromium(tmp_path / "profile", f"--ignore-certificate-errors-spki-list={pin}") as ctx:
            page = ctx.new_page()
            page.on("request", lambda r: asked.append(r.url))
            page.on("pageerror", lambda e: js_errors.append(str(e)))
            log_in(ctx, page, base, token)
            assert text(page, "#run") == run_id

            # Round 1 is open and waits for its clients, none of them started yet.
            page.wait_for_function("document.getElementById('round').textContent==='1'")
            assert text(page, "#attempt") == "first attempt"
            assert text(page, "#sampled") == str(PER_ROUND)
            assert text(page, "#finished") == "0"
            assert text(page, "#connected") == "0"
            assert text(page, "#sampled-list").count("client-") == PER_ROUND
            before = text(page, "#deadline")
            assert 0 < seconds(before) <= 120
            page.wait_for_function(f"document.getElementById('deadline').textContent!=={before!r}")
            assert seconds(text(page, "#deadline")) < seconds(before)  # counting down
            assert page.locator("#chart").get_attribute("data-points") == "0"
            save(page, tmp_path, "status_page_waiting.png")

            # The clients join; the page follows the run to its end.
            started = time.monotonic()
            for cid in ids:
                procs.client(cid, port)
            page.wait_for_function(
                "document.getElementById('state').textContent.startsWith('finished')",
                timeout=RUN_MS,
            )
            print(f"the run took {time.monotonic() - started:.1f} s once its clients started")
            page.wait_for_function(
                f"document.querySelectorAll('#rounds tbody tr').length==={ROUNDS}"
            )
            check_finished(page, run_id)
            save(page, tmp_path, "status_page.png")

    assert not js_errors, js_errors
    strangers = [u for u in asked if not u.startswith(base + "/")]
    assert not strangers, f"the page asked for something outside the server: {strangers}"


def log_in(context: Any, page: Any, base: str, token: str) -> None:
    """Refused without the token, then in through the page's form; the cookie carries on."""
    first = page.goto(base + "/status")
    assert first is not None and first.status == 401
    if not page.locator("#login").count():
        # GET /status itself needs the token (app.py), so the page's login form shows only
        # in a page loaded with it: load it once with the bearer header (as a proxy that
        # adds it would); its own fetch of /v1/status has neither header nor cookie, gets
        # 401 and shows the form.
        def with_token(route: Any) -> None:
            route.continue_(headers={**route.request.headers, "authorization": f"Bearer {token}"})

        page.route(base + "/status", with_token)
        loaded = page.goto(base + "/status")
        assert loaded is not None and loaded.status == 200
        page.unroute(base + "/status")
    page.locator("#login").wait_for(state="visible")
    assert page.locator("#main").is_hidden()
    page.fill("#token", token)
    with page.expect_navigation():
        page.click("#login button[type=submit]")
    cookie = {c["name"]: c for c in context.cookies(base)}["fedlake_operator"]
    assert cookie["httpOnly"] and cookie["secure"] and cookie["sameSite"] == "Strict"
    page.wait_for_function("document.getElementById('state').textContent==='running'")
    assert page.locator("#login").is_hidden() and page.locator("#main").is_visible()


def check_finished(page: Any, run_id: str) -> None:
    """What the page shows once the run is over."""
    assert text(page, "#state") == "finished: max_rounds"
    assert text(page, "#run") == run_id
    assert text(page, "#round") == str(ROUNDS)
    assert text(page, "#connected") == "4"
    assert text(page, "#sampled") == str(PER_ROUND)
    assert text(page, "#finished") == str(PER_ROUND)
    assert text(page, "#connected-list").count("client-") == 4
    assert text(page, "#deadline") == "-"
    assert text(page, "#epsilon") == "-"  # no [privacy] in this federation
    newest = page.locator("#rounds tbody tr").nth(0).locator("td")
    assert newest.nth(0).inner_text() == str(ROUNDS)
    assert newest.nth(4).inner_text() == f"{PER_ROUND} / {PER_ROUND}"

    # The chart: the server has no evaluation, so the mean train loss, and it says so.
    chart = page.locator("svg#chart")
    assert chart.get_attribute("data-metric") == "train_loss"
    assert chart.get_attribute("data-points") == str(ROUNDS)
    points = chart.locator("circle.point")
    assert points.count() == ROUNDS
    assert [points.nth(i).get_attribute("data-round") for i in range(ROUNDS)] == [
        str(r) for r in range(1, ROUNDS + 1)
    ]
    assert all(float(points.nth(i).get_attribute("data-value")) > 0 for i in range(ROUNDS))
    assert text(page, "#chart-title") == "Mean train loss per round"
    assert "no evaluation" in text(page, "#chart-note")

    # The refusals: this test's own requests without the token.
    refusals = text(page, "#refusals tbody")
    assert "GET /status" in refusals and "GET /v1/status" in refusals
    assert "POST /status/login" in refusals and "wrong operator token" in refusals


HOSTILE = '<img src=x onerror="window.pwned=1">'


def served_status(**over: Any) -> dict[str, Any]:
    """A /v1/status answer: round 3 open (a retry), 2 rounds evaluated under DP."""

    def record(r: int, acc: float, eps: float) -> dict[str, Any]:
        return {
            "round": r, "attempt": 0, "eval_accuracy": acc, "eval_loss": 1.0,
            "train_loss": 1.5 / r, "num_completed": 2, "num_sampled": 3, "num_dropped": 1,
            "num_failed": 0, "num_rejected": 0, "bytes_up": 2_500_000, "bytes_down": 2_600_000,
            "epsilon": eps, "delta": 1e-5, "duration_s": 4.2,
        }  # fmt: skip

    status = {
        "run": "run" + HOSTILE, "finished": None, "round": 3, "attempt": 1,
        "deadline_in_s": 95.0, "connected": ["a", "b", HOSTILE], "sampled": ["a", HOSTILE],
        "fetched": ["a"], "finished_clients": ["a"],
        "rounds": [record(1, 0.42, 0.8), record(2, 0.61, 1.234)],
        "refusals": [{"time": 1.7e9, "client": HOSTILE, "where": "PUT /v1/x", "status": 403,
                      "reason": HOSTILE}],
    }  # fmt: skip
    return status | over


def test_the_status_page_shows_accuracy_privacy_and_escapes_what_it_shows(tmp_path: Path) -> None:
    origin = "https://fedlake.invalid"  # every request is answered here, by the test
    state: dict[str, Any] = {"answer": served_status(), "polls": 0}
    strangers: list[str] = []
    js_errors: list[str] = []

    def serve(route: Any) -> None:
        path = route.request.url.removeprefix(origin)
        if path == "/status":
            route.fulfill(status=200, content_type="text/html; charset=utf-8", body=STATUS_HTML)
        elif path == "/v1/status":
            state["polls"] += 1
            answer = state["answer"]
            if answer is None:
                route.abort("connectionrefused")
            elif isinstance(answer, int):
                route.fulfill(status=answer, json={"error": "the operator's token"})
            else:
                route.fulfill(status=200, json=answer)
        else:
            strangers.append(route.request.url)
            route.abort()

    with chromium(tmp_path / "profile") as ctx:
        page = ctx.new_page()
        page.on("pageerror", lambda e: js_errors.append(str(e)))
        ctx.route("**/*", serve)
        page.goto(origin + "/status")
        page.wait_for_function("document.getElementById('state').textContent==='running'")

        assert text(page, "#run") == "run" + HOSTILE
        assert text(page, "#round") == "3" and text(page, "#attempt") == "retry 1"
        assert 90 <= seconds(text(page, "#deadline")) <= 95
        assert text(page, "#connected") == "3" and text(page, "#sampled") == "2"
        assert text(page, "#finished") == "1" and text(page, "#sampled-note") == "fetched 1"
        assert text(page, "#epsilon") == "ε 1.234"
        assert text(page, "#delta") == "δ 1.0e-5 (round 2)"
        chart = page.locator("svg#chart")
        assert chart.get_attribute("data-metric") == "eval_accuracy"
        assert chart.locator("circle.point").count() == 2
        assert text(page, "#chart-title") == "Accuracy per round"
        assert text(page, "#chart-note") == ""
        newest = page.locator("#rounds tbody tr").nth(0).locator("td")
        assert [newest.nth(i).inner_text() for i in (0, 2, 4, 5, 6, 8)] == [
            "2", "61.00%", "2 / 3", "1 · 0 · 0", "2.5 MB", "1.234"
        ]  # fmt: skip
        assert HOSTILE in text(page, "#refusals tbody") and HOSTILE in text(page, "#sampled-list")
        assert page.locator("img").count() == 0
        assert page.evaluate("window.pwned") is None
        save(page, tmp_path, "status_page_accuracy_privacy.png")

        # The server goes away: the page keeps what it showed and says so.
        state["answer"] = None
        page.wait_for_function(
            "document.getElementById('state').textContent==='server unreachable'"
        )
        assert text(page, "#epsilon") == "ε 1.234"

        # A 401 (token changed, cookie gone): the login form, and no more polling.
        state["answer"] = 401
        page.locator("#login").wait_for(state="visible")
        assert page.locator("#main").is_hidden()
        polls = state["polls"]
        page.wait_for_timeout(4_500)  # two polling periods
        assert state["polls"] == polls

    assert not js_errors, js_errors
    assert not strangers, f"the page asked for something outside the server: {strangers}"
