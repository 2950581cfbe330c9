#!/usr/bin/env python3
"""Data for the README's drift walk-through, standard library only.

  drift_demo.py train ROWS            CSV of 32 features drawn from N(0, 1), to profile
  drift_demo.py send URL ROWS [--shift S]
                                      ROWS single-row infer requests to URL, feature f0 shifted by S
"""
import argparse
import json
import random
import sys
import urllib.request

FEATURES = 32


def rows(n, seed, shift=0.0):
    rng = random.Random(seed)
    for _ in range(n):
        row = [round(rng.gauss(0.0, 1.0), 5) for _ in range(FEATURES)]
        row[0] = round(row[0] + shift, 5)
        yield row


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train")
    train.add_argument("rows", type=int)
    send = sub.add_parser("send")
    send.add_argument("url")
    send.add_argument("rows", type=int)
    send.add_argument("--shift", type=float, default=0.0)
    args = parser.parse_args()
    if args.command == "train":
        out = sys.stdout
        out.write(",".join(f"f{i}" for i in range(FEATURES)) + "\n")
        for row in rows(args.rows, seed=1):
            out.write(",".join(str(v) for v in row) + "\n")
        return
    ok = 0
    for row in rows(args.rows, seed=2, shift=args.shift):
        body = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, FEATURES], "data": row}]}).encode()
        request = urllib.request.Request(args.url, data=body, headers={"content-type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            ok += response.status == 200
    print(f"sent {args.rows} requests, {ok} answered" + (f" (f0 shifted by {args.shift:g})" if args.shift else ""))


if __name__ == "__main__":
    main()
