//! Content classification: what an object *is* (a PEM private key, a database URL, ...), as a
//! second opinion beside the key rules of [`crate::classify`]. Pure logic over the first bytes
//! of an object.
//!
//! A verdict explains itself without repeating the secret: it names the structure it saw (a
//! PEM label, a URL scheme, JSON member names, variable names of a `.env` file, a length and
//! an entropy), never a value, a fragment of one, or a hash of one.

use std::sync::OnceLock;

use regex::Regex;
use serde::Deserialize;

/// How many leading bytes of an object are inspected: secrets are small, and a verdict must
/// not need the whole of a large object in memory.
pub const INSPECT_BYTES: usize = 64 * 1024;

/// What an object can be recognised as, strongest evidence first: when several match, the
/// first in this order is the verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContentKind {
    /// A PEM private key block (PKCS#1, PKCS#8, SEC1, OpenSSH, encrypted).
    PemPrivateKey,
    /// An AWS access key id together with a secret access key.
    AwsAccessKey,
    /// A database connection URL with credentials, or a key=value DSN with a password.
    DatabaseUrl,
    /// A JSON Web Key or key set.
    Jwk,
    /// A PEM certificate (chain) without a private key.
    Certificate,
    /// A `.env` file with credential-like variable names.
    Dotenv,
    /// One line of random-looking characters: an API token, a password, a key.
    HighEntropyToken,
}

impl ContentKind {
    /// Every kind, in verdict order.
    pub const ALL: [ContentKind; 7] = [
        Self::PemPrivateKey,
        Self::AwsAccessKey,
        Self::DatabaseUrl,
        Self::Jwk,
        Self::Certificate,
        Self::Dotenv,
        Self::HighEntropyToken,
    ];

    /// Name in config and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PemPrivateKey => "pem_private_key",
            Self::AwsAccessKey => "aws_access_key",
            Self::DatabaseUrl => "database_url",
            Self::Jwk => "jwk",
            Self::Certificate => "certificate",
            Self::Dotenv => "dotenv",
            Self::HighEntropyToken => "high_entropy_token",
        }
    }
}

impl std::fmt::Display for ContentKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an object was recognised as, and why (secret-free).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// The kind.
    pub kind: ContentKind,
    /// The evidence, in words.
    pub why: String,
}

struct Patterns {
    pem: Regex,
    access_key_id: Regex,
    secret_name: Regex,
    secret_value: Regex,
    db_url: Regex,
    dsn_password: Regex,
    dsn_host: Regex,
    env_line: Regex,
}

#[allow(clippy::expect_used)] // constant patterns, covered by the unit tests
fn patterns() -> &'static Patterns {
    static P: OnceLock<Patterns> = OnceLock::new();
    P.get_or_init(|| Patterns {
        pem: Regex::new(r"-----BEGIN ([A-Z0-9 ]{1,40})-----").expect("pem"),
        access_key_id: Regex::new(r"\b(?:AKIA|ASIA|AIDA|AROA)[A-Z2-7]{16}\b").expect("akid"),
        secret_name: Regex::new(r"(?i)aws_?secret_?access_?key|secretaccesskey").expect("sn"),
        secret_value: Regex::new(r"(?:^|[^A-Za-z0-9/+=])[A-Za-z0-9/+=]{40}(?:$|[^A-Za-z0-9/+=])")
            .expect("sv"),
        db_url: Regex::new(
            r"(?i)\b((?:jdbc:)?(?:postgres(?:ql)?|mysql|mariadb|mongodb(?:\+srv)?|redis|rediss|amqps?|mssql|sqlserver|oracle|cockroachdb|clickhouse))://[^\s:/@]+:[^\s@/]+@",
        )
        .expect("url"),
        dsn_password: Regex::new(r"(?i)(?:^|[\s;])(?:password|pwd)\s*=").expect("dsnp"),
        dsn_host: Regex::new(r"(?i)(?:^|[\s;])(?:host|server|data source|hostaddr)\s*=")
            .expect("dsnh"),
        env_line: Regex::new(r"(?m)^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=").expect("env"),
    })
}

/// Variable-name fragments that mark a credential.
const CREDENTIAL_WORDS: [&str; 10] = [
    "PASSWORD",
    "PASSWD",
    "PWD",
    "SECRET",
    "TOKEN",
    "API_KEY",
    "APIKEY",
    "PRIVATE_KEY",
    "CREDENTIAL",
    "ACCESS_KEY",
];

/// Recognises what `bytes` (the first [`INSPECT_BYTES`] or fewer of an object) is, if
/// anything; the strongest verdict in [`ContentKind::ALL`] order.
pub fn inspect(bytes: &[u8]) -> Option<Verdict> {
    let bytes = &bytes[..bytes.len().min(INSPECT_BYTES)];
    let text = match std::str::from_utf8(bytes) {
        Ok(t) => t,
        // Cut inside a character by the inspection limit: keep what is whole.
        Err(e) if e.error_len().is_none() => std::str::from_utf8(&bytes[..e.valid_up_to()]).ok()?,
        Err(_) => return None,
    };
    let p = patterns();
    let labels: Vec<&str> = p
        .pem
        .captures_iter(text)
        .filter_map(|c| c.get(1).map(|m| m.as_str()))
        .collect();
    if let Some(label) = labels.iter().find(|l| l.ends_with("PRIVATE KEY")) {
        return Some(Verdict {
            kind: ContentKind::PemPrivateKey,
            why: format!("PEM block \"BEGIN {label}\""),
        });
    }
    if p.access_key_id.is_match(text)
        && (p.secret_name.is_match(text) || p.secret_value.is_match(text))
    {
        return Some(Verdict {
            kind: ContentKind::AwsAccessKey,
            why: "an AWS access key id (20 characters, AKIA/ASIA form) and a 40-character secret access key".into(),
        });
    }
    if let Some(c) = p.db_url.captures(text) {
        let scheme = c.get(1).map_or("", |m| m.as_str()).to_ascii_lowercase();
        return Some(Verdict {
            kind: ContentKind::DatabaseUrl,
            why: format!("a {scheme}:// URL with a user name and password"),
        });
    }
    if p.dsn_password.is_match(text) && p.dsn_host.is_match(text) {
        return Some(Verdict {
            kind: ContentKind::DatabaseUrl,
            why: "a key=value connection string with a host and a password".into(),
        });
    }
    if let Some(why) = jwk(text) {
        return Some(Verdict {
            kind: ContentKind::Jwk,
            why,
        });
    }
    if labels.contains(&"CERTIFICATE") {
        let n = labels.iter().filter(|l| **l == "CERTIFICATE").count();
        return Some(Verdict {
            kind: ContentKind::Certificate,
            why: format!("{n} PEM \"BEGIN CERTIFICATE\" block(s) and no private key"),
        });
    }
    if let Some(why) = dotenv(text) {
        return Some(Verdict {
            kind: ContentKind::Dotenv,
            why,
        });
    }
    token(text).map(|why| Verdict {
        kind: ContentKind::HighEntropyToken,
        why,
    })
}

fn jwk(text: &str) -> Option<String> {
    let trimmed = text.trim_start();
    if !trimmed.starts_with('{') {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(text).ok()?;
    let describe = |k: &serde_json::Value| -> Option<String> {
        let kty = k.get("kty")?.as_str()?;
        // kty names an algorithm family (RSA, EC, OKP, oct): public knowledge, not a secret.
        let kty: String = kty
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .take(8)
            .collect();
        let private = ["d", "k"].iter().any(|m| k.get(m).is_some());
        Some(format!(
            "kty {kty:?}{}",
            if private {
                ", with private members"
            } else {
                ", public only"
            }
        ))
    };
    if let Some(keys) = v.get("keys").and_then(|k| k.as_array()) {
        let described: Vec<String> = keys.iter().filter_map(describe).collect();
        if !described.is_empty() {
            return Some(format!(
                "a JSON Web Key Set of {} key(s): {}",
                described.len(),
                described.join("; ")
            ));
        }
        return None;
    }
    describe(&v).map(|d| format!("a JSON Web Key ({d})"))
}

fn dotenv(text: &str) -> Option<String> {
    let names: Vec<&str> = patterns()
        .env_line
        .captures_iter(text)
        .filter_map(|c| c.get(1).map(|m| m.as_str()))
        .collect();
    // Most non-empty lines must be assignments: a prose file that mentions PASSWORD= once is
    // not a .env file.
    let lines = text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .count();
    if names.is_empty() || names.len() * 2 < lines {
        return None;
    }
    let credential: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| {
            let up = n.to_ascii_uppercase();
            CREDENTIAL_WORDS.iter().any(|w| up.contains(w))
        })
        .collect();
    if credential.is_empty() {
        return None;
    }
    Some(format!(
        "a .env file of {} assignment(s) with credential-like names ({}{})",
        names.len(),
        credential
            .iter()
            .take(3)
            .map(|n| n.chars().take(40).collect::<String>())
            .collect::<Vec<_>>()
            .join(", "),
        if credential.len() > 3 { ", ..." } else { "" }
    ))
}

/// Bits per character of `s`'s own character distribution.
fn shannon_entropy(s: &str) -> f64 {
    let mut counts = std::collections::HashMap::new();
    for c in s.chars() {
        *counts.entry(c).or_insert(0u32) += 1;
    }
    let n = s.chars().count() as f64;
    counts
        .values()
        .map(|&c| {
            let p = f64::from(c) / n;
            -p * p.log2()
        })
        .sum()
}

fn token(text: &str) -> Option<String> {
    let t = text.trim();
    let len = t.chars().count();
    if !(16..=4096).contains(&len) || t.contains(char::is_whitespace) {
        return None;
    }
    let alphabet = if t.chars().all(|c| c.is_ascii_hexdigit()) {
        "hex"
    } else if t
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "+/=-_.~".contains(c))
    {
        "base64-like"
    } else {
        return None;
    };
    let h = shannon_entropy(t);
    // Random hex tops out at 4 bits/char, random base64 at 6; English words and identifiers
    // stay well below these thresholds.
    let threshold = if alphabet == "hex" { 3.0 } else { 4.0 };
    (h >= threshold).then(|| {
        format!("one line of {len} {alphabet} characters, {h:.1} bits of entropy per character")
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn kind(s: &str) -> Option<ContentKind> {
        inspect(s.as_bytes()).map(|v| v.kind)
    }

    #[test]
    fn recognises_each_kind() {
        use ContentKind::*;
        let cases: [(&str, Option<ContentKind>); 14] = [
            ("-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----\n", Some(PemPrivateKey)),
            ("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n-----BEGIN PRIVATE KEY-----\nMC4\n-----END PRIVATE KEY-----\n", Some(PemPrivateKey)),
            ("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n", Some(Certificate)),
            ("[default]\naws_access_key_id = AKIAIOSFODNN7EXAMPLE\naws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\n", Some(AwsAccessKey)),
            ("{\"url\":\"postgresql://app:s3cr3t@db.internal:5432/orders\"}", Some(DatabaseUrl)),
            ("Server=tcp:sql.internal;Database=orders;User Id=app;Password=hunter2;", Some(DatabaseUrl)),
            ("{\"kty\":\"RSA\",\"n\":\"0vx7\",\"e\":\"AQAB\",\"d\":\"X4cT\"}", Some(Jwk)),
            ("{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"f83O\",\"y\":\"x_FE\"}]}", Some(Jwk)),
            ("# app\nDB_HOST=db\nDB_PASSWORD=hunter2\nexport API_TOKEN=abc\n", Some(Dotenv)),
            ("ghp_R4nd0mT0k3nV4lu3Xq9ZpL2mK8sW1yB7cD", Some(HighEntropyToken)),
            ("9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", Some(HighEntropyToken)),
            ("DEBUG=true\nPORT=8080\n", None),
            ("hello world, this is not a secret at all", None),
            ("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", None),
        ];
        for (text, want) in cases {
            assert_eq!(kind(text), want, "{text:?}");
        }
    }

    #[test]
    fn verdicts_never_repeat_the_secret() {
        let secrets = [
            ("postgresql://app:s3cr3t-pw@db.internal/orders", "s3cr3t-pw"),
            ("aws_access_key_id=AKIAIOSFODNN7EXAMPLE\naws_secret_access_key=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "AKIAIOSFODNN7EXAMPLE"),
            ("{\"kty\":\"oct\",\"k\":\"GawgguFyGrWKav7AX4VKUg\"}", "GawgguFyGrWKav7AX4VKUg"),
            ("DB_PASSWORD=correct-horse\n", "correct-horse"),
            ("ghp_R4nd0mT0k3nV4lu3Xq9ZpL2mK8sW1yB7cD", "R4nd0m"),
        ];
        for (text, secret) in secrets {
            let v = inspect(text.as_bytes()).unwrap();
            assert!(!v.why.contains(secret), "{:?} leaks {secret}", v.why);
        }
    }

    #[test]
    fn binary_and_oversized_input_is_handled() {
        assert_eq!(inspect(&[0xff, 0xfe, 0x00, 0x01]), None);
        let mut big = b"-----BEGIN EC PRIVATE KEY-----\n".to_vec();
        big.resize(INSPECT_BYTES * 3, b'A');
        assert_eq!(
            inspect(&big).map(|v| v.kind),
            Some(ContentKind::PemPrivateKey)
        );
    }
}
