"""Live traffic for the cluster tests: inference requests to a serving Service from a thread, each
on a new connection so kube-proxy spreads them over the pods, with business feedback for every
answer, and a record of every outcome."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

REQUEST = json.loads((Path(__file__).resolve().parents[1] / "fixtures" / "mlp-request.json").read_text())


@dataclass
class Answer:
    at: float  # time.monotonic() when the answer came
    status: int  # HTTP status, or 0 when the connection failed
    version: str | None  # model_version of a 200
    route: str | None  # x-ferry-route of a 200
    id: str
    error: str | None = None
    feedback: int | None = None  # the feedback's HTTP status, when feedback was sent


def post(url: str, body: dict, token: str | None, timeout: float = 10.0) -> tuple[int, dict, dict]:
    """POST JSON on a new connection: (status, JSON body, headers); status 0 when no answer."""
    headers = {"Content-Type": "application/json", "Connection": "close"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"{}"), dict(response.headers)
    except urllib.error.HTTPError as e:
        try:
            payload = json.loads(e.read() or b"{}")
        except ValueError:
            payload = {}
        return e.code, payload, dict(e.headers)
    except (OSError, ValueError) as e:
        return 0, {"error": str(e)}, {}


def infer(base: str, model: str, token: str | None, request_id: str | None = None) -> tuple[int, dict, dict]:
    body = dict(REQUEST, id=request_id or uuid.uuid4().hex)
    return post(f"{base}/v2/models/{model}/infer", body, token)


def first_answer(base: str, model: str, token: str, timeout: float = 60.0) -> dict:
    """The first 200 from a Service that was just created: kube-proxy programs its rules a moment
    after the pods are Ready, and connections are refused until then."""
    deadline = time.monotonic() + timeout
    while True:
        code, body, headers = infer(base, model, token)
        if code == 200:
            return dict(body, route=headers.get("x-ferry-route"))
        if time.monotonic() > deadline:
            raise AssertionError(f"{base} did not answer within {timeout:.0f} s: {code} {body}")
        time.sleep(0.5)


class Traffic:
    """Sends `rate` requests a second to `base` until stopped. `reward_of(version)` gives the
    business reward to send as feedback for an answer of that version (None: no feedback)."""

    def __init__(self, base: str, model: str, token: str, feedback_token: str | None = None,
                 reward_of=None, rate: float = 40.0):
        self.base, self.model, self.token = base, model, token
        self.feedback_token = feedback_token or token
        self.reward_of = reward_of or (lambda version: None)
        self.rate = rate
        self.answers: list[Answer] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "Traffic":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        self.stopping.set()
        if self.thread.is_alive():
            self.thread.join(timeout=30)

    def _run(self) -> None:
        period = 1.0 / self.rate
        next_at = time.monotonic()
        while not self.stopping.is_set():
            request_id = uuid.uuid4().hex
            status, body, headers = infer(self.base, self.model, self.token, request_id)
            answer = Answer(at=time.monotonic(), status=status, id=request_id,
                            version=body.get("model_version") if status == 200 else None,
                            route=headers.get("x-ferry-route") if status == 200 else None,
                            error=None if status == 200 else str(body.get("error"))[:200])
            if status == 200:
                reward = self.reward_of(answer.version)
                if reward is not None:
                    answer.feedback, _, _ = post(f"{self.base}/v2/models/{self.model}/feedback",
                                                 {"id": request_id, "reward": reward}, self.feedback_token)
            with self.lock:
                self.answers.append(answer)
            next_at += period
            delay = next_at - time.monotonic()
            if delay > 0:
                self.stopping.wait(delay)
            else:
                next_at = time.monotonic()

    def since(self, start: float) -> list[Answer]:
        with self.lock:
            return [a for a in self.answers if a.at >= start]

    def versions(self, start: float = 0.0) -> Counter:
        """Answers per version since `start` (failures as `error <status>`)."""
        return Counter(a.version if a.status == 200 else f"error {a.status}" for a in self.since(start))

    def failures(self, start: float = 0.0) -> list[Answer]:
        return [a for a in self.since(start) if a.status != 200]

    def feedback(self, start: float = 0.0) -> Counter:
        """Feedback outcomes (HTTP statuses) since `start`."""
        return Counter(a.feedback for a in self.since(start) if a.feedback is not None)
