//! How dualsealctl shows jobs: tables, one job in detail, units. Presentation only.

use dualseal::api::pb;

/// `1.5 MiB`.
pub fn bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// `1h02m`, `3m05s`, `42s`.
pub fn duration(secs: u64) -> String {
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    if h > 0 {
        format!("{h}h{m:02}m")
    } else if m > 0 {
        format!("{m}m{s:02}s")
    } else {
        format!("{s}s")
    }
}

/// An enum value's proto name as a lower-case word without its prefix
/// (`JOB_STATE_RUNNING` → `running`); `unknown` for a number the enum lacks.
pub fn word(name: Option<&str>, prefix: &str) -> String {
    name.map_or_else(
        || "unknown".to_owned(),
        |n| n.trim_start_matches(prefix).to_lowercase(),
    )
}

/// The state as a word (`running`, `completed_with_failures`).
pub fn state(j: &pb::Job) -> String {
    let name = pb::JobState::try_from(j.state)
        .ok()
        .map(|s| s.as_str_name());
    word(name, "JOB_STATE_")
}

/// The kind as a word (`migrate`, `verify`).
pub fn kind(j: &pb::Job) -> String {
    let name = pb::JobKind::try_from(j.kind).ok().map(|k| k.as_str_name());
    word(name, "JOB_KIND_")
}

/// A timestamp in RFC 3339 (UTC, milliseconds), as the audit trail writes times.
pub fn time(t: &pbjson_types::Timestamp) -> String {
    dualseal::api::convert::timestamp_ms(t).map_or_else(|| "?".to_owned(), dualseal::audit::rfc3339)
}

/// Objects the job will move (listed, minus what stays in place).
pub fn to_move(j: &pb::Job) -> u64 {
    j.discovered_objects.saturating_sub(j.unclassified_objects)
}

/// `123.4 obj/s, 1.2 MiB/s, ETA 3m05s`, or empty when idle.
pub fn speed(j: &pb::Job) -> String {
    if j.objects_per_second <= 0.0 {
        return String::new();
    }
    let eta = j.eta.as_ref().map_or_else(String::new, |e| {
        format!(", ETA {}", duration(u64::try_from(e.seconds).unwrap_or(0)))
    });
    format!(
        "{:.1} obj/s, {}/s{eta}",
        j.objects_per_second,
        bytes(j.bytes_per_second as u64)
    )
}

/// Every job, one row each.
pub fn table(jobs: &[pb::Job]) -> String {
    let mut out = format!(
        "{:>4}  {:<8} {:<23} {:>4} {:<20} {:>9} {:>9} {:>7} {:>10}  {}\n",
        "JOB", "KIND", "STATE", "PRIO", "PREFIX", "VERIFIED", "OF", "FAILED", "BYTES", "SPEED"
    );
    for j in jobs {
        let prefix = if j.prefix.is_empty() {
            "(all)"
        } else {
            &j.prefix
        };
        let of = if j.listing_complete {
            to_move(j).to_string()
        } else {
            format!("{}+", to_move(j))
        };
        out.push_str(&format!(
            "{:>4}  {:<8} {:<23} {:>4} {:<20} {:>9} {:>9} {:>7} {:>10}  {}\n",
            j.job_id,
            kind(j),
            state(j),
            j.options.as_ref().map_or(0, |o| o.priority),
            truncate(prefix, 20),
            j.verified_objects,
            of,
            j.failed_objects,
            bytes(j.verified_bytes),
            speed(j)
        ));
    }
    out
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_owned()
    } else {
        let mut t: String = s.chars().take(n - 1).collect();
        t.push('…');
        t
    }
}

/// One job in detail.
pub fn detail(j: &pb::Job) -> String {
    let mut out = format!(
        "job {}  {} ({})  s3://{}/{}  listed {}{}\n",
        j.job_id,
        state(j),
        kind(j),
        j.source_bucket,
        j.prefix,
        j.discovered_objects,
        if j.listing_complete {
            ""
        } else {
            "+ (listing)"
        }
    );
    out.push_str(&format!(
        "  verified {} ({})  in progress {}  failed {}  unclassified {}  conflicts {}  excluded {}\n",
        j.verified_objects,
        bytes(j.verified_bytes),
        j.pending_objects,
        j.failed_objects,
        j.unclassified_objects,
        j.conflict_objects,
        j.excluded_objects
    ));
    out.push_str(&categories(j));
    let sp = speed(j);
    if !sp.is_empty() {
        out.push_str(&format!("  speed {sp}\n"));
    }
    if let Some(l) = &j.limits {
        let rate = |v: u64, unit: &str| {
            if v == 0 {
                "unlimited".to_owned()
            } else {
                format!("{v}{unit}")
            }
        };
        out.push_str(&format!(
            "  limits: concurrency {}{}, objects {}, bytes {}, KMS {}\n",
            l.concurrency,
            if j.current_concurrency > 0 {
                format!(
                    " (now {}{})",
                    j.current_concurrency,
                    if j.throttled {
                        ", throttled by S3/KMS"
                    } else {
                        ""
                    }
                )
            } else {
                String::new()
            },
            rate(u64::from(l.objects_per_second), "/s"),
            if l.bytes_per_second == 0 {
                "unlimited".into()
            } else {
                format!("{}/s", bytes(l.bytes_per_second))
            },
            rate(u64::from(l.kms_requests_per_second), " req/s"),
        ));
    }
    for e in &j.recent_errors {
        out.push_str(&format!(
            "  error {} {}: {}\n",
            e.time.as_ref().map_or_else(String::new, time),
            e.source_key,
            e.message
        ));
    }
    if !j.message.is_empty() {
        out.push_str(&format!("  note: {}\n", j.message));
    }
    if !j.note.is_empty() {
        out.push_str(&format!("  {}\n", j.note));
    }
    out
}

/// Per-category counts, one row each.
pub fn categories(j: &pb::Job) -> String {
    if j.categories.is_empty() {
        return String::new();
    }
    let mut out = format!(
        "  {:<16} {:>9} {:>9} {:>7} {:>9} {:>11}\n",
        "CATEGORY", "VERIFIED", "OF", "FAILED", "CONFLICT", "BYTES"
    );
    for c in &j.categories {
        out.push_str(&format!(
            "  {:<16} {:>9} {:>9} {:>7} {:>9} {:>11}\n",
            truncate(&c.category, 16),
            c.verified_objects,
            c.objects,
            c.failed_objects,
            c.conflict_objects,
            bytes(c.verified_bytes)
        ));
    }
    out
}

/// A provisioning plan or apply.
pub fn provision(r: &pb::ProvisionResponse, applied: bool) -> String {
    let mut out = String::new();
    let row = |c: &pb::ProvisionChange| {
        format!(
            "  {:<7} {:<28} {:<20} {} -> {}{}\n",
            c.action,
            c.resource,
            c.setting,
            c.live,
            c.desired,
            if c.weakens {
                "  [weaker than required]"
            } else {
                ""
            }
        )
    };
    if applied {
        out.push_str(&format!("applied {} change(s)\n", r.applied.len()));
        r.applied.iter().for_each(|c| out.push_str(&row(c)));
    }
    if r.changes.is_empty() {
        out.push_str("keys, buckets and policies match the config\n");
    } else {
        out.push_str(&format!(
            "{} difference(s){}\n",
            r.changes.len(),
            if applied {
                " remain"
            } else {
                "; `dualsealctl provision --apply` fixes them"
            }
        ));
        r.changes.iter().for_each(|c| out.push_str(&row(c)));
    }
    for n in &r.notes {
        out.push_str(&format!("  note: {n}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(3 * 1024 * 1024 / 2), "1.5 MiB");
        assert_eq!(duration(42), "42s");
        assert_eq!(duration(185), "3m05s");
        assert_eq!(duration(3720), "1h02m");
    }
}
