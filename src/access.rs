//! Who may do what over the control plane. Pure policy: the caller's identity comes from the
//! kernel (SO_PEERCRED on the Unix socket), from a client certificate the TLS handshake
//! verified against the configured CA (its subject's common name), or from a bearer token
//! compared in constant time with the token file's entries — never from anything else the
//! caller says.
//!
//! Roles: `operator` may do everything; `auditor` may only read (status, watch, objects, audit
//! export and verification, verification reports); anyone else is refused, and the refusal is
//! audited. The daemon's own uid and gid (the socket's group under systemd) and root are
//! operators by default.

use serde::Deserialize;

/// The `[access]` table of the config.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AccessConfig {
    /// Extra uids with the operator role.
    #[serde(default)]
    pub operator_uids: Vec<u32>,
    /// Extra gids (primary group of the caller) with the operator role.
    #[serde(default)]
    pub operator_gids: Vec<u32>,
    /// Uids with the read-only auditor role.
    #[serde(default)]
    pub auditor_uids: Vec<u32>,
    /// Gids with the read-only auditor role.
    #[serde(default)]
    pub auditor_gids: Vec<u32>,
    /// Client-certificate common names (TCP with mutual TLS) with the operator role.
    #[serde(default)]
    pub operator_cns: Vec<String>,
    /// Client-certificate common names with the auditor role.
    #[serde(default)]
    pub auditor_cns: Vec<String>,
}

/// Who is calling, as the transport established it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// A Unix-socket peer, from SO_PEERCRED.
    Unix(Peer),
    /// A TLS client whose certificate chains to the configured client CA.
    Certificate {
        /// The subject's common name.
        cn: String,
    },
    /// A bearer token that matched an entry of the token file.
    Token {
        /// The entry's name (never the token).
        name: String,
        /// The entry's role.
        role: Role,
    },
    /// Nothing the policy can use.
    Unknown,
}

/// Bearer tokens from a file of `ROLE NAME TOKEN` lines (`operator` or `auditor`; `#`
/// comments). Tokens are kept zeroizing and compared in constant time, all of them every time.
#[derive(Default)]
pub struct Tokens {
    entries: Vec<(Role, String, zeroize::Zeroizing<Vec<u8>>)>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("entries", &self.entries.len())
            .finish_non_exhaustive()
    }
}

/// Shortest token accepted: 32 characters of a random token carry enough entropy that guessing
/// over the network is hopeless.
pub const MIN_TOKEN_LEN: usize = 32;

impl Tokens {
    /// Parses a token file's text.
    ///
    /// # Errors
    /// Every malformed line, by number (the token itself is never quoted).
    pub fn parse(text: &str) -> Result<Self, Vec<String>> {
        let mut entries = Vec::new();
        let mut problems = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let parts: Vec<&str> = line.split_whitespace().collect();
            let [role, name, token] = parts.as_slice() else {
                problems.push(format!("line {}: expected ROLE NAME TOKEN", i + 1));
                continue;
            };
            let role = match *role {
                "operator" => Role::Operator,
                "auditor" => Role::Auditor,
                other => {
                    problems.push(format!(
                        "line {}: role {other:?} is neither operator nor auditor",
                        i + 1
                    ));
                    continue;
                }
            };
            if token.len() < MIN_TOKEN_LEN {
                problems.push(format!(
                    "line {} ({name}): the token is shorter than {MIN_TOKEN_LEN} characters; use a random one (e.g. `openssl rand -hex 32`)",
                    i + 1
                ));
                continue;
            }
            entries.push((
                role,
                (*name).to_owned(),
                zeroize::Zeroizing::new(token.as_bytes().to_vec()),
            ));
        }
        if problems.is_empty() {
            Ok(Self { entries })
        } else {
            Err(problems)
        }
    }

    /// Whether any token is configured.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entry a presented token matches, comparing with every entry in constant time.
    pub fn check(&self, presented: &[u8]) -> Option<Caller> {
        use subtle::ConstantTimeEq;
        let mut found = None;
        for (role, name, token) in &self.entries {
            // Length is not secret (all tokens are long); the bytes are compared in constant time.
            let same = token.len() == presented.len() && bool::from(token.ct_eq(presented));
            if same && found.is_none() {
                found = Some(Caller::Token {
                    name: name.clone(),
                    role: *role,
                });
            }
        }
        found
    }
}

/// A caller's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Everything.
    Operator,
    /// Read-only.
    Auditor,
}

/// What a call does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Reads state or evidence.
    Read,
    /// Changes state or reaches into S3/KMS (plan, start, pause, resume, cancel, retry, verify).
    Control,
}

/// The caller, as the kernel reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
}

/// The access policy of one daemon.
#[derive(Debug, Clone)]
pub struct Policy {
    config: AccessConfig,
    daemon_uid: u32,
    daemon_gid: u32,
}

impl Policy {
    /// A policy for a daemon running as `daemon_uid`/`daemon_gid`.
    pub fn new(config: AccessConfig, daemon_uid: u32, daemon_gid: u32) -> Self {
        Self {
            config,
            daemon_uid,
            daemon_gid,
        }
    }

    /// The caller's role, if any. `None` (unknown peer, or a connection without credentials)
    /// is refused everything.
    pub fn role(&self, peer: Option<Peer>) -> Option<Role> {
        let p = peer?;
        let c = &self.config;
        if p.uid == 0
            || p.uid == self.daemon_uid
            || p.gid == self.daemon_gid
            || c.operator_uids.contains(&p.uid)
            || c.operator_gids.contains(&p.gid)
        {
            Some(Role::Operator)
        } else if c.auditor_uids.contains(&p.uid) || c.auditor_gids.contains(&p.gid) {
            Some(Role::Auditor)
        } else {
            None
        }
    }

    /// Whether `peer` may perform `action`.
    pub fn allows(&self, peer: Option<Peer>, action: Action) -> bool {
        permits(self.role(peer), action)
    }

    /// The role of any caller.
    pub fn role_of(&self, caller: &Caller) -> Option<Role> {
        let c = &self.config;
        match caller {
            Caller::Unix(p) => self.role(Some(*p)),
            Caller::Certificate { cn } if c.operator_cns.contains(cn) => Some(Role::Operator),
            Caller::Certificate { cn } if c.auditor_cns.contains(cn) => Some(Role::Auditor),
            Caller::Token { role, .. } => Some(*role),
            Caller::Certificate { .. } | Caller::Unknown => None,
        }
    }

    /// Whether `caller` may perform `action`.
    pub fn allows_caller(&self, caller: &Caller, action: Action) -> bool {
        permits(self.role_of(caller), action)
    }
}

fn permits(role: Option<Role>, action: Action) -> bool {
    matches!(
        (role, action),
        (Some(Role::Operator), _) | (Some(Role::Auditor), Action::Read)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy::new(
            AccessConfig {
                operator_uids: vec![1000],
                auditor_uids: vec![2000],
                auditor_gids: vec![3000],
                ..Default::default()
            },
            500,
            600,
        )
    }

    #[test]
    fn roles_follow_uid_gid_and_the_daemons_own_identity() {
        let p = policy();
        let peer = |uid, gid| Some(Peer { uid, gid });
        assert_eq!(p.role(peer(0, 0)), Some(Role::Operator));
        assert_eq!(p.role(peer(500, 9)), Some(Role::Operator));
        assert_eq!(
            p.role(peer(9, 600)),
            Some(Role::Operator),
            "the socket's group"
        );
        assert_eq!(p.role(peer(1000, 9)), Some(Role::Operator));
        assert_eq!(p.role(peer(2000, 9)), Some(Role::Auditor));
        assert_eq!(p.role(peer(9, 3000)), Some(Role::Auditor));
        assert_eq!(p.role(peer(9, 9)), None);
        assert_eq!(p.role(None), None);
    }

    #[test]
    fn certificates_and_tokens_map_to_roles() {
        let p = Policy::new(
            AccessConfig {
                operator_cns: vec!["ops-alice".into()],
                auditor_cns: vec!["audit-carol".into()],
                ..Default::default()
            },
            500,
            600,
        );
        let cert = |cn: &str| Caller::Certificate { cn: cn.into() };
        assert_eq!(p.role_of(&cert("ops-alice")), Some(Role::Operator));
        assert_eq!(p.role_of(&cert("audit-carol")), Some(Role::Auditor));
        assert_eq!(p.role_of(&cert("mallory")), None);
        assert!(!p.allows_caller(&Caller::Unknown, Action::Read));
        let t = "a".repeat(40);
        let tokens = Tokens::parse(&format!("# who\nauditor bob {t}\n")).unwrap();
        let bob = tokens.check(t.as_bytes()).unwrap();
        assert!(p.allows_caller(&bob, Action::Read));
        assert!(!p.allows_caller(&bob, Action::Control));
        assert_eq!(tokens.check(b"wrong"), None);
        assert_eq!(tokens.check("b".repeat(40).as_bytes()), None);
        assert!(!format!("{tokens:?}").contains(&t));
        let errs = Tokens::parse("boss eve short\nauditor x\n").unwrap_err();
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert!(
            errs.iter().all(|e| !e.contains("short")),
            "a token was quoted: {errs:?}"
        );
    }

    #[test]
    fn auditors_read_only_strangers_nothing() {
        let p = policy();
        let auditor = Some(Peer { uid: 2000, gid: 9 });
        assert!(p.allows(auditor, Action::Read));
        assert!(!p.allows(auditor, Action::Control));
        assert!(!p.allows(Some(Peer { uid: 9, gid: 9 }), Action::Read));
        assert!(p.allows(Some(Peer { uid: 0, gid: 0 }), Action::Control));
    }
}
