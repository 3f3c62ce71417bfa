#!/usr/bin/env python3
"""Seed an S3+KMS emulator (moto_server) for the dualseal demo.

Creates one KMS key per category (with alias/dualseal-<category>), the destination buckets
secrets-<category>, and the source bucket master-secrets holding realistic sample secrets:
DB credentials as JSON and DSNs, API tokens, PEM keys and chains, .env files, sizes 0 B to a
few MiB, under mixed prefixes, plus a few keys no category claims. Everything is generated
from a fixed seed, so two runs produce the same bytes. The secrets are fake.

usage: seed_demo.py --endpoint URL [-n 300] [--seed 7] [--source-only]
       seed_demo.py --endpoint URL --drop-bucket-policies
Prints a JSON summary (object count, bytes, key ARNs) on stdout. With --source-only only the
source bucket is created and seeded (dualseal provisions keys and buckets itself).
--drop-bucket-policies removes the destination buckets' policies: moto ignores policy
conditions, so it would treat every conditional Deny as unconditional.
"""
import argparse
import base64
import json
import os
import random
import string
import sys

import boto3
from botocore.config import Config

SOURCE = "master-secrets"
CATEGORIES = ["db", "api", "tls", "misc"]
TEAMS = ["payments", "search", "identity", "billing", "infra", "données", "mobile app"]


def clients(endpoint):
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "test")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "test")
    cfg = Config(s3={"addressing_style": "path"}, retries={"max_attempts": 5, "mode": "standard"})
    kw = dict(endpoint_url=endpoint, region_name="us-east-1", config=cfg)
    return boto3.client("s3", **kw), boto3.client("kms", **kw)


def word(rng, n=10):
    return "".join(rng.choices(string.ascii_lowercase + string.digits, k=n))


def pem(rng, label, body_bytes):
    b = base64.encodebytes(rng.randbytes(body_bytes)).decode()
    return f"-----BEGIN {label}-----\n{b}-----END {label}-----\n"


def make_objects(rng, n):
    objs = []
    for i in range(n):
        team = rng.choice(TEAMS)
        kind = i % 10
        if kind in (0, 1):
            body = json.dumps({
                "engine": rng.choice(["postgres", "mysql"]),
                "host": f"{word(rng, 8)}.internal", "port": 5432,
                "username": f"svc_{word(rng, 6)}", "password": word(rng, 32),
            }, indent=2).encode()
            objs.append((f"db/{team}/credentials-{i:04d}.json", body))
        elif kind == 2:
            dsn = f"postgres://svc_{word(rng, 6)}:{word(rng, 28)}@{word(rng, 8)}.internal:5432/{team.split()[0]}"
            objs.append((f"db/{team}/dsn-{i:04d}.txt", dsn.encode()))
        elif kind in (3, 4):
            tok = f"tok_{'live' if rng.random() < .5 else 'test'}_{word(rng, 40)}"
            objs.append((f"api/{team}/token-{i:04d}.txt", tok.encode()))
        elif kind == 5:
            body = json.dumps({"client_id": word(rng, 20), "client_secret": word(rng, 48),
                               "scopes": ["read", "write"]}).encode()
            objs.append((f"api/{team}/oauth-{i:04d}.json", body))
        elif kind in (6, 7):
            objs.append((f"tls/{team}/key-{i:04d}.pem", pem(rng, "PRIVATE KEY", rng.randint(600, 2400)).encode()))
        elif kind == 8:
            env = "\n".join(f"{word(rng, 8).upper()}_SECRET={word(rng, 30)}" for _ in range(rng.randint(2, 12)))
            objs.append((f"env/{team}/service-{i:04d}.env", (env + "\n").encode()))
        else:
            objs.append((f"misc/{team}/blob-{i:04d}.bin", rng.randbytes(rng.randint(64, 4096))))
    # Edge cases every migration tool must get right.
    objs.append(("db/payments/empty-password.txt", b""))
    objs.append(("api/équipe données/clé secrète ✓.json", json.dumps({"token": word(rng, 40)}).encode()))
    objs.append(("tls/infra/ca-chain-large.pem", "".join(pem(rng, "CERTIFICATE", 1500) for _ in range(1400)).encode()))
    objs.append(("misc/backups/vault-snapshot.bin", rng.randbytes(3 * 1024 * 1024 + 17)))
    # Keys no category claims: they must be reported and left in place.
    for i in range(6):
        objs.append((f"legacy/unowned-{i}.txt", f"old secret {word(rng, 20)}\n".encode()))
    return objs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--endpoint", required=True)
    ap.add_argument("-n", type=int, default=300)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--source-only", action="store_true")
    ap.add_argument("--drop-bucket-policies", action="store_true")
    a = ap.parse_args()
    s3, kms = clients(a.endpoint)
    if a.drop_bucket_policies:
        for cat in CATEGORIES:
            s3.delete_bucket_policy(Bucket=f"secrets-{cat}")
        return
    arns = {}
    for cat in [] if a.source_only else CATEGORIES:
        alias = f"alias/dualseal-{cat}"
        existing = [x for x in kms.list_aliases()["Aliases"] if x["AliasName"] == alias]
        if existing:
            key_id = existing[0]["TargetKeyId"]
        else:
            key_id = kms.create_key(Description=f"dualseal demo: {cat} secrets")["KeyMetadata"]["KeyId"]
            kms.create_alias(AliasName=alias, TargetKeyId=key_id)
        arns[cat] = kms.describe_key(KeyId=key_id)["KeyMetadata"]["Arn"]
        s3.create_bucket(Bucket=f"secrets-{cat}")
    s3.create_bucket(Bucket=SOURCE)
    rng = random.Random(a.seed)
    objs = make_objects(rng, a.n)
    total = 0
    for key, body in objs:
        s3.put_object(Bucket=SOURCE, Key=key, Body=body)
        total += len(body)
    json.dump({"objects": len(objs), "bytes": total, "kms_keys": arns}, sys.stdout)
    print()


if __name__ == "__main__":
    main()
