#!/usr/bin/env python3
"""Reads live objects (migrated by the real daemon, or forged beside them) through the package,
as an application would, and checks each against what the case file says: the exact source
bytes, or the typed refusal. Driven by tests/readers.rs; usage: live.py CASES.json

CASES.json: {"endpoint": URL, "region": R, "mapping": PATH, "cases": [{"name", "bucket", "key",
"expect": {"category", "kms_key_arn"} or "mapping", "plaintext": PATH or null, "error": KIND or
null}]}. Every case is read twice: with read() and segment by segment with open_stream().
"""

import hashlib
import json
import sys

import boto3
from botocore.config import Config

from dualseal_reader import Expectation, ReadError, open_stream, read


def main() -> int:
    spec = json.load(open(sys.argv[1]))
    session = boto3.session.Session(aws_access_key_id="test", aws_secret_access_key="test", region_name=spec["region"])
    s3 = session.client("s3", endpoint_url=spec["endpoint"], config=Config(s3={"addressing_style": "path"}))
    kms = session.client("kms", endpoint_url=spec["endpoint"])
    failures = 0
    for case in spec["cases"]:
        if case["expect"] == "mapping":
            expect = Expectation.from_mapping(spec["mapping"], case["bucket"], case["key"])
        else:
            expect = Expectation(case["expect"]["category"], case["expect"]["kms_key_arn"])
        want = None
        if case["plaintext"]:
            with open(case["plaintext"], "rb") as f:
                want = f.read()
        for how in ("read", "open_stream"):
            try:
                if how == "read":
                    got = read(s3, kms, case["bucket"], case["key"], expect=expect)
                    digest, n = hashlib.sha256(got).hexdigest(), len(got)
                else:
                    h, n = hashlib.sha256(), 0
                    with open_stream(s3, kms, case["bucket"], case["key"], expect=expect) as stream:
                        for part in stream:
                            h.update(part)
                            n += len(part)
                    digest = h.hexdigest()
                outcome = ("bytes", digest, n)
            except ReadError as err:
                outcome = ("error", err.kind, str(err))
            expected = ("bytes", hashlib.sha256(want).hexdigest(), len(want)) if want is not None else None
            if want is not None and outcome == expected:
                print(f"ok    python {how:11} {case['name']}: {n} bytes, as in the source")
            elif want is None and outcome[0] == "error" and outcome[1] == case["error"]:
                print(f"ok    python {how:11} {case['name']}: refused as {outcome[1]}: {outcome[2]}")
            else:
                failures += 1
                exp = f"{len(want)} source bytes" if want is not None else f"refusal {case['error']}"
                print(f"FAIL  python {how:11} {case['name']}: expected {exp}, got {outcome[:2]} {outcome[2:]}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
