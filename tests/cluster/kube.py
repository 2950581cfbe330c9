"""The smallest Kubernetes API client the cluster tests need (a bearer token and the cluster's CA;
no client library), and helpers to wait on what the cluster does."""

from __future__ import annotations

import base64
import json
import os
import socket
import ssl
import time
import urllib.error
import urllib.request
from pathlib import Path

import yaml


class KubeError(Exception):
    """An API call answered with an error status."""

    def __init__(self, status: int, body: str):
        super().__init__(f"HTTP {status}: {body[:500]}")
        self.status = status
        self.body = body


class Kube:
    """A bearer-token client for one API server."""

    def __init__(self, server: str, ca_pem: str, token: str):
        self.server = server.rstrip("/")
        self.token = token
        self.ca_pem = ca_pem
        self.ssl = ssl.create_default_context(cadata=ca_pem)

    @classmethod
    def from_kubeconfig(cls, path: str | os.PathLike) -> "Kube":
        config = yaml.safe_load(Path(path).read_text())
        current = config.get("current-context")
        context = next(c["context"] for c in config["contexts"] if c["name"] == current)
        cluster = next(c["cluster"] for c in config["clusters"] if c["name"] == context["cluster"])
        user = next(u["user"] for u in config["users"] if u["name"] == context["user"])
        if "token" not in user:
            raise ValueError(f"{path}: the tests need a token user (as scripts/kube-cluster.sh writes)")
        if "certificate-authority-data" in cluster:
            ca = base64.b64decode(cluster["certificate-authority-data"]).decode()
        else:
            ca = Path(cluster["certificate-authority"]).read_text()
        return cls(cluster["server"], ca, user["token"])

    def request(self, method: str, path: str, body=None, content_type: str = "application/json"):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            self.server + path,
            method=method,
            data=data,
            headers={
                "Authorization": f"Bearer {self.token}",
                "Accept": "application/json",
                "Content-Type": content_type,
            },
        )
        try:
            with urllib.request.urlopen(req, context=self.ssl, timeout=30) as resp:
                payload = resp.read()
        except urllib.error.HTTPError as e:
            raise KubeError(e.code, e.read().decode(errors="replace")) from None
        return json.loads(payload) if payload else None

    def request_text(self, method: str, path: str) -> str:
        """A call whose answer is text (a pod's log)."""
        req = urllib.request.Request(self.server + path, method=method,
                                     headers={"Authorization": f"Bearer {self.token}"})
        try:
            with urllib.request.urlopen(req, context=self.ssl, timeout=30) as resp:
                return resp.read().decode(errors="replace")
        except urllib.error.HTTPError as e:
            raise KubeError(e.code, e.read().decode(errors="replace")) from None

    def watch(self, path: str, stop):
        """Every change of the objects at the collection `path` (with its query, e.g. a
        labelSelector), as watch events, until `stop` (an Event) is set. Short watches resumed
        from the last resourceVersion: nothing is missed between them."""
        separator = "&" if "?" in path else "?"
        version = self.get(path)["metadata"]["resourceVersion"]
        while not stop.is_set():
            url = f"{self.server}{path}{separator}watch=true&timeoutSeconds=2&resourceVersion={version}"
            req = urllib.request.Request(url, headers={"Authorization": f"Bearer {self.token}"})
            with urllib.request.urlopen(req, context=self.ssl, timeout=30) as resp:
                for line in resp:
                    if not line.strip():
                        continue
                    event = json.loads(line)
                    if event.get("type") == "ERROR":  # e.g. 410 Gone: start again from now
                        version = self.get(path)["metadata"]["resourceVersion"]
                        break
                    version = event["object"]["metadata"]["resourceVersion"]
                    yield event

    def get(self, path: str):
        return self.request("GET", path)

    def find(self, path: str):
        """The object at `path`, or None when it does not exist."""
        try:
            return self.get(path)
        except KubeError as e:
            if e.status == 404:
                return None
            raise

    def items(self, path: str) -> list[dict]:
        return self.get(path)["items"]

    def create(self, path: str, body: dict):
        return self.request("POST", path, body)

    def delete(self, path: str):
        try:
            return self.request("DELETE", path)
        except KubeError as e:
            if e.status != 404:
                raise
            return None

    def merge_patch(self, path: str, body: dict):
        return self.request("PATCH", path, body, "application/merge-patch+json")

    def secret(self, namespace: str, name: str) -> dict[str, bytes]:
        data = self.get(f"/api/v1/namespaces/{namespace}/secrets/{name}").get("data") or {}
        return {k: base64.b64decode(v) for k, v in data.items()}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what: str, check, timeout: float = 60.0, every: float = 0.5):
    """Calls `check` until it returns something true, and returns that; fails after `timeout`."""
    deadline = time.monotonic() + timeout
    last_error = None
    while True:
        try:
            value = check()
            if value:
                return value
        except (KubeError, OSError, ValueError) as e:  # a server restarting, a path not yet routed
            last_error = e
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}"
                                 + (f" (last error: {last_error})" if last_error else ""))
        time.sleep(every)
