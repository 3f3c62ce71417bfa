//! Who may do what over the control socket. Pure policy: the caller's identity comes from the
//! kernel (SO_PEERCRED on the Unix socket), never from anything the caller says.
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
        matches!(
            (self.role(peer), action),
            (Some(Role::Operator), _) | (Some(Role::Auditor), Action::Read)
        )
    }
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
    fn auditors_read_only_strangers_nothing() {
        let p = policy();
        let auditor = Some(Peer { uid: 2000, gid: 9 });
        assert!(p.allows(auditor, Action::Read));
        assert!(!p.allows(auditor, Action::Control));
        assert!(!p.allows(Some(Peer { uid: 9, gid: 9 }), Action::Read));
        assert!(p.allows(Some(Peer { uid: 0, gid: 0 }), Action::Control));
    }
}
