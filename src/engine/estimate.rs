//! What a job will cost and how long it will take, from the plan's totals: requests to S3 and
//! KMS (dualseal's own and those S3 makes for DSSE-KMS, which cannot use bucket keys), the
//! DSSE-KMS storage charge, and the time the configured limits allow. Pure arithmetic.

use crate::config::Pricing;
use crate::model::{JobLimits, VerifyMode};

/// Keys per ListObjectsV2 page.
const LIST_PAGE: u64 = 1000;

/// The estimate of one job.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Estimate {
    /// GetObject requests (source reads, and read-backs with verify=full).
    pub s3_gets: u64,
    /// PutObject requests.
    pub s3_puts: u64,
    /// ListObjectsV2 requests (and HEADs with verify=checksum).
    pub s3_lists_and_heads: u64,
    /// dualseal's KMS requests (GenerateDataKey, and Decrypt with verify=full).
    pub kms_dualseal: u64,
    /// KMS requests S3 makes for DSSE-KMS (one per PUT, one per GET of a destination).
    pub kms_dsse: u64,
    /// GB written under DSSE-KMS (the envelope adds a few bytes per segment).
    pub dsse_gb: f64,
    /// Total at the configured prices, USD.
    pub cost_usd: f64,
    /// Seconds at the configured limits, when a limit bounds the job.
    pub eta_secs: Option<u64>,
    /// What bounds the ETA, in words.
    pub basis: String,
}

/// Estimates a job over `objects` objects and `bytes` bytes.
pub fn estimate(
    objects: u64,
    bytes: u64,
    mode: VerifyMode,
    limits: &JobLimits,
    prices: &Pricing,
) -> Estimate {
    let full = mode == VerifyMode::Full;
    let s3_gets = objects * if full { 2 } else { 1 };
    let s3_puts = objects;
    let s3_lists_and_heads = objects.div_ceil(LIST_PAGE) + if full { 0 } else { objects };
    let kms_dualseal = objects * if full { 2 } else { 1 };
    let kms_dsse = objects * if full { 2 } else { 1 };
    let dsse_gb = bytes as f64 / 1e9;
    let cost_usd = s3_gets as f64 / 1000.0 * prices.s3_get_per_1000
        + (s3_puts + s3_lists_and_heads) as f64 / 1000.0 * prices.s3_put_per_1000
        + (kms_dualseal + kms_dsse) as f64 / 10_000.0 * prices.kms_per_10000
        + dsse_gb * prices.dsse_per_gb;
    // Each limit bounds the job on its own; the slowest one decides.
    let mut bounds: Vec<(f64, String)> = Vec::new();
    if let Some(r) = limits.objects_per_sec {
        bounds.push((objects as f64 / f64::from(r), format!("{r} objects/s")));
    }
    if let Some(r) = limits.bytes_per_sec {
        bounds.push((bytes as f64 / r as f64, format!("{r} bytes/s")));
    }
    if let Some(r) = limits.kms_requests_per_sec {
        bounds.push((
            kms_dualseal as f64 / f64::from(r),
            format!(
                "{r} KMS requests/s ({} per object)",
                if full { 2 } else { 1 }
            ),
        ));
    }
    let slowest = bounds.into_iter().max_by(|a, b| a.0.total_cmp(&b.0));
    let (eta_secs, basis) = match slowest {
        Some((secs, why)) => (Some(secs.ceil() as u64), format!("bounded by {why}")),
        None => (
            None,
            "no limit set: S3's per-prefix and KMS's account quotas decide".into(),
        ),
    };
    Estimate {
        s3_gets,
        s3_puts,
        s3_lists_and_heads,
        kms_dualseal,
        kms_dsse,
        dsse_gb,
        cost_usd,
        eta_secs,
        basis,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_million_secrets_at_the_default_kms_rate() {
        let prices = Pricing::default();
        let limits = JobLimits {
            kms_requests_per_sec: Some(1000),
            ..Default::default()
        };
        let e = estimate(1_000_000, 2_000_000_000, VerifyMode::Full, &limits, &prices);
        assert_eq!(
            (e.s3_gets, e.s3_puts, e.kms_dualseal, e.kms_dsse),
            (2_000_000, 1_000_000, 2_000_000, 2_000_000)
        );
        assert_eq!(e.s3_lists_and_heads, 1000);
        // 2M GETs $0.80 + 1.001M PUT/LIST $5.005 + 4M KMS $12 + 2 GB DSSE $0.006.
        assert!((e.cost_usd - 17.811).abs() < 0.001, "{}", e.cost_usd);
        assert_eq!(e.eta_secs, Some(2000));
        let c = estimate(
            1_000_000,
            2_000_000_000,
            VerifyMode::Checksum,
            &limits,
            &prices,
        );
        assert!(c.cost_usd < e.cost_usd && c.eta_secs == Some(1000));
        let free = estimate(10, 10, VerifyMode::Full, &JobLimits::default(), &prices);
        assert_eq!(free.eta_secs, None);
    }
}
