"""deploy/Dockerfile without a container engine: parsed by BuildKit's parser, its `ort` stage's
commands run here for real (download, hash check, extraction), the library they produce serves a
model with the `ferry` binary, and the build stage's context holds everything the build reads."""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import REPO, need
from image import chain, final_env, final_instruction, parse, stage, substitute

ARCHES = {"x86_64": "amd64", "aarch64": "arm64"}
ELF_MACHINE = {"amd64": 62, "arm64": 183}  # e_machine: EM_X86_64, EM_AARCH64
# What debian:bookworm-slim provides (libc6) plus the packages the final stage installs.
RUNTIME_LIBRARIES = {
    "libc.so.6", "libm.so.6", "libdl.so.2", "libpthread.so.0", "librt.so.1",
    "ld-linux-x86-64.so.2", "ld-linux-aarch64.so.1", "libgcc_s.so.1", "libstdc++.so.6",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_stage(name: str, workdir: Path, **overrides) -> subprocess.CompletedProcess:
    """Runs a stage's RUN instructions with bash in `workdir` (standing for its WORKDIR), its
    ARGs in the environment as BuildKit passes them."""
    s = stage(name)
    env = dict(os.environ)
    env.update({k: v for k, v in s.args.items() if v is not None})
    env.update(overrides)
    script = "\n".join(c.value[0] for c in s.commands if c.cmd == "RUN")
    assert script, f"stage {name} has no RUN"
    workdir.mkdir(parents=True, exist_ok=True)
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=workdir, env=env, capture_output=True, text=True, timeout=600,
    )


def needed_libraries(path: Path) -> set[str]:
    out = subprocess.run(["readelf", "-d", str(path)], capture_output=True, text=True, check=True).stdout
    return set(re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", out))


def elf_machine(path: Path) -> int:
    header = path.read_bytes()[:20]
    assert header[:4] == b"\x7fELF"
    return int.from_bytes(header[18:20], "little")


def test_the_image_runs_the_binary_as_a_non_root_user_with_its_onnx_runtime():
    global_args, stages = parse()
    assert [s.name for s in stages] == ["build", "ort", "runtime", "prebuilt", None]
    # Base images are build arguments defaulting to the public ones.
    assert [s.base for s in stages] == ["${RUST_IMAGE}", "${PYTHON_IMAGE}", "${BASE_IMAGE}", "runtime", "runtime"]
    assert global_args["BASE_IMAGE"] == "debian:bookworm-slim"
    assert global_args["RUST_IMAGE"] == "rust:${RUST_VERSION}-bookworm"
    assert global_args["PYTHON_IMAGE"] == "python:3.11-slim-bookworm"
    runtime_args = stage("runtime").args
    for image in (None, "prebuilt"):
        assert final_instruction("USER", image)[0] == "65532:65532"
        assert final_instruction("ENTRYPOINT", image) == ["/usr/local/bin/ferry"]
        lib = Path(final_env(image)["ORT_DYLIB_PATH"])
        assert lib.name == f"libonnxruntime.so.{runtime_args['ORT_VERSION']}"
    copies = {c.value[-1]: c for c in stage(None).commands if c.cmd == "COPY"}
    # The binary is where the entrypoint says, the library where ORT_DYLIB_PATH says.
    assert copies["/usr/local/bin/ferry"].flags == ("--from=build",)
    assert copies["/usr/local/bin/ferry"].value[0] == "/out/ferry"
    lib = Path(final_env()["ORT_DYLIB_PATH"])
    assert copies[f"{lib.parent}/"].flags == ("--from=ort",)
    assert copies[f"{lib.parent}/"].value[0] == "/ort/lib/"
    assert "install -D -m 0755 target/release/ferry /out/ferry" in next(
        c.value[0] for c in stage("build").commands if c.cmd == "RUN")
    # `prebuilt` packages what a context folder holds: the same two files, at the same places.
    prebuilt = {c.value[-1]: c for c in stage("prebuilt").commands if c.cmd == "COPY"}
    assert prebuilt["/usr/local/bin/ferry"].value[0] == "ferry" and not prebuilt["/usr/local/bin/ferry"].flags
    assert substitute(prebuilt[f"{lib.parent}/"].value[0], stage("prebuilt").args) == lib.name


def test_the_pinned_onnx_runtime_is_the_one_the_project_uses():
    version = stage("ort").args["ORT_VERSION"]
    assert stage("runtime").args["ORT_VERSION"] == version
    assert stage("prebuilt").args["ORT_VERSION"] == version
    fetch = (REPO / "scripts/fetch-ort.sh").read_text()
    assert f'VERSION="${{ORT_VERSION:-{version}}}"' in fetch
    assert f"onnxruntime=={version}" in (REPO / "scripts/requirements-test.txt").read_text()
    # `ort` is built against this API level (api-31 for 1.31).
    minor = version.split(".")[1]
    assert f'"api-{minor}"' in (REPO / "Cargo.toml").read_text()


@pytest.fixture(scope="module")
def built_ort(tmp_path_factory) -> dict[str, Path]:
    """The `ort` stage run for both architectures: arch -> its lib/ folder."""
    libs = {}
    for arch in ("amd64", "arm64"):
        workdir = tmp_path_factory.mktemp(f"ort-{arch}")
        done = run_stage("ort", workdir, TARGETARCH=arch)
        assert done.returncode == 0, done.stdout + done.stderr
        libs[arch] = workdir / "lib"
    return libs


def test_the_ort_stage_fetches_and_verifies_the_official_library(built_ort):
    version = stage("ort").args["ORT_VERSION"]
    for arch, lib_dir in built_ort.items():
        files = [p.name for p in lib_dir.iterdir()]
        assert files == [f"libonnxruntime.so.{version}"], arch
        library = lib_dir / files[0]
        assert elf_machine(library) == ELF_MACHINE[arch], arch
        # Nothing the slim runtime image lacks.
        assert needed_libraries(library) <= RUNTIME_LIBRARIES, arch


def test_a_wheel_with_another_hash_is_refused(tmp_path):
    host = ARCHES.get(platform.machine(), "amd64")
    key = f"ORT_WHEEL_SHA256_{host.upper()}"
    other = "arm64" if host == "amd64" else "amd64"
    # Both pinned hashes swapped for wrong ones: pip must refuse the download.
    done = run_stage("ort", tmp_path, TARGETARCH=host, **{key: "0" * 64,
                     f"ORT_WHEEL_SHA256_{other.upper()}": "f" * 64})
    assert done.returncode != 0
    assert "hash" in (done.stdout + done.stderr).lower()
    assert not (tmp_path / "lib").exists()


def test_the_binary_needs_no_library_the_runtime_image_lacks(ferry_bin):
    assert needed_libraries(ferry_bin) <= RUNTIME_LIBRARIES
    final_run = " ".join(c.value[0] for s in chain() for c in s.commands if c.cmd == "RUN")
    for package in ("ca-certificates", "libstdc++6", "libgcc-s1"):
        assert package in final_run


def test_the_image_library_serves_a_model_with_the_binary(built_ort, ferry_bin, tmp_path):
    host = ARCHES.get(platform.machine())
    need(host, f"no onnxruntime wheel for {platform.machine()}")
    library = next(built_ort[host].iterdir())
    port = free_port()
    env = dict(os.environ, ORT_DYLIB_PATH=str(library))
    log = tmp_path / "serving.log"
    with open(log, "wb") as out:
        serving = subprocess.Popen(
            [str(ferry_bin), "serving", f"--listen=127.0.0.1:{port}",
             f"--model=mlp={REPO / 'tests/fixtures/mlp.onnx'}", f"--cache-dir={tmp_path / 'cache'}"],
            env=env, stdout=out, stderr=subprocess.STDOUT,
        )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            assert serving.poll() is None, log.read_text()
            try:
                with urllib.request.urlopen(f"{base}/v2/health/ready", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        request = urllib.request.Request(
            f"{base}/v2/models/mlp/infer",
            data=(REPO / "tests/fixtures/mlp-request.json").read_bytes(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as r:
            answer = json.loads(r.read())
        assert answer["outputs"][0]["name"] == "probabilities"
        assert str(library) in log.read_text()  # the library loaded is the image's
    finally:
        serving.terminate()
        serving.wait(timeout=30)


def build_context_paths() -> list[str]:
    paths = []
    for command in stage("build").commands:
        if command.cmd == "COPY":
            assert not command.flags, "the build stage copies from the context only"
            paths += [p.rstrip("/") for p in command.value[:-1]]
    return paths


def test_the_build_context_holds_everything_cargo_reads(tmp_path):
    paths = build_context_paths()
    members = re.search(r"members\s*=\s*\[([^\]]*)\]", (REPO / "Cargo.toml").read_text()).group(1)
    for member in re.findall(r'"([^"]+)"', members) + ["src", "Cargo.toml", "Cargo.lock"]:
        assert member in paths, f"{member} is not copied into the build stage"
    # Files the code embeds at compile time, outside test code.
    for root in ("src", "registry/src", "serving/src", "operator/src"):
        for source in (REPO / root).rglob("*.rs"):
            text = source.read_text()
            text = text.split("#[cfg(test)]")[0]
            for embedded in re.findall(r'include_(?:bytes|str)!\(\s*"([^"]+)"', text):
                target = (source.parent / embedded).resolve().relative_to(REPO)
                assert any(str(target) == p or str(target).startswith(p + "/") for p in paths), (
                    f"{source.relative_to(REPO)} embeds {target}, which the build stage does not copy")
    # The manifests and the lock file, exactly as copied, resolve without changing the lock.
    context = tmp_path / "context"
    for p in paths:
        src, dst = REPO / p, context / p
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst)
        else:
            shutil.copy2(src, dst)
    cargo = shutil.which("cargo")
    need(cargo, "cargo is not installed")
    done = subprocess.run(
        [cargo, "metadata", "--locked", "--format-version", "1"],
        cwd=context, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    packages = {p["name"] for p in json.loads(done.stdout)["packages"]}
    assert {"ferry", "ferry-registry", "ferry-serving", "ferry-operator"} <= packages
