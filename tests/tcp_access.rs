//! The control API over TCP against the real daemon: mutual TLS maps a client certificate's
//! common name to a role, a client of an unknown CA fails the handshake, bearer tokens give
//! their role and a wrong one is refused, every denial is audited without the token, a
//! plaintext listener on a non-loopback address is refused at start, and SIGHUP reloads the
//! roles and tokens.

// Integration-test crate: a failed expectation is a test failure.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::path::Path;

use common::*;
use dualseal::api::client::{Client, ClientAuth, ClientError};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn ca(name: &str) -> Ca {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    Ca {
        pem: cert.pem(),
        issuer: Issuer::new(params, key),
    }
}

/// A leaf certificate and key (PEM) for `cn`, valid for localhost and 127.0.0.1.
fn leaf(ca: &Ca, cn: &str) -> (String, String) {
    let mut params =
        CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

const BOB_TOKEN: &str = "b0b-auditor-token-0123456789abcdef0123456789";
const OPS_TOKEN: &str = "0ps-operator-token-0123456789abcdef012345678";

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

async fn connect(port: u16, auth: ClientAuth) -> Result<Client, ClientError> {
    Client::connect_with(&format!("https://127.0.0.1:{port}"), auth).await
}

fn code(e: &ClientError) -> Option<tonic::Code> {
    match e {
        ClientError::Status(s) => Some(s.code()),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_with_mutual_tls_and_tokens() {
    let moto = Moto::start();
    provision(&moto).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let server_ca = ca("dualseal test server CA");
    let client_ca = ca("dualseal test client CA");
    let stranger_ca = ca("someone else's CA");
    let (server_cert, server_key) = leaf(&server_ca, "dualseald");
    let (alice_cert, alice_key) = leaf(&client_ca, "ops-alice");
    let (carol_cert, carol_key) = leaf(&client_ca, "unlisted-carol");
    let (mallory_cert, mallory_key) = leaf(&stranger_ca, "ops-alice");
    let port = free_port();
    let tokens = write(
        dir.path(),
        "tokens",
        &format!("# role name token\nauditor bob {BOB_TOKEN}\n"),
    );
    let tcp = format!(
        "\n[tcp]\nlisten = \"127.0.0.1:{port}\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\nclient_ca = \"{}\"\ntokens_file = \"{tokens}\"\n",
        write(dir.path(), "server.crt", &server_cert),
        write(dir.path(), "server.key", &server_key),
        write(dir.path(), "clients-ca.crt", &client_ca.pem),
    );
    let base = config_toml(&moto, dir.path(), 2);
    let config = base.replace(
        "[provision]\n",
        "[access]\noperator_cns = [\"ops-alice\"]\n\n[provision]\n",
    ) + &tcp;
    let daemon = Daemon::start(dir.path(), &config);

    let tls = |cert: &str, key: &str| ClientAuth {
        ca_pem: Some(server_ca.pem.clone().into_bytes()),
        identity_pem: Some((
            cert.as_bytes().to_vec(),
            zeroize::Zeroizing::new(key.as_bytes().to_vec()),
        )),
        ..Default::default()
    };

    // ops-alice (mutual TLS, CN listed as operator): reads and controls.
    let mut alice = connect(port, tls(&alice_cert, &alice_key))
        .await
        .expect("alice connects");
    assert!(alice.jobs().await.expect("alice lists").is_empty());
    let plan = alice.plan("", 5).await.expect("alice plans");
    assert_eq!(plan.source_bucket, SOURCE);

    // A certificate from another CA (even with a listed CN) fails the handshake.
    let mallory = match connect(port, tls(&mallory_cert, &mallory_key)).await {
        Ok(mut c) => c.jobs().await.map(|_| ()),
        Err(e) => Err(e),
    };
    let e = mallory.expect_err("an unknown CA must not get in");
    // The handshake fails: the client sees a transport error (its exact code depends on when
    // the failure surfaces), never an answer of the service, not even PERMISSION_DENIED.
    assert!(
        matches!(e, ClientError::Connect { .. })
            || matches!(
                code(&e),
                Some(tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled)
            ),
        "{e}"
    );

    // A valid certificate whose CN is not listed: no role.
    let mut carol = connect(port, tls(&carol_cert, &carol_key))
        .await
        .expect("carol connects");
    let e = carol.jobs().await.expect_err("unlisted CN");
    assert_eq!(code(&e), Some(tonic::Code::PermissionDenied), "{e}");
    assert!(e.to_string().contains("cert:CN=unlisted-carol"), "{e}");

    // Tokens (TLS without a client certificate): bob is an auditor; a wrong token is refused.
    let with_token = |t: &str| ClientAuth {
        ca_pem: Some(server_ca.pem.clone().into_bytes()),
        token: Some(zeroize::Zeroizing::new(t.to_owned())),
        ..Default::default()
    };
    let mut bob = connect(port, with_token(BOB_TOKEN))
        .await
        .expect("bob connects");
    bob.jobs().await.expect("an auditor reads");
    let e = bob
        .start("", false)
        .await
        .expect_err("an auditor may not start");
    assert_eq!(code(&e), Some(tonic::Code::PermissionDenied), "{e}");
    assert!(e.to_string().contains("token:bob"), "{e}");
    let wrong = "x".repeat(BOB_TOKEN.len());
    let mut eve = connect(port, with_token(&wrong))
        .await
        .expect("eve connects");
    let e = eve.jobs().await.expect_err("a wrong token");
    assert_eq!(code(&e), Some(tonic::Code::PermissionDenied), "{e}");
    assert!(
        !e.to_string().contains(&wrong),
        "the error echoed the token: {e}"
    );
    let mut anonymous = connect(
        port,
        ClientAuth {
            ca_pem: Some(server_ca.pem.clone().into_bytes()),
            ..Default::default()
        },
    )
    .await
    .expect("connects");
    assert_eq!(
        code(&anonymous.jobs().await.expect_err("no identity")),
        Some(tonic::Code::PermissionDenied)
    );

    // Every denial is audited, with who, and never the token.
    let trail = alice.audit(0).await.expect("audit");
    let denied: Vec<_> = trail.iter().filter(|e| e.kind == "denied").collect();
    assert!(denied.len() >= 4, "{denied:#?}");
    assert!(denied.iter().any(|e| e.actor.starts_with("token:bob@tcp:")));
    assert!(denied
        .iter()
        .any(|e| e.actor.contains("bearer token not recognised")));
    let all = format!("{trail:?}") + &daemon.log_text();
    for secret in [BOB_TOKEN, wrong.as_str(), alice_key.as_str()] {
        assert!(
            !all.contains(secret),
            "a credential reached the audit trail or the log"
        );
    }

    // SIGHUP: a new token file and roles apply without a restart.
    write(dir.path(), "tokens", &format!("operator ops {OPS_TOKEN}\n"));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(daemon.pid()),
        nix::sys::signal::Signal::SIGHUP,
    )
    .expect("SIGHUP");
    let mut reloaded = false;
    for _ in 0..50 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let trail = alice.audit(0).await.expect("audit");
        if trail.iter().any(|e| e.kind == "config_reloaded") {
            reloaded = true;
            break;
        }
    }
    assert!(reloaded, "no config_reloaded event\n{}", daemon.log_text());
    let mut ops = connect(port, with_token(OPS_TOKEN))
        .await
        .expect("ops connects");
    ops.plan("", 1).await.expect("the new operator token works");
    let mut bob = connect(port, with_token(BOB_TOKEN))
        .await
        .expect("bob connects");
    assert_eq!(
        code(&bob.jobs().await.expect_err("bob's token was removed")),
        Some(tonic::Code::PermissionDenied)
    );
}

#[test]
fn plaintext_tcp_on_a_public_address_is_refused_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = format!(
        "[source]\nbucket = \"master-secrets\"\n[daemon]\njournal_path = \"{}\"\ncontrol_socket = \"{}\"\n[tcp]\nlisten = \"0.0.0.0:7443\"\ntokens_file = \"/nonexistent\"\n[[category]]\nname = \"db\"\nbucket = \"secrets-db\"\nprefixes = [\"db/\"]\n",
        dir.path().join("journal").display(),
        dir.path().join("control.sock").display(),
    );
    let out = run_dualseald(dir.path(), &config, &[]);
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("refusing a plaintext listener on a non-loopback address"),
        "{err}"
    );
    assert!(
        !dir.path().join("control.sock").exists(),
        "it must not start serving"
    );
}

#[test]
fn unusable_tls_material_is_named_by_validate_and_refuses_the_start_before_the_journal() {
    let server_ca = ca("dualseal test server CA");
    let (server_cert, server_key) = leaf(&server_ca, "dualseald");
    let (_, other_key) = leaf(&server_ca, "someone else");
    let garbage_key = "-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n";
    // (case, certificate, key, client CA, the setting the error must name)
    let cases = [
        (
            "garbage key",
            &server_cert,
            garbage_key,
            &server_ca.pem,
            "tcp.tls_key",
        ),
        (
            "no key at all",
            &server_cert,
            "hello\n",
            &server_ca.pem,
            "tcp.tls_key",
        ),
        (
            "another certificate's key",
            &server_cert,
            &other_key,
            &server_ca.pem,
            "tcp.tls_cert and tcp.tls_key",
        ),
        (
            "key and certificate swapped",
            &server_key,
            &server_cert,
            &server_ca.pem,
            "tcp.tls_cert",
        ),
        (
            "garbage certificate",
            &"not a certificate\n".to_owned(),
            &server_key,
            &server_ca.pem,
            "tcp.tls_cert",
        ),
        (
            "garbage client CA",
            &server_cert,
            &server_key,
            &"junk".to_owned(),
            "tcp.client_ca",
        ),
    ];
    for (case, cert, key, client_ca, named) in cases {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let tcp = format!(
            "\n[tcp]\nlisten = \"127.0.0.1:{port}\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\nclient_ca = \"{}\"\n",
            write(dir.path(), "server.crt", cert),
            write(dir.path(), "server.key", key),
            write(dir.path(), "clients-ca.crt", client_ca),
        );
        // No S3 is needed: the daemon must refuse before it serves or opens anything.
        let config = config_via("http://127.0.0.1:9", dir.path(), 2, 3) + &tcp;
        for args in [&["validate"][..], &[][..]] {
            let out = run_dualseald(dir.path(), &config, args);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(
                out.status.code(),
                Some(78),
                "{case}, {args:?}: a configuration error (not restarted by systemd): {stderr}"
            );
            assert!(
                stderr.contains(named),
                "{case}, {args:?}: names {named}: {stderr}"
            );
            let body = key.lines().nth(1).filter(|l| l.len() > 8);
            assert!(
                !body.is_some_and(|l| stderr.contains(l)),
                "{case}: key material in the error: {stderr}"
            );
        }
        // An open may upgrade the journal's layout and resume jobs: a start that is refused
        // must not have done either.
        assert!(
            !dir.path().join("journal").exists(),
            "{case}: the journal was opened before the TLS settings were checked"
        );
        assert!(
            !dir.path().join("control.sock").exists(),
            "{case}: it served"
        );
    }
}
