#!/usr/bin/env python3
"""A dualseal control-plane client in Python: starts a migration job, watches it to the
end, and exports the job's audit trail as JSON Lines, resuming the export where it stopped
if the stream breaks.

Stubs come from the proto (./generate.sh); the channel is a stock grpcio channel with no
options, to the Unix socket (unix:/run/dualseal/control.sock) or to host:port.

    ./generate.sh && python3 control_client.py unix:/run/dualseal/control.sock audit.jsonl
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.environ.get("DUALSEAL_PY_GEN", os.path.join(os.path.dirname(__file__), "gen")))

import grpc  # noqa: E402
from google.protobuf import json_format  # noqa: E402
from grpc_status import rpc_status  # noqa: E402
from google.rpc import error_details_pb2  # noqa: E402

from dualseal.v1 import control_pb2 as pb  # noqa: E402
from dualseal.v1 import control_pb2_grpc as rpc  # noqa: E402

FINAL = {pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_COMPLETED_WITH_FAILURES, pb.JOB_STATE_FAILED,
         pb.JOB_STATE_CANCELLED, pb.JOB_STATE_PAUSED}


def reason(err: grpc.RpcError) -> str:
    """The stable reason code of a refused call (ErrorInfo.reason), or ''."""
    status = rpc_status.from_call(err)
    for detail in status.details if status else []:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info.reason
    return ""


def watch(stub: rpc.ControlServiceStub, job_id: int) -> pb.Job:
    """Follows a job until it ends (or pauses); reconnects if the stream breaks."""
    while True:
        try:
            last = None
            for update in stub.WatchJob(pb.WatchJobRequest(job_id=job_id)):
                last = update.job
                print(f"job {job_id}: {pb.JobState.Name(last.state)} "
                      f"{last.verified_objects}/{last.discovered_objects} verified", file=sys.stderr)
            if last is not None and last.state in FINAL:
                return last
        except grpc.RpcError as err:
            if err.code() != grpc.StatusCode.UNAVAILABLE:
                raise
        time.sleep(1)


def export_audit(stub: rpc.ControlServiceStub, job_id: int, out, after_seq: int = 0,
                 stop_after: int = 0) -> int:
    """Writes the job's audit events after `after_seq`, one JSON object per line; returns the
    last seq written. `stop_after` > 0 drops the stream after that many events (to show a
    resumed export)."""
    n = 0
    call = stub.ExportAudit(pb.ExportAuditRequest(job_id=job_id, after_seq=after_seq))
    for resp in call:
        event = json_format.MessageToDict(resp.event, preserving_proto_field_name=True)
        out.write(json.dumps(event, sort_keys=True) + "\n")
        after_seq = resp.event.seq
        n += 1
        if stop_after and n >= stop_after:
            call.cancel()
            break
    return after_seq


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("target", help="unix:/path/to/control.sock or host:port")
    ap.add_argument("audit_out", help="where to write the job's audit events (JSON Lines)")
    ap.add_argument("--prefix", default="")
    ap.add_argument("--allow-weak-buckets", action="store_true")
    ap.add_argument("--interrupt-export-after", type=int, default=0,
                    help="break the audit stream after N events, then resume it (a demo)")
    args = ap.parse_args()

    with grpc.insecure_channel(args.target) as channel:
        stub = rpc.ControlServiceStub(channel)
        try:
            started = stub.StartJob(pb.StartJobRequest(
                prefix=args.prefix, allow_weak_buckets=args.allow_weak_buckets)).job
        except grpc.RpcError as err:
            print(f"start refused: {err.code().name} {reason(err)}: {err.details()}", file=sys.stderr)
            return 2
        done = watch(stub, started.job_id)
        with open(args.audit_out, "w") as out:
            last = export_audit(stub, done.job_id, out, stop_after=args.interrupt_export_after)
            if args.interrupt_export_after:
                last = export_audit(stub, done.job_id, out, after_seq=last)
        print(json.dumps({
            "job_id": done.job_id,
            "state": pb.JobState.Name(done.state),
            "kind": pb.JobKind.Name(done.kind),
            "verified_objects": done.verified_objects,
            "create_time": done.create_time.ToJsonString(),
            "last_audit_seq": last,
        }))
        return 0 if done.state == pb.JOB_STATE_SUCCEEDED else 1


if __name__ == "__main__":
    sys.exit(main())
