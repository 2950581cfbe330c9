#!/usr/bin/env python3
"""A minimal webhook receiver: verifies Ferry's signature and prints each delivery, standard
library only. What a retraining pipeline's trigger does first.

  webhook-receiver.py --port 9000 --secret SECRET [--count N]

Verification: X-Ferry-Signature is "t=<unix seconds>,v1=<hex HMAC-SHA256(secret, t + "." + body)>".
Reject a bad signature, and a timestamp more than 5 minutes off (a replayed delivery). Deliveries
are at-least-once: deduplicate on X-Ferry-Delivery.
"""
import argparse
import hashlib
import hmac
import json
import sys
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

TOLERANCE = 300


def verify(secret, header, body, now):
    parts = dict(p.strip().split("=", 1) for p in header.split(",") if "=" in p)
    t = int(parts.get("t", "0"))
    expected = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, parts.get("v1", "")) and abs(now - t) <= TOLERANCE


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--secret", required=True)
    parser.add_argument("--count", type=int, default=0, help="exit after this many deliveries (0: never)")
    args = parser.parse_args()
    seen = set()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            if not verify(args.secret, self.headers.get("x-ferry-signature", ""), body, int(time.time())):
                self.send_response(401)
                self.end_headers()
                return
            self.send_response(204)
            self.end_headers()
            delivery = self.headers.get("x-ferry-delivery")
            if delivery in seen:
                return
            seen.add(delivery)
            event = json.loads(body)
            data = event.get("data", {})
            if event.get("type") == "drift.detected":
                worst = data.get("features", [{}])[0]
                print(f"{event['type']}: endpoint {data.get('endpoint')} version {data.get('version')}, "
                      f"{data.get('metric')} {data.get('score'):.2f} > {data.get('threshold')}, "
                      f"worst feature {worst.get('name')} (signature verified) -> start retraining", flush=True)
            else:
                print(f"{event.get('type')}: {json.dumps(data, sort_keys=True)} (signature verified)", flush=True)
            if args.count and len(seen) >= args.count:
                raise SystemExit(0)

        def log_message(self, *_):
            pass

    server = HTTPServer(("127.0.0.1", args.port), Handler)
    try:
        server.serve_forever()
    except SystemExit:
        pass
    sys.exit(0)


if __name__ == "__main__":
    main()
