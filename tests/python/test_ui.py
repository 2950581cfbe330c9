"""The web UI (/ui/) in a real browser: Debian's Chromium, driven by Playwright, against a real
`ferry up` with tokens, pushed versions with lineage, an endpoint with a canary and a shadow,
live traffic with feedback, and drift.

FERRY_UI_SCREENSHOTS=DIR also saves the main pages as PNG files there (`make screenshots`
writes them to docs/ui/ for the README).
"""
import http.server
import json
import os
import pathlib
import random
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest
from playwright.sync_api import expect, sync_playwright

from conftest import ROOT, Process, ferry_bin, ferry_env, free_port, variant

CHROMIUM = os.environ.get("FERRY_CHROMIUM", "/usr/bin/chromium")
TOKENS = {role: f"{role}-token-for-the-ui-test-0123456789" for role in ("read", "feedback", "write", "admin")}
COMMIT = "3f2a9c1e8b7d6a5f4e3d2c1b0a9f8e7d6c5b4a39"
REPO_URL = "https://github.com/acme/fraud-model"
SHOTS = os.environ.get("FERRY_UI_SCREENSHOTS")


class Site:
    """`ferry up` with tokens, and the ferry CLI pointed at it with the write token."""

    def __init__(self, tmp: pathlib.Path):
        self.tmp = tmp
        tokens = tmp / "tokens"
        tokens.write_text("".join(f"{role}:{secret}\n" for role, secret in TOKENS.items()))
        self.up = Process(["up", "--no-demo", "--data-dir", str(tmp / "data"), "--tokens-file", str(tokens),
                           "--drift-interval", "2s", "--webhook-max-attempts", "1", "--webhook-allow-private"], tmp / "up.log", cwd=tmp)
        self.base = f"http://{self.up.address}"
        self.up.wait_until(lambda: self.get("/readyz", token=None)["status"] == "ready", "ferry up starting")

    def ferry(self, *args, token="write"):
        env = {**ferry_env(), "FERRY_REGISTRY": self.base, "FERRY_TOKEN": TOKENS[token]}
        out = subprocess.run([ferry_bin(), *args], env=env, capture_output=True, text=True, timeout=120, cwd=self.tmp)
        assert out.returncode == 0, out.stdout + out.stderr
        return out.stdout

    def request(self, method, path, body=None, token="read"):
        headers = {"content-type": "application/json"}
        if token:
            headers["authorization"] = f"Bearer {TOKENS[token]}"
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")

    def get(self, path, token="read"):
        status, body = self.request("GET", path, token=token)
        assert status == 200, (path, status, body)
        return body

    def infer(self, model, row=None, id=None):
        """One row of 32 features (zeros, or `row`), with `id` to give feedback on."""
        row = row or [0.0] * 32
        request = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 32], "data": row}]}
        if id:
            request["id"] = id
        return self.request("POST", f"/v2/models/{model}/infer", request, token="read")


class Traffic(threading.Thread):
    """Requests to the endpoint, feature f0 shifted by 2 from the training data (drift), and
    feedback for each answer, until stopped."""

    def __init__(self, site):
        super().__init__(daemon=True)
        self.site, self.stop_flag, self.answers = site, threading.Event(), []

    def run(self):
        rng = random.Random(7)
        n = 0
        while not self.stop_flag.is_set():
            n += 1
            row = [round(rng.gauss(0.0, 1.0), 5) for _ in range(32)]
            row[0] += 2.0
            status, body = self.site.infer("fraud", row, id=f"ui-{n}")
            if status == 200:
                self.answers.append(body["model_version"])
                self.site.request("POST", "/api/v1/endpoints/fraud/feedback",
                                  {"id": body["id"], "reward": 1.0 if body["model_version"] == "1" else 0.8,
                                   "label": 0}, token="feedback")
            time.sleep(0.02)

    def stop(self):
        self.stop_flag.set()
        self.join(timeout=10)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ui")
    s = Site(tmp)
    train = tmp / "train.csv"
    train.write_text(subprocess.run([sys.executable, str(ROOT / "scripts" / "drift_demo.py"), "train", "2000"],
                                    capture_output=True, text=True, check=True).stdout)
    common = ["--git", COMMIT, "--git-repo", REPO_URL, "--data-uri", f"s3://ml/fraud/train.csv={'b' * 64}",
              "--profile-data", str(train)]
    s.ferry("model", "push", str(variant(tmp, "one")), "--name", "fraud", *common, "--param", "lr=0.01",
            "--metric", "auc=0.91", "--description", "the first fraud model", "--alias", "production")
    s.ferry("model", "push", str(variant(tmp, "two")), "--name", "fraud", *common, "--param", "lr=0.02",
            "--metric", "auc=0.93")
    s.ferry("model", "push", str(variant(tmp, "three")), "--name", "fraud", *common, "--param", "lr=0.05",
            "--metric", "auc=0.92")
    s.ferry("endpoint", "set", "fraud", "--model", "fraud", "--stable", "1", "--canary", "2", "--weight", "0.3",
            "--shadow", "3", "--drift", "psi:0.2")
    s.ferry("model", "push", str(variant(tmp, "c1")), "--name", "churn", "--alias", "production",
            "--git", COMMIT, "--git-repo", "git@gitlab.com:acme/churn.git")
    s.ferry("model", "push", str(variant(tmp, "c2")), "--name", "churn")
    traffic = Traffic(s)
    traffic.start()
    # Every version of the endpoint answers or is compared, and reports reach the registry.
    deadline = time.time() + 60
    while time.time() < deadline:
        versions = {v["version"]: v for v in s.get("/api/v1/endpoints/fraud/analysis?window=1m")["versions"]}
        if versions.get(1, {}).get("requests", 0) > 20 and versions.get(2, {}).get("requests", 0) > 5 \
                and versions.get(3, {}).get("shadow_compared", 0) > 5:
            break
        time.sleep(1)
    else:
        pytest.fail(f"no traffic in the analysis: {versions}\n{s.up.log.read_text()[-3000:]}")
    s.traffic = traffic
    yield s
    traffic.stop()
    s.up.stop()


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        # `rebound.example` resolves to 127.0.0.1, as a name re-pointed by DNS rebinding would.
        b = p.chromium.launch(executable_path=CHROMIUM,
                              args=["--no-sandbox", "--host-resolver-rules=MAP rebound.example 127.0.0.1"])
        yield b
        b.close()


class Page:
    """A tab signed in with a token, collecting console errors and failed requests."""

    def __init__(self, browser, site, token):
        self.context = browser.new_context(viewport={"width": 1366, "height": 900})
        self.page = self.context.new_page()
        self.errors = []
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.site = site
        self.page.goto(f"{site.base}/ui/")
        self.page.get_by_label("API token").fill(TOKENS[token])
        self.page.get_by_role("button", name="Sign in").click()
        expect(self.page.locator("#who")).to_have_text(f"role: {token}")

    def open(self, path):
        self.page.goto(f"{self.site.base}{path}")
        return self.page

    def shot(self, name):
        if SHOTS:
            pathlib.Path(SHOTS).mkdir(parents=True, exist_ok=True)
            self.page.screenshot(path=str(pathlib.Path(SHOTS) / f"{name}.png"), full_page=False)

    def close(self):
        self.context.close()
        # 401/403 answers the test provokes on purpose are filtered by the caller.
        return self.errors


def test_a_browser_is_sent_to_the_ui_and_the_assets_are_compiled_in(site):
    request = urllib.request.Request(site.base + "/", headers={"accept": "text/html"})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.url.endswith("/ui/")
        page = response.read().decode()
        assert response.headers["content-security-policy"].startswith("default-src 'none'")
    assert "/ui/assets/app.js" in page and "cdn" not in page.lower()
    for asset in ("app.js", "app.css", "uPlot.iife.min.js", "uPlot.min.css", "uPlot.LICENSE"):
        with urllib.request.urlopen(f"{site.base}/ui/assets/{asset}", timeout=10) as response:
            assert response.status == 200 and response.read(), asset
    # A deep link is the page too (the page routes on its path).
    with urllib.request.urlopen(f"{site.base}/ui/endpoints/fraud", timeout=10) as response:
        assert "/ui/assets/app.js" in response.read().decode()
    # An API client asking for / gets the API's 404, not a redirect.
    status, body = site.request("GET", "/", token=None)
    assert status == 404 and body["status"] == 404


def test_models_and_a_model_with_its_lineage_signature_and_comparison(site, browser):
    tab = Page(browser, site, "write")
    page = tab.open("/ui/models")
    rows = page.locator("tbody tr[data-model]")
    expect(rows).to_have_count(2)
    expect(page.locator("tr[data-model='fraud'] td").nth(1)).to_have_text("3")
    expect(page.locator("tr[data-model='fraud']")).to_contain_text("@production → 1")
    page.get_by_label("Search models").fill("chu")
    expect(rows).to_have_count(1)
    assert page.url.endswith("/ui/models?q=chu")
    page.get_by_label("Search models").fill("")
    tab.shot("models")

    page.get_by_role("link", name="fraud", exact=True).click()
    expect(page.locator("h1")).to_have_text("fraud")
    assert page.url.endswith("/ui/models/fraud")
    versions = page.locator("details.version")
    expect(versions).to_have_count(3)
    first = page.locator("details[data-version='1']")
    first.locator("summary").click()
    commit = first.get_by_role("link", name=COMMIT)
    expect(commit).to_have_attribute("href", f"{REPO_URL}/commit/{COMMIT}")
    expect(first).to_contain_text("s3://ml/fraud/train.csv")
    expect(first).to_contain_text("the first fraud model")
    expect(first.locator("table.signature")).to_contain_text("input")
    expect(first.locator("table.signature")).to_contain_text("FP32")
    expect(first).to_contain_text("lr")
    expect(first).to_contain_text("auc")
    tab.shot("model")

    page.locator("#compare-a").select_option("1")
    page.locator("#compare-b").select_option("2")
    page.get_by_role("button", name="Compare").click()
    assert re.search(r"/ui/models/fraud/compare\?a=1&b=2$", page.url)
    lr = page.locator("table.compare tr", has_text="lr")
    expect(lr).to_contain_text("0.01")
    expect(lr).to_contain_text("0.02")
    expect(lr).to_contain_text("differs")
    # A stable URL: loading it directly shows the same.
    page.reload()
    expect(page.locator("table.compare tr", has_text="auc")).to_contain_text("0.93")
    assert tab.close() == []


def test_a_push_appears_without_a_reload(site, browser):
    tab = Page(browser, site, "read")
    page = tab.open("/ui/models/churn")
    expect(page.locator("details.version")).to_have_count(2)
    page.evaluate("window.__notReloaded = true")
    site.ferry("model", "push", str(variant(site.tmp, "c3")), "--name", "churn")
    expect(page.locator("details.version")).to_have_count(3, timeout=15000)
    assert page.evaluate("window.__notReloaded") is True
    assert tab.close() == []


def test_an_alias_moved_in_the_ui_changes_what_serving_answers(site, browser):
    status, body = site.infer("churn")
    assert status == 200 and body["model_version"] == "1", body
    tab = Page(browser, site, "write")
    page = tab.open("/ui/models/churn")
    page.once("dialog", lambda d: d.accept())
    page.locator("#alias-name").fill("production")
    page.locator("#alias-version").select_option("2")
    page.get_by_role("button", name="Move", exact=True).click()
    expect(page.locator("#aliases")).to_contain_text("@production → 2", timeout=15000)
    deadline = time.time() + 30
    while time.time() < deadline:
        status, body = site.infer("churn")
        if status == 200 and body["model_version"] == "2":
            break
        time.sleep(0.5)
    assert body["model_version"] == "2", body
    # Archiving asks first, and a refusal of the dialog changes nothing.
    page.once("dialog", lambda d: d.dismiss())
    page.locator("details[data-version='3'] summary").click()
    page.locator("details[data-version='3'] [data-action='archive']").click()
    assert site.get("/api/v1/models/churn/versions/3")["status"] == "active"
    # Accepted, it archives; the page shows it from the event, and restoring brings it back.
    page.once("dialog", lambda d: d.accept())
    page.locator("details[data-version='3'] [data-action='archive']").click()
    expect(page.locator("details[data-version='3'] summary")).to_contain_text("archived", timeout=15000)
    assert site.get("/api/v1/models/churn/versions/3")["status"] == "archived"
    page.once("dialog", lambda d: d.accept())
    page.locator("details[data-version='3'] [data-action='restore']").click()
    expect(page.locator("details[data-version='3'] summary")).to_contain_text("active", timeout=15000)
    # An SSH remote on GitLab links to the commit there.
    page.locator("details[data-version='1'] summary").click()
    expect(page.locator("details[data-version='1']").get_by_role("link", name=COMMIT)).to_have_attribute(
        "href", f"https://gitlab.com/acme/churn/commit/{COMMIT}")
    assert tab.close() == []


def test_a_read_token_sees_no_write_buttons_and_a_write_is_refused(site, browser):
    tab = Page(browser, site, "read")
    page = tab.open("/ui/models/churn")
    expect(page.locator("details.version")).not_to_have_count(0)
    page.locator("details[data-version='1'] summary").click()
    expect(page.locator("#alias-form")).to_have_count(0)
    expect(page.locator("[data-action]")).to_have_count(0)
    expect(page.locator("#nav-webhooks")).to_be_hidden()
    # The server checks every call, whatever the page shows: a write with the tab's token is a 403.
    status = page.evaluate("""async () => {
        const r = await fetch('/api/v1/models/churn/aliases/production', {method: 'PUT',
            headers: {'authorization': 'Bearer ' + sessionStorage.getItem('ferry.token'),
                      'content-type': 'application/json'}, body: JSON.stringify({version: 1})});
        return r.status; }""")
    assert status == 403
    assert site.get("/api/v1/models/churn")["aliases"]["production"] == 2
    errors = [e for e in tab.close() if "403" not in e]
    assert errors == []


def test_the_endpoint_page_charts_the_analysis_of_every_version(site, browser):
    tab = Page(browser, site, "read")
    page = tab.open("/ui/endpoints")
    expect(page.locator("tr[data-endpoint='fraud']")).to_contain_text("canary 2 at 30.0%")
    page.get_by_role("link", name="fraud", exact=True).first.click()
    expect(page.locator("h1")).to_have_text("Endpoint fraud")
    for label in ("stable 1", "canary 2 at 30.0%", "shadow 3"):
        expect(page.locator("main")).to_contain_text(label)

    def chart(key):
        return page.locator(f"section.chart[data-chart='{key}']")

    for key in ("requests_per_second", "latency_p50_ms", "shadow_agreement", "reward_mean", "accuracy"):
        expect(chart(key).locator("canvas")).to_have_count(1, timeout=15000)
    # The chart's lines are the series API's points: the same versions, the same values.
    series = site.get("/api/v1/endpoints/fraud/analysis/series?window=15m&step=15s")
    shown = {v["version"] for p in series["points"] for v in p["versions"] if v["requests"] or v["shadow_compared"]}
    assert {1, 2, 3} <= shown, series["points"][-3:]
    headers = chart("requests_per_second").locator("table.chart-data thead th")
    expect(headers).to_have_text(["time", "v1 stable", "v2 canary", "v3 shadow"])
    agreement = chart("shadow_agreement").locator("table.chart-data thead th")
    expect(agreement).to_have_text(["time", "v3 shadow"])
    points = int(chart("reward_mean").get_attribute("data-points"))
    expected = sum(1 for p in series["points"] for v in p["versions"] if v["reward_mean"] is not None)
    assert points >= expected - 2 and points > 0, (points, expected)
    now = page.locator("#analysis tr[data-version='1']")
    expect(now).to_contain_text("stable")
    # The charts refresh themselves every 5 seconds: the series is fetched again and a new step
    # of live traffic appears, without a reload.
    fetched = []
    page.on("request", lambda r: "/analysis/series" in r.url and fetched.append(time.time()))
    page.evaluate("window.__notReloaded = true")
    newest = chart("requests_per_second").locator("table.chart-data tbody tr").last.locator("td").first
    shown = newest.text_content()
    expect(newest).not_to_have_text(shown, timeout=40000)
    page.wait_for_timeout(11000)  # two more periods
    assert len(fetched) >= 3 and page.evaluate("window.__notReloaded") is True, fetched
    if SHOTS:
        # For the README's picture: a few minutes of steps rather than the first one.
        time.sleep(75)
        page.locator("#window").select_option("5m|15s")
        time.sleep(6)
    tab.shot("endpoint")

    # Drift: the worst feature first, and drift.detected on the timeline.
    expect(page.locator("#drift table.drift-features tbody tr").first).to_have_attribute("data-feature", "f0", timeout=30000)
    # The monitor's verdict first (its pace depends on the traffic a loaded machine manages),
    # then the page showing it.
    deadline = time.time() + 120
    while not [e for e in site.get("/api/v1/events?after=0&limit=1000")["events"]
               if e["type"] == "drift.detected" and e["subject"] == "fraud"]:
        assert time.time() < deadline, "no drift.detected for the endpoint"
        time.sleep(1)
    expect(page.locator("#timeline li[data-type='drift.detected']").first).to_be_visible(timeout=15000)
    expect(page.locator("#timeline li[data-type='endpoint.updated']").first).to_be_visible()
    expect(chart("drift_psi").locator("canvas")).to_have_count(1)

    # Training beside live for the stable version's worst feature: the profile's counts exactly,
    # and the live mass moved up with the shift.
    expect(page.locator("#hist-feature")).to_have_value("f0", timeout=15000)
    f0 = next(f for f in site.get("/api/v1/endpoints/fraud/histograms?version=1&window=5m")["features"]
              if f["feature"] == "f0")
    expect(page.locator("#histogram .histogram .bucket")).to_have_count(len(f0["training"]))
    column = lambda n: [int(t) for t in page.locator(  # the table is in a closed <details>
        f"#histogram table.histogram-data tbody tr td:nth-child({n})").evaluate_all("els => els.map(e => e.textContent)")]
    assert column(2) == f0["training"]
    mean = lambda xs: sum(i * x for i, x in enumerate(xs)) / sum(xs)
    assert mean(column(3)) > mean(f0["training"]) + 1, (column(3), f0["training"])
    page.locator("#hist-feature").select_option("f5")
    expect(page.locator("#histogram .histogram")).to_have_attribute("data-feature", "f5")
    page.locator("#hist-feature").select_option("f0")
    page.evaluate("document.getElementById('histogram').previousElementSibling.previousElementSibling.scrollIntoView()")
    tab.shot("drift")
    assert tab.close() == []


def test_the_timeline_shows_the_analysis_that_decided_a_rollout_step(site, browser):
    tab = Page(browser, site, "read")
    page = tab.open("/ui/endpoints/fraud")
    expect(page.locator("#timeline li").first).to_be_visible(timeout=15000)
    page.evaluate("window.__notReloaded = true")
    # What the operator posts when a canary step fails on its business metric.
    step = {"reason": "RewardTooLow", "message": "v2 rolled back at step 1/3 (30%): rewardRatio 0.8 < 0.95",
            "phase": "RolledBack", "stable": 1, "candidate": 2, "weight": 0.0,
            "source": "ModelDeployment default/fraud",
            "analysis": {"stage": "Canary", "verdict": "Failed", "decided_by": "rewardRatio", "candidate": 2,
                         "stable": 1, "window_seconds": 60.0, "checks": [
                             {"check": "sampleSize", "value": 412.0, "threshold": 100.0, "passed": True},
                             {"check": "rewardRatio", "value": 0.8, "threshold": 0.95, "passed": False,
                              "note": "candidate reward 0.8 vs stable 1"},
                             {"check": "errorRate", "value": 0.0, "threshold": 0.01, "passed": True},
                             {"check": "drift", "note": "no drift policy"}]}}
    status, event = site.request("POST", "/api/v1/endpoints/fraud/rollout-events", step, token="write")
    assert status == 201, event
    item = page.locator(f"#timeline li[data-event='{event['id']}']")
    expect(item).to_contain_text("RewardTooLow", timeout=15000)
    table = item.locator("table.checks")
    expect(table).to_have_attribute("data-verdict", "Failed")
    expect(table.locator("caption")).to_contain_text("decided by rewardRatio")
    expect(table.locator("caption")).to_contain_text("canary analysis of version 2 against 1 over 60 s")
    expect(table.locator("tbody tr")).to_have_count(4)
    failed = table.locator("tr.failed")
    expect(failed).to_have_count(1)
    expect(failed.locator("td")).to_have_text(["0.800", "0.950", "failed", "candidate reward 0.8 vs stable 1"])
    expect(table.locator("tr[data-check='drift'] td").nth(2)).to_have_text("not judged")
    assert page.evaluate("window.__notReloaded") is True
    # A step that did not follow a judgement has no table.
    status, event = site.request("POST", "/api/v1/endpoints/fraud/rollout-events", {
        "reason": "RolloutStarted", "message": "v3 rollout started", "phase": "Shadowing", "stable": 1,
        "candidate": 3, "weight": 0.0}, token="write")
    assert status == 201, event
    started = page.locator(f"#timeline li[data-event='{event['id']}']")
    expect(started).to_contain_text("RolloutStarted", timeout=15000)
    expect(started.locator("table")).to_have_count(0)
    assert tab.close() == []


def test_the_event_feed_is_live_and_filters_by_type(site, browser):
    tab = Page(browser, site, "read")
    page = tab.open("/ui/events?type=alias.set")
    expect(page.locator("#event-type")).to_have_value("alias.set")
    items = page.locator("#feed li[data-type]")
    expect(items.first).to_be_visible()
    assert set(items.evaluate_all("els => els.map(e => e.dataset.type)")) == {"alias.set"}
    before = items.count()
    site.ferry("model", "alias", "set", "churn", "staging", "1")
    expect(items).to_have_count(before + 1, timeout=15000)
    expect(items.first).to_contain_text("churn")
    page.locator("#event-type").select_option("")
    assert page.url.endswith("/ui/events")
    expect(page.locator("#feed li[data-type='version.created']").first).to_be_visible()
    tab.shot("events")
    assert tab.close() == []


def test_an_admin_sees_webhooks_and_replays_a_dead_letter_from_the_ui(site, browser):
    receiver_port = free_port()
    status, created = site.request("POST", "/api/v1/webhooks", {
        "url": f"http://127.0.0.1:{receiver_port}/hook", "events": ["alias.*"]}, token="admin")
    assert status == 201, created
    hook = created["webhook"]["id"] if "webhook" in created else created["id"]
    # Nothing listens yet: one attempt (--webhook-max-attempts 1) and it is a dead letter.
    site.ferry("model", "alias", "set", "churn", "canary", "2")
    deadline = time.time() + 30
    while not site.get(f"/api/v1/webhooks/{hook}/dead-letters", token="admin")["items"]:
        assert time.time() < deadline, "no dead letter"
        time.sleep(0.3)
    received = []

    class Hook(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            received.append(json.loads(self.rfile.read(int(self.headers["content-length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", receiver_port), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    tab = Page(browser, site, "admin")
    try:
        page = tab.open("/ui/webhooks")
        section = page.locator(f"section[data-webhook='{hook}']")
        expect(section).to_contain_text(f"http://127.0.0.1:{receiver_port}/hook")
        expect(section).to_contain_text("Dead letters (1)")
        tab.shot("webhooks")
        page.once("dialog", lambda d: d.accept())
        section.get_by_role("button", name="Replay").click()
        deadline = time.time() + 30
        while not received:
            assert time.time() < deadline, "the replayed delivery never arrived"
            time.sleep(0.2)
        assert received[0]["type"] == "alias.set" and received[0]["data"]["alias"] == "canary", received
        expect(section).to_contain_text("Dead letters (0)", timeout=15000)
    finally:
        server.shutdown()
        server.server_close()
    # The receiver is gone again: the next delivery is a dead letter, and the page, left alone,
    # shows it (it refreshes every 5 seconds) without a reload.
    page.evaluate("window.__notReloaded = true; document.activeElement && document.activeElement.blur()")
    site.ferry("model", "alias", "set", "churn", "canary", "1")
    expect(section).to_contain_text("Dead letters (1)", timeout=20000)
    assert page.evaluate("window.__notReloaded") is True
    assert tab.close() == []


def test_a_narrow_screen_and_the_keyboard_reach_every_section(site, browser):
    context = browser.new_context(viewport={"width": 390, "height": 844})
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{site.base}/ui/")
    page.get_by_label("API token").fill(TOKENS["admin"])
    page.keyboard.press("Enter")
    expect(page.locator("#who")).to_have_text("role: admin")
    expect(page.locator("#nav-webhooks")).to_be_visible()
    # Tab from the top of a freshly loaded page (the tab keeps its token): the skip link, then
    # the brand and each section, in order.
    page.reload()
    expect(page.locator("#nav-webhooks")).to_be_visible()
    page.keyboard.press("Tab")
    expect(page.locator(".skip")).to_be_focused()
    names = []
    for _ in range(5):
        page.keyboard.press("Tab")
        names.append(page.evaluate("document.activeElement.textContent"))
    assert names == ["Ferry", "Models", "Endpoints", "Events", "Webhooks"], names
    page.keyboard.press("Enter")
    expect(page.locator("h1")).to_have_text("Webhooks")
    # Nothing wider than the screen: tables scroll inside their box, charts take the width.
    for path, ready in (("/ui/models/fraud", "details.version"), ("/ui/endpoints/fraud", "section.chart canvas")):
        page.goto(f"{site.base}{path}")
        expect(page.locator(ready).first).to_be_visible(timeout=15000)
        width = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
        assert width[0] <= width[1] + 1, (path, width)
    context.close()
    assert errors == []


@pytest.fixture(scope="module")
def open_site(tmp_path_factory):
    """`ferry up` without tokens (loopback, every caller admin), with Codeberg and Bitbucket
    remotes in its lineage."""
    tmp = tmp_path_factory.mktemp("ui-open")
    up = Process(["up", "--no-demo", "--data-dir", str(tmp / "data")], tmp / "up.log", cwd=tmp)
    base = f"http://{up.address}"

    def get(path):
        with urllib.request.urlopen(base + path, timeout=10) as response:
            return json.loads(response.read())

    up.wait_until(lambda: get("/readyz")["status"] == "ready", "ferry up starting")
    env = {k: v for k, v in ferry_env().items() if k != "FERRY_TOKEN"}
    env["FERRY_REGISTRY"] = base
    for tag, repo, alias in (("o1", "https://codeberg.org/acme/scoring", ["--alias", "production"]),
                             ("o2", "git@bitbucket.org:acme/scoring.git", [])):
        out = subprocess.run([ferry_bin(), "model", "push", str(variant(tmp, tag)), "--name", "scoring",
                              "--git", COMMIT, "--git-repo", repo, *alias],
                             env=env, capture_output=True, text=True, timeout=120, cwd=tmp)
        assert out.returncode == 0, out.stdout + out.stderr
    yield type("OpenSite", (), {"base": base, "port": up.port, "get": staticmethod(get)})
    up.stop()


def refused_webhook_creations(site) -> float:
    """`POST /api/v1/webhooks` the registry refused with 403, from its /metrics."""
    with urllib.request.urlopen(site.base + "/metrics", timeout=10) as response:
        text = response.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("ferry_http_requests_total{") and 'status="403"' in line
               and 'method="POST"' in line and 'route="/api/v1/webhooks"' in line)


def test_an_open_server_needs_no_sign_in_and_refuses_other_sites_and_rebound_names(open_site, browser):
    context = browser.new_context(viewport={"width": 1366, "height": 900})
    page = context.new_page()
    errors = []
    page.on("console", lambda m: m.type == "error" and errors.append(m.text))
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{open_site.base}/ui/models/scoring")
    expect(page.locator("#who")).to_have_text("open server (admin)")
    expect(page.locator("#token")).to_have_count(0)
    expect(page.locator("details.version")).to_have_count(2)
    # Codeberg over HTTPS and Bitbucket over SSH link to the commit there.
    for version, href in (("1", f"https://codeberg.org/acme/scoring/commit/{COMMIT}"),
                          ("2", f"https://bitbucket.org/acme/scoring/commits/{COMMIT}")):
        page.locator(f"details[data-version='{version}'] summary").click()
        expect(page.locator(f"details[data-version='{version}']").get_by_role("link", name=COMMIT)) \
            .to_have_attribute("href", href)
    # The page's own writes go through (same origin, a JSON body).
    page.once("dialog", lambda d: d.accept())
    page.locator("#alias-name").fill("production")
    page.locator("#alias-version").select_option("2")
    page.get_by_role("button", name="Move", exact=True).click()
    expect(page.locator("#aliases")).to_contain_text("@production → 2", timeout=15000)
    assert open_site.get("/api/v1/models/scoring")["aliases"]["production"] == 2
    assert errors == [], errors

    # A page of another site (another origin) makes the browser send a write it may send without
    # asking (a text/plain POST, no-cors): here, a webhook that would send every event to the
    # attacker. The registry refuses it on its Origin.
    class Other(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = b"<!doctype html><title>another site</title><p>another site</p>"
            self.send_response(200)
            self.send_header("content-type", "text/html")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    other = http.server.HTTPServer(("127.0.0.1", free_port()), Other)
    threading.Thread(target=other.serve_forever, daemon=True).start()
    try:
        before = refused_webhook_creations(open_site)
        page.goto(f"http://localhost:{other.server_port}/")
        page.evaluate("""async (url) => {
            await fetch(url, {method: 'POST', mode: 'no-cors', headers: {'content-type': 'text/plain'},
                              body: JSON.stringify({url: 'https://attacker.example/hook', events: ['*']})}); }""",
                      f"{open_site.base}/api/v1/webhooks")
        assert refused_webhook_creations(open_site) == before + 1
        assert open_site.get("/api/v1/webhooks")["items"] == []
    finally:
        other.shutdown()
        other.server_close()

    # A name re-pointed at 127.0.0.1 (DNS rebinding) gets the page, which holds no data, and
    # every API call behind it is refused on its Host.
    errors.clear()
    page.goto(f"http://rebound.example:{open_site.port}/ui/models/scoring")
    expect(page.locator("main .error-box")).to_contain_text(f"Host `rebound.example:{open_site.port}`")
    expect(page.locator("details.version")).to_have_count(0)
    # The console shows the refused calls (403), and possibly a reset of the event stream the
    # navigation cut; nothing else (no script error).
    assert any("403" in e for e in errors), errors
    assert all(e.startswith("Failed to load resource") for e in errors), errors
    context.close()


def test_every_page_passes_the_axe_accessibility_rules(site, browser):
    """axe-core (the engine behind Lighthouse's accessibility audit), WCAG 2.1 A and AA rules
    (contrast included), on every page with real data, signed in as admin (so the write
    controls are there too) and on the sign-in page."""
    from axe_playwright_python.sync_playwright import Axe
    axe = Axe()
    options = {"runOnly": {"type": "tag", "values": ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]},
               "resultTypes": ["violations"]}
    context = browser.new_context(viewport={"width": 1366, "height": 900})
    page = context.new_page()
    page.goto(f"{site.base}/ui/")
    expect(page.locator("#token")).to_be_visible()
    found = {"sign-in": axe.run(page, options=options)}
    page.get_by_label("API token").fill(TOKENS["admin"])
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#who")).to_have_text("role: admin")
    for path, ready in (("/ui/models", "tr[data-model]"), ("/ui/models/fraud", "details.version"),
                        ("/ui/models/fraud/compare?a=1&b=2", "table.compare"),
                        ("/ui/endpoints", "tr[data-endpoint]"), ("/ui/endpoints/fraud", "section.chart canvas"),
                        ("/ui/events", "#feed li[data-type]"), ("/ui/webhooks", "h1")):
        page.goto(f"{site.base}{path}")
        expect(page.locator(ready).first).to_be_visible(timeout=15000)
        if path == "/ui/models/fraud":
            page.locator("details[data-version='1'] summary").click()
        found[path] = axe.run(page, options=options)
    context.close()
    failing = {path: r.generate_report() for path, r in found.items() if r.violations_count}
    assert failing == {}, "\n".join(f"{p}:\n{report}" for p, report in failing.items())
