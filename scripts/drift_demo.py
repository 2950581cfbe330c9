#!/usr/bin/env python3
"""Data for the README's drift walk-through, standard library only.

  drift_demo.py train ROWS            CSV of 32 features drawn from N(0, 1), to profile
  drift_demo.py send URL ROWS [--shift S]
                                      ROWS single-row infer requests to URL, feature f0 shifted by S
  drift_demo.py label URL ROWS [--shift S] [--wrong]
                                      the same requests, then business feedback on each answer
                                      (POST to URL's .../feedback): labelled with the class the
                                      model answered, or with the other class (--wrong)
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
    label = sub.add_parser("label")
    label.add_argument("url")
    label.add_argument("rows", type=int)
    label.add_argument("--shift", type=float, default=0.0)
    label.add_argument("--wrong", action="store_true")
    args = parser.parse_args()
    if args.command == "train":
        out = sys.stdout
        out.write(",".join(f"f{i}" for i in range(FEATURES)) + "\n")
        for row in rows(args.rows, seed=1):
            out.write(",".join(str(v) for v in row) + "\n")
        return
    if args.command == "label":
        label_answers(args)
        return
    ok = 0
    for row in rows(args.rows, seed=2, shift=args.shift):
        ok += infer(args.url, row, None) is not None
    print(f"sent {args.rows} requests, {ok} answered" + (f" (f0 shifted by {args.shift:g})" if args.shift else ""))


def post(url, payload):
    request = urllib.request.Request(url, data=json.dumps(payload).encode(), headers={"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response) if response.status == 200 else None


def infer(url, row, request_id):
    body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, FEATURES], "data": row}]}
    if request_id is not None:
        body["id"] = request_id
    return post(url, body)


def label_answers(args):
    feedback_url = args.url.rsplit("/", 1)[0] + "/feedback"
    run = random.Random().getrandbits(32)
    labelled = 0
    for i, row in enumerate(rows(args.rows, seed=3, shift=args.shift)):
        answer = infer(args.url, row, f"label-{run:08x}-{i}")
        probabilities = answer["outputs"][0]["data"]
        answered = max(range(len(probabilities)), key=probabilities.__getitem__)
        truth = 1 - answered if args.wrong else answered
        post(feedback_url, {"id": answer["id"], "label": truth})
        labelled += 1
    print(f"{labelled} predictions labelled {'wrong' if args.wrong else 'right'}")


if __name__ == "__main__":
    main()
