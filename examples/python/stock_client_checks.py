#!/usr/bin/env python3
"""What a third party meets with stock grpcio and nothing but the proto or reflection:
run by tests/api_clients.rs against a live dualseald. Every check prints one line; any
failure exits non-zero.

    python3 stock_client_checks.py unix:/path/to/control.sock
"""

import os
import sys

sys.path.insert(0, os.environ.get("DUALSEAL_PY_GEN", os.path.join(os.path.dirname(__file__), "gen")))

import grpc  # noqa: E402
from google.protobuf import timestamp_pb2  # noqa: E402
from google.rpc import error_details_pb2  # noqa: E402
from grpc_health.v1 import health_pb2, health_pb2_grpc  # noqa: E402
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (  # noqa: E402
    ProtoReflectionDescriptorDatabase,
)
from grpc_status import rpc_status  # noqa: E402

from dualseal.v1 import control_pb2 as pb  # noqa: E402
from dualseal.v1 import control_pb2_grpc as rpc  # noqa: E402


def details(err):
    """(reason, {field: description}) from a refused call's google.rpc.Status."""
    status = rpc_status.from_call(err)
    reason, fields = "", {}
    for d in status.details if status else []:
        if d.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            d.Unpack(info)
            assert info.domain == "dualseal.io", info
            reason = info.reason
        elif d.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            br = error_details_pb2.BadRequest()
            d.Unpack(br)
            fields = {v.field: v.description for v in br.field_violations}
    return reason, fields


def refused(call, code, want_reason, want_fields=()):
    try:
        call()
    except grpc.RpcError as err:
        reason, fields = details(err)
        assert err.code() == code, (err.code(), err.details())
        assert reason == want_reason, (reason, err.details())
        for f in want_fields:
            assert f in fields, (f, fields)
        return err.details()
    raise AssertionError(f"expected {code}, the call succeeded")


def main(target: str) -> int:
    # No channel options: grpc-core sends the socket path as :authority.
    with grpc.insecure_channel(target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "dualseal.v1.ControlService"):
            r = health.Check(health_pb2.HealthCheckRequest(service=service))
            assert r.status == health_pb2.HealthCheckResponse.SERVING, r
        print("ok health (no channel options)")

        db = ProtoReflectionDescriptorDatabase(channel)
        services = set(db.get_services())
        assert "dualseal.v1.ControlService" in services, services
        fd = db.FindFileContainingSymbol("dualseal.v1.ControlService")
        assert fd.name == "dualseal/v1/control.proto", fd.name
        # Every message, field, enum, value and RPC carries its documentation to clients.
        names = {}
        for i, m in enumerate(fd.message_type):
            names[(4, i)] = m.name
            for j, f in enumerate(m.field):
                names[(4, i, 2, j)] = f"{m.name}.{f.name}"
        for i, e in enumerate(fd.enum_type):
            names[(5, i)] = e.name
            for j, v in enumerate(e.value):
                names[(5, i, 2, j)] = v.name
        for j, rpc_ in enumerate(fd.service[0].method):
            names[(6, 0, 2, j)] = rpc_.name
        documented = {tuple(loc.path) for loc in fd.source_code_info.location
                      if loc.leading_comments.strip()}
        undocumented = sorted(n for path, n in names.items() if path not in documented)
        assert not undocumented, f"undocumented through reflection: {undocumented}"
        print("ok reflection v1alpha:", sorted(services), f"({len(names)} elements documented)")

        stub = rpc.ControlServiceStub(channel)
        first = stub.ListJobs(pb.ListJobsRequest(page_size=1))
        assert len(first.jobs) == 1 and first.next_page_token, first
        rest = stub.ListJobs(pb.ListJobsRequest(page_size=1000, page_token=first.next_page_token))
        ids = [first.jobs[0].job_id] + [j.job_id for j in rest.jobs]
        assert ids == sorted(ids) and len(set(ids)) == len(ids) and not rest.next_page_token, ids
        done = stub.ListJobs(pb.ListJobsRequest(states=[pb.JOB_STATE_SUCCEEDED], kind=pb.JOB_KIND_MIGRATE))
        assert done.jobs and all(j.state == pb.JOB_STATE_SUCCEEDED for j in done.jobs), done
        print(f"ok ListJobs pages and filters: {ids}")

        job = done.jobs[0]
        assert job.create_time.seconds > 1_700_000_000 and job.kind == pb.JOB_KIND_MIGRATE, job
        events = [r.event for r in stub.ExportAudit(pb.ExportAuditRequest(job_id=job.job_id))]
        seqs = [e.seq for e in events]
        assert seqs == sorted(seqs) and len(seqs) > 3, seqs
        tail = [r.event.seq for r in stub.ExportAudit(
            pb.ExportAuditRequest(job_id=job.job_id, after_seq=seqs[2]))]
        assert tail == seqs[3:], (tail, seqs)
        print(f"ok ExportAudit resumes after_seq ({len(seqs)} events)")

        refused(lambda: stub.GetJob(pb.GetJobRequest(job_id=987654)),
                grpc.StatusCode.NOT_FOUND, "JOB_NOT_FOUND")
        refused(lambda: stub.GetJob(pb.GetJobRequest()),
                grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT", ["job_id"])
        refused(lambda: list(stub.ExportAudit(pb.ExportAuditRequest(kind="object_verifed", outcome="okay"))),
                grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT", ["kind", "outcome"])
        late, early = timestamp_pb2.Timestamp(seconds=2_000_000_000), timestamp_pb2.Timestamp(seconds=1_000_000_000)
        refused(lambda: list(stub.ExportAudit(pb.ExportAuditRequest(since=late, until=early))),
                grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT", ["since"])
        msg = refused(lambda: stub.Decommission(pb.DecommissionRequest()),
                      grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT", ["token"])
        assert "token is required" in msg, msg
        refused(lambda: stub.PlanDecommission(pb.PlanDecommissionRequest(job_id=job.job_id)),
                grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT", ["mode"])
        refused(lambda: stub.ListJobs(pb.ListJobsRequest(page_token="garbage")),
                grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT", ["page_token"])
        refused(lambda: stub.ResumeJob(pb.ResumeJobRequest(job_id=job.job_id)),
                grpc.StatusCode.FAILED_PRECONDITION, "PRECONDITION")
        # Less than a millisecond apart is as empty a range as a day.
        refused(lambda: list(stub.ExportAudit(pb.ExportAuditRequest(
                    since=timestamp_pb2.Timestamp(seconds=1_700_000_000, nanos=1),
                    until=timestamp_pb2.Timestamp(seconds=1_700_000_000)))),
                grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT", ["since"])
        # Keys S3 could never hold are refused, and the daemon keeps serving.
        long = "p" * 70_000
        refused(lambda: stub.Plan(pb.PlanRequest(prefix=long)),
                grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT")
        refused(lambda: stub.StartJob(pb.StartJobRequest(prefix=long)),
                grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT")
        manifest = "s3://inventory/" + "k" * 70_000 + "/manifest.json"
        refused(lambda: stub.Plan(pb.PlanRequest(options=pb.JobOptions(inventory_manifest=manifest))),
                grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT")
        assert health.Check(health_pb2.HealthCheckRequest()).status == health_pb2.HealthCheckResponse.SERVING
        print("ok errors carry ErrorInfo reasons and BadRequest fields")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
