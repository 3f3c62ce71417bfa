//! Splitting one source bucket across several daemons with no coordination between them:
//! daemon `i` of `n` takes the keys whose stable hash falls in its share. Each has its own
//! journal (and `dualseald@i.service` instance); together they cover every key exactly once.
//! Pure logic.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};

/// Domain separation for the shard hash: the assignment must never change between versions,
/// or a resumed shard would skip or repeat keys.
const SHARD_HASH_DOMAIN: &[u8] = b"dualseal shard v1\0";

/// Share `index` (1-based) of `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    index: u32,
    count: u32,
}

impl Shard {
    /// Whether this shard takes `key` (a source key: a name, not a secret).
    pub fn owns(&self, key: &str) -> bool {
        if self.count == 1 {
            return true;
        }
        let d = Sha256::new()
            .chain_update(SHARD_HASH_DOMAIN)
            .chain_update(key.as_bytes())
            .finalize();
        let mut first = [0u8; 8];
        first.copy_from_slice(&d[..8]);
        u64::from_be_bytes(first) % u64::from(self.count) == u64::from(self.index - 1)
    }

    /// 1-based index.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// Number of shards.
    pub fn count(&self) -> u32 {
        self.count
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// Largest number of shards: far beyond what S3's and KMS's quotas make useful.
pub const MAX_SHARDS: u32 = 1024;

impl FromStr for Shard {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            format!("shard {s:?}: write I/N, this daemon's share I of N (1 <= I <= N <= {MAX_SHARDS}), e.g. \"2/4\"")
        };
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let (index, count) = (
            i.trim().parse::<u32>().map_err(|_| bad())?,
            n.trim().parse::<u32>().map_err(|_| bad())?,
        );
        if count == 0 || count > MAX_SHARDS || index == 0 || index > count {
            return Err(bad());
        }
        Ok(Self { index, count })
    }
}

impl Shard {
    /// The shard of a daemon numbered from 0, as Kubernetes numbers a StatefulSet's pods:
    /// `ordinal` I of `count` N is share I+1 of N. Both come from the environment
    /// (`DUALSEAL_SHARD_ORDINAL`, `DUALSEAL_SHARD_COUNT`), hence text.
    ///
    /// # Errors
    /// A message naming both settings when either is not a number or the ordinal is not
    /// below the count.
    pub fn from_ordinal(ordinal: &str, count: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "shard ordinal {ordinal:?} of count {count:?} (DUALSEAL_SHARD_ORDINAL, DUALSEAL_SHARD_COUNT): \
                 the ordinal counts from 0 and must be below the count (1 <= count <= {MAX_SHARDS}); \
                 a StatefulSet's replicas must equal DUALSEAL_SHARD_COUNT"
            )
        };
        let i = ordinal.trim().parse::<u32>().map_err(|_| bad())?;
        let n = count.trim().parse::<u32>().map_err(|_| bad())?;
        if n == 0 || n > MAX_SHARDS || i >= n {
            return Err(bad());
        }
        Ok(Self {
            index: i + 1,
            count: n,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn every_key_belongs_to_exactly_one_shard() {
        let shards: Vec<Shard> = (1..=4).map(|i| format!("{i}/4").parse().unwrap()).collect();
        let mut per = [0u32; 4];
        for k in 0..4000 {
            let key = format!("db/team-{}/secret-{k:05}.json", k % 7);
            let owners: Vec<usize> = (0..4).filter(|&i| shards[i].owns(&key)).collect();
            assert_eq!(owners.len(), 1, "{key}");
            per[owners[0]] += 1;
        }
        // Roughly even: each of 4 shares within 10 % of 1000.
        assert!(per.iter().all(|&n| (900..=1100).contains(&n)), "{per:?}");
    }

    #[test]
    fn the_assignment_is_stable() {
        // Frozen (and computed independently in docs/scaling.md): changing the hash would make
        // resumed shards skip or repeat keys.
        let shards: Vec<Shard> = (1..=3).map(|i| format!("{i}/3").parse().unwrap()).collect();
        let owners: Vec<u32> = ["a", "b", "c", "db/x.json", "tls/é.pem"]
            .iter()
            .map(|k| shards.iter().find(|s| s.owns(k)).unwrap().index())
            .collect();
        assert_eq!(owners, [3, 2, 3, 2, 3]);
    }

    #[test]
    fn parsing_names_what_is_wrong() {
        assert_eq!("2/4".parse::<Shard>().unwrap().to_string(), "2/4");
        assert!("1/1".parse::<Shard>().unwrap().owns("anything"));
        for bad in ["0/4", "5/4", "4", "a/b", "1/0", "1/2000", ""] {
            let e = bad.parse::<Shard>().unwrap_err();
            assert!(e.contains("I/N"), "{bad}: {e}");
        }
    }

    #[test]
    fn a_pod_ordinal_is_the_share_after_it() {
        assert_eq!(Shard::from_ordinal("0", "4").unwrap().to_string(), "1/4");
        assert_eq!(Shard::from_ordinal("3", "4").unwrap().to_string(), "4/4");
        assert_eq!(Shard::from_ordinal(" 0 ", "1").unwrap().to_string(), "1/1");
        for (i, n) in [
            ("4", "4"),
            ("0", "0"),
            ("-1", "4"),
            ("x", "4"),
            ("", "4"),
            ("0", "1025"),
        ] {
            let e = Shard::from_ordinal(i, n).unwrap_err();
            assert!(e.contains("DUALSEAL_SHARD_ORDINAL"), "{i}/{n}: {e}");
        }
    }
}
