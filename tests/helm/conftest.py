"""Fixtures of the chart's and the image's static tests: the chart and its renders, and the
`ferry` binary. What runs on a cluster is in tests/cluster/ (a real one-node cluster).

What is absent (the binary, ONNX Runtime) makes its tests skip with the reason, except under CI,
where the same absence fails them.
"""

from __future__ import annotations

import os
from pathlib import Path

import helm_python
import pytest
import yaml


REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "deploy" / "helm" / "ferry"
VALUES = Path(__file__).resolve().parent / "values"
CACHE = Path(os.environ.get("FERRY_CACHE", Path.home() / ".cache" / "ferry"))


def in_ci() -> bool:
    """One definition of CI for every test: CI=true and CI=1 both count."""
    return os.environ.get("CI", "").lower() in ("true", "1")


def need(condition, why: str):
    """Skips the test when `condition` is false, or fails it under CI=true."""
    if not condition:
        if in_ci():
            pytest.fail(f"CI=true and {why}")
        pytest.skip(why)


def load_values(name: str) -> dict:
    """A value set from tests/helm/values/NAME.yaml (the file a user would pass with -f)."""
    return yaml.safe_load((VALUES / f"{name}.yaml").read_text()) or {}


@pytest.fixture(scope="session")
def chart():
    with helm_python.Chart.load(CHART) as loaded:
        yield loaded


def render(chart, values: dict, name: str = "ferry", namespace: str = "ferry") -> dict[str, str]:
    """Template path -> rendered text, the empty ones left out (as `helm template` prints)."""
    rendered = chart.render(values, name=name, namespace=namespace, is_install=True)
    return {path: text for path, text in rendered.items() if text.strip()}


def documents(rendered: dict[str, str]) -> list[tuple[str, dict]]:
    """(template path, object) for every manifest of a render, NOTES.txt excluded."""
    out = []
    for path, text in rendered.items():
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                out.append((path, doc))
    return out


def by_kind(docs, kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for _, d in docs if d["kind"] == kind}


@pytest.fixture(scope="session")
def ferry_bin() -> Path:
    candidates = [os.environ.get("FERRY_BIN")]
    target = os.environ.get("CARGO_TARGET_DIR")
    if target:
        candidates.append(str(Path(target) / "debug" / "ferry"))
    candidates += [str(REPO / "target" / "debug" / "ferry")]
    found = next((Path(c) for c in candidates if c and Path(c).is_file()), None)
    need(found, "the ferry binary is not built (cargo build --bin ferry, or set FERRY_BIN)")
    return found


@pytest.fixture(scope="session")
def ort_lib() -> Path:
    path = Path(os.environ.get("ORT_DYLIB_PATH", REPO / ".ort" / "libonnxruntime.so"))
    need(path.exists(), f"ONNX Runtime is not at {path} (make ort)")
    return path.resolve()
