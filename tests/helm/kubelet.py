"""The part of a kubelet `kubectl port-forward` needs, for the pods `PodRunner` runs.

`kubectl port-forward svc/NAME LOCAL:PORT` finds a Running pod the Service selects, then asks the
API server for `pods/POD/portforward`; the API server looks up the pod's Node, and proxies the
upgraded connection to the kubelet at the Node's address and `daemonEndpoints.kubeletEndpoint`
port (`/portForward/NS/POD`). The protocol on that connection is SPDY/3.1
(`portforward.k8s.io`): for every local connection kubectl opens an `error` and a `data` stream
naming the pod port, and the kubelet copies the data stream to and from that port.

`Kubelet` registers a Node pointing at itself, reports the pods it is given as Pods on that Node
in phase Running, and serves that protocol over TLS, copying to the pods' local ports. Only what
port-forward uses is implemented: SYN_STREAM/SYN_REPLY, DATA, RST_STREAM, PING and GOAWAY;
SETTINGS, HEADERS and WINDOW_UPDATE are read and ignored (spdystream has no flow control).
"""

from __future__ import annotations

import hashlib
import socket
import ssl
import struct
import subprocess
import tempfile
import threading
import zlib
from pathlib import Path

# SPDY/3's header-compression dictionary (draft-mbelshe-httpbis-spdy-00, section 2.6.10.1):
# length-prefixed header names and values, then a run of common text.
_WORDS = (
    "options head post put delete trace accept accept-charset accept-encoding accept-language "
    "accept-ranges age allow authorization cache-control connection content-base "
    "content-encoding content-language content-length content-location content-md5 "
    "content-range content-type date etag expect expires from host if-match if-modified-since "
    "if-none-match if-range if-unmodified-since last-modified location max-forwards pragma "
    "proxy-authenticate proxy-authorization range referer retry-after server te trailer "
    "transfer-encoding upgrade user-agent vary via warning www-authenticate method get status"
).split() + ["200 OK", "version", "HTTP/1.1", "url", "public", "set-cookie", "keep-alive", "origin"]
_TAIL = (
    "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505"
    "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request"
    "401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented"
    "503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 "
    "Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,image/jpg,image/gif,"
    "application/xml,application/xhtml+xml,text/plain,text/javascript,publicprivatemax-age="
    "gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0."
)
SPDY_DICTIONARY = b"".join(struct.pack(">I", len(w)) + w.encode() for w in _WORDS) + _TAIL.encode()
# The same bytes as spdystream's spdy/dictionary.go (which kubectl uses).
assert hashlib.sha256(SPDY_DICTIONARY).hexdigest() == (
    "51d27341373f923f3cd88e1eb7162aeaa3723d7585ff2399201dc06498407f02"
)

SYN_STREAM, SYN_REPLY, RST_STREAM, SETTINGS, PING, GOAWAY, HEADERS, WINDOW_UPDATE = (
    1, 2, 3, 4, 6, 7, 8, 9)
FLAG_FIN = 0x01
PROTOCOL = "portforward.k8s.io"
NODE = "ferry-test-node"


def _read_exact(conn, n: int) -> bytes | None:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            return None
        data += chunk
    return data


class _Session:
    """One upgraded port-forward connection."""

    def __init__(self, conn: ssl.SSLSocket, pod, forwarded: list):
        self.conn = conn
        self.pod = pod
        self.forwarded = forwarded
        self.send_lock = threading.Lock()
        self.inflate = zlib.decompressobj(zdict=SPDY_DICTIONARY)
        self.deflate = zlib.compressobj(zdict=SPDY_DICTIONARY)
        self.backends: dict[int, socket.socket] = {}  # data stream id -> pod connection
        self.error_streams: dict[str, int] = {}  # requestID -> error stream id
        self.errors: list[str] = []

    # -- frames out --
    def _send(self, frame: bytes) -> None:
        with self.send_lock:
            self.conn.sendall(frame)

    def _control(self, kind: int, flags: int, payload: bytes) -> None:
        self._send(struct.pack(">HHI", 0x8000 | 3, kind, (flags << 24) | len(payload)) + payload)

    def data(self, stream: int, payload: bytes, fin: bool = False) -> None:
        self._send(struct.pack(">II", stream & 0x7FFFFFFF,
                               ((FLAG_FIN if fin else 0) << 24) | len(payload)) + payload)

    def reply(self, stream: int) -> None:
        block = self.deflate.compress(struct.pack(">I", 0)) + self.deflate.flush(zlib.Z_SYNC_FLUSH)
        self._control(SYN_REPLY, 0, struct.pack(">I", stream) + block)

    # -- frames in --
    def headers(self, block: bytes) -> dict[str, str]:
        raw = self.inflate.decompress(block)
        (count,), at, out = struct.unpack_from(">I", raw), 4, {}
        for _ in range(count):
            (n,) = struct.unpack_from(">I", raw, at)
            name = raw[at + 4:at + 4 + n].decode().lower()
            at += 4 + n
            (n,) = struct.unpack_from(">I", raw, at)
            out[name] = raw[at + 4:at + 4 + n].decode()
            at += 4 + n
        return out

    def serve(self) -> None:
        try:
            while True:
                head = _read_exact(self.conn, 8)
                if head is None:
                    return
                first, second = struct.unpack(">II", head)
                flags, length = second >> 24, second & 0xFFFFFF
                payload = _read_exact(self.conn, length) if length else b""
                if payload is None:
                    return
                if first & 0x80000000:
                    kind = first & 0xFFFF
                    if kind == SYN_STREAM:
                        (stream,) = struct.unpack_from(">I", payload)
                        self.open(stream & 0x7FFFFFFF, self.headers(payload[10:]))
                    elif kind == PING:
                        self._control(PING, 0, payload)
                    elif kind == RST_STREAM:
                        (stream,) = struct.unpack_from(">I", payload)
                        self.close_backend(stream & 0x7FFFFFFF)
                    elif kind == GOAWAY:
                        return
                else:
                    stream = first & 0x7FFFFFFF
                    backend = self.backends.get(stream)
                    if backend is not None:
                        if payload:
                            backend.sendall(payload)
                        if flags & FLAG_FIN:
                            try:
                                backend.shutdown(socket.SHUT_WR)
                            except OSError:
                                pass
        except (OSError, ssl.SSLError):
            return
        finally:
            for stream in list(self.backends):
                self.close_backend(stream)
            self.conn.close()

    def open(self, stream: int, headers: dict[str, str]) -> None:
        self.reply(stream)
        request = headers.get("requestid", "")
        if headers.get("streamtype") == "error":
            self.error_streams[request] = stream
            return
        port = int(headers["port"])
        try:
            local = self.pod.local_port(port)
            backend = socket.create_connection(("127.0.0.1", local), timeout=30)
            backend.settimeout(None)
        except (KeyError, OSError) as e:
            self.errors.append(f"port {port}: {e!r}")
            message = f"pod {self.pod.name} has no listener on port {port}".encode()
            if request in self.error_streams:
                self.data(self.error_streams[request], message, fin=True)
            self.data(stream, b"", fin=True)
            return
        self.backends[stream] = backend
        self.forwarded.append((self.pod.namespace, self.pod.name, port))
        threading.Thread(target=self.pump, args=(stream, request, backend), daemon=True).start()

    def pump(self, stream: int, request: str, backend: socket.socket) -> None:
        """The pod's answers back to kubectl, then the end of both streams."""
        try:
            while chunk := backend.recv(32768):
                self.data(stream, chunk)
        except OSError:
            pass
        try:
            self.data(stream, b"", fin=True)
            if request in self.error_streams:
                self.data(self.error_streams.pop(request), b"", fin=True)
        except OSError:
            pass

    def close_backend(self, stream: int) -> None:
        backend = self.backends.pop(stream, None)
        if backend is not None:
            try:
                backend.close()
            except OSError:
                pass


class Kubelet:
    """A Node for the test API server whose kubelet port-forwards to `PodRunner`'s pods."""

    def __init__(self, kube):
        self.kube = kube
        self.pods: dict[tuple[str, str], object] = {}  # (namespace, pod name) -> RunningPod
        self.requests: list[str] = []  # every upgrade request, as "METHOD PATH"
        self.forwarded: list[tuple] = []  # (namespace, pod, port) of every data stream
        folder = Path(tempfile.mkdtemp(prefix="ferry-kubelet-"))
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
             "-subj", "/CN=ferry-test-kubelet", "-addext", "subjectAltName=IP:127.0.0.1",
             "-keyout", str(folder / "kubelet.key"), "-out", str(folder / "kubelet.crt")],
            check=True, capture_output=True,
        )
        self.tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.tls.load_cert_chain(folder / "kubelet.crt", folder / "kubelet.key")
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self) -> "Kubelet":
        self._thread.start()
        node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": NODE}}
        if self.kube.find(f"/api/v1/nodes/{NODE}") is None:
            self.kube.create("/api/v1/nodes", node)
        self.kube.merge_patch(f"/api/v1/nodes/{NODE}/status", {"status": {
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": self.port}},
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
        }})
        return self

    def __exit__(self, *exc) -> None:
        for namespace, name in list(self.pods):
            # At once: no kubelet will confirm a graceful deletion.
            self.kube.delete(f"/api/v1/namespaces/{namespace}/pods/{name}?gracePeriodSeconds=0")
        self.pods.clear()
        self._stop.set()
        self.listener.close()
        self.kube.delete(f"/api/v1/nodes/{NODE}")

    def report(self, pod) -> dict:
        """Reports a running pod as a Pod on this Node in phase Running, as a kubelet does."""
        spec = dict(pod.spec)
        spec["nodeName"] = NODE
        # Nothing mints service-account tokens here (no controller-manager); the process has its own.
        spec["automountServiceAccountToken"] = False
        body = {"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": pod.name, "namespace": pod.namespace, "labels": pod.labels},
                "spec": spec}
        path = f"/api/v1/namespaces/{pod.namespace}/pods"
        self.kube.create(path, body)
        self.kube.merge_patch(f"{path}/{pod.name}/status", {"status": {
            "phase": "Running", "podIP": "127.0.0.1",
            "conditions": [{"type": "Ready", "status": "True"}],
        }})
        self.pods[(pod.namespace, pod.name)] = pod
        return self.kube.get(f"{path}/{pod.name}")

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                raw, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(raw,), daemon=True).start()

    def _handle(self, raw: socket.socket) -> None:
        try:
            conn = self.tls.wrap_socket(raw, server_side=True)
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                head += chunk
            text, _, rest = head.partition(b"\r\n\r\n")
            lines = text.decode("latin-1").split("\r\n")
            method, target, _ = lines[0].split(" ", 2)
            fields = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                fields.setdefault(name.strip().lower(), []).append(value.strip())
            self.requests.append(f"{method} {target}")
            parts = target.split("?")[0].strip("/").split("/")
            pod = self.pods.get((parts[1], parts[2])) if len(parts) == 3 and parts[0] == "portForward" else None
            offered = {p.strip() for v in fields.get("x-stream-protocol-version", []) for p in v.split(",")}
            if pod is None or "spdy/3.1" not in {v.lower() for v in fields.get("upgrade", [])} or PROTOCOL not in offered:
                conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                conn.close()
                return
            assert not rest, "data before the upgrade's answer"
            conn.sendall(("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
                          f"Upgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: {PROTOCOL}\r\n\r\n").encode())
            _Session(conn, pod, self.forwarded).serve()
        except (OSError, ssl.SSLError, ValueError):
            try:
                raw.close()
            except OSError:
                pass
