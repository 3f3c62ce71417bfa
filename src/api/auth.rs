//! Who is calling: the caller's identity from the Unix peer credentials, the client
//! certificate or a bearer token, and the access policy in force (swapped on SIGHUP).

use tonic::Request;

/// Who may call what, swappable at run time (SIGHUP).
pub type SharedAccess = std::sync::Arc<std::sync::RwLock<std::sync::Arc<Access>>>;

/// The access policy and the bearer tokens in force.
#[derive(Debug, Default)]
pub struct Access {
    /// Roles by uid/gid and certificate common name.
    pub policy: Option<crate::access::Policy>,
    /// Bearer tokens (TCP only).
    pub tokens: crate::access::Tokens,
}

/// Wraps access for sharing.
pub fn shared_access(access: Access) -> SharedAccess {
    std::sync::Arc::new(std::sync::RwLock::new(std::sync::Arc::new(access)))
}

/// The common name of a DER certificate's subject.
fn subject_cn(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let cn = cert
        .subject()
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?
        .to_owned();
    Some(cn)
}

/// Identifies the caller and says who it is, for the audit trail. Never echoes a token.
pub(super) fn identify<T>(req: &Request<T>, access: &Access) -> (crate::access::Caller, String) {
    use crate::access::Caller;
    if let Some(info) = req
        .extensions()
        .get::<tonic::transport::server::UdsConnectInfo>()
    {
        return match info.peer_cred {
            Some(c) => (
                Caller::Unix(crate::access::Peer {
                    uid: c.uid(),
                    gid: c.gid(),
                }),
                format!(
                    "uid={},gid={},pid={}",
                    c.uid(),
                    c.gid(),
                    c.pid().map_or_else(|| "?".to_owned(), |p| p.to_string())
                ),
            ),
            None => (Caller::Unknown, "unix:unknown-peer".to_owned()),
        };
    }
    let addr = req
        .remote_addr()
        .map_or_else(|| "unknown".to_owned(), |a| a.to_string());
    let cert = req
        .peer_certs()
        .and_then(|certs| certs.first().and_then(|c| subject_cn(c.as_ref())));
    if let (Some(cn), Some(policy)) = (&cert, &access.policy) {
        let by_cert = Caller::Certificate { cn: cn.clone() };
        if policy.role_of(&by_cert).is_some() {
            return (by_cert, format!("cert:CN={cn}@tcp:{addr}"));
        }
    }
    let bearer = req
        .metadata()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if let Some(token) = bearer {
        return match access.tokens.check(token.trim().as_bytes()) {
            Some(Caller::Token { name, role }) => {
                let who = format!("token:{name}@tcp:{addr}");
                (Caller::Token { name, role }, who)
            }
            _ => (
                Caller::Unknown,
                format!("tcp:{addr} (bearer token not recognised)"),
            ),
        };
    }
    match cert {
        Some(cn) => (
            Caller::Certificate { cn: cn.clone() },
            format!("cert:CN={cn}@tcp:{addr}"),
        ),
        None => (Caller::Unknown, format!("tcp:{addr}")),
    }
}
