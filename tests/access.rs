//! Who may control the daemon: roles from the socket peer's uid/gid, checked by the kernel's
//! credentials. Peers under other uids are run with `setpriv` (util-linux); the test needs
//! root to do that and says so instead of passing vacuously.

// Integration-test crate: a failed expectation is a test failure.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use common::*;

const AUDITOR: u32 = 65533;
const STRANGER: u32 = 65534;

/// Runs dualsealctl as `uid` (and gid = uid, no supplementary groups), from a copy beside the
/// socket: the build directory of a CI checkout need not be reachable by other users.
fn ctl_as(uid: u32, socket: &Path, args: &[&str]) -> (i32, String) {
    let bin = socket.with_file_name("dualsealctl");
    if !bin.exists() {
        std::fs::copy(env!("CARGO_BIN_EXE_dualsealctl"), &bin).expect("copy the CLI");
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let out = Command::new("setpriv")
        .args([
            format!("--reuid={uid}"),
            format!("--regid={uid}"),
            "--clear-groups".to_owned(),
        ])
        .arg(&bin)
        .arg("--socket")
        .arg(socket)
        .args(args)
        .output()
        .expect("setpriv (util-linux) runs the CLI under another uid");
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_come_from_the_peer_and_denials_are_audited() {
    assert_eq!(
        nix::unistd::getuid().as_raw(),
        0,
        "this test switches uids with setpriv and must run as root (CI does)"
    );
    let moto = Moto::start();
    provision(&moto).await;
    let dir = tempfile::tempdir().expect("tempdir");
    // Let other uids reach the socket; [access] then decides what they may do.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut config = config_toml(&moto, dir.path(), 2);
    config = config.replace(
        "concurrency = 2",
        "concurrency = 2\ncontrol_socket_mode = \"0666\"",
    );
    config.push_str(&format!("\n[access]\nauditor_uids = [{AUDITOR}]\n"));
    let daemon = Daemon::start(dir.path(), &config);
    let sock = &daemon.socket;

    // Root (the daemon's own uid) is an operator.
    let mut client = daemon.client().await;
    let job = client
        .start("", false)
        .await
        .expect("operator starts")
        .job_id;
    wait_job(&mut client, job).await;

    // An auditor reads, but cannot control.
    let (code, out) = ctl_as(AUDITOR, sock, &["status", &job.to_string()]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = ctl_as(
        AUDITOR,
        sock,
        &["audit", "export", "--job", &job.to_string()],
    );
    assert_eq!(code, 0, "{out}");
    let (code, out) = ctl_as(AUDITOR, sock, &["start"]);
    assert_ne!(code, 0);
    assert!(out.contains("may not start a job"), "{out}");

    // A stranger can do nothing.
    let (code, out) = ctl_as(STRANGER, sock, &["status"]);
    assert_ne!(code, 0);
    assert!(
        out.contains(&format!("uid={STRANGER}")) && out.contains("may not"),
        "{out}"
    );

    // Each denial is in the audit trail, with who and what, and nothing else happened.
    let audit = client.audit(0).await.unwrap();
    let denied: Vec<_> = audit.iter().filter(|e| e.kind == "denied").collect();
    assert_eq!(denied.len(), 2, "{denied:?}");
    assert!(
        denied[0].actor.starts_with(&format!("uid={AUDITOR},"))
            && denied[0].detail.contains("start a job")
    );
    assert!(
        denied[1].actor.starts_with(&format!("uid={STRANGER},"))
            && denied[1].detail.contains("list jobs")
    );
    assert_eq!(
        client.jobs().await.unwrap().len(),
        1,
        "a denied start created a job"
    );
}
