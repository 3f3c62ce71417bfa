//! `dualsealctl audit ...`: export, head, summary and verification of the audit trail, from the
//! daemon or from an exported file.

use std::io::Write;
use std::process::ExitCode;

use anyhow::{Context, Result};
use dualseal::api::client::Client;
use futures::StreamExt;

use crate::{transfer::open_output, view, AuditCmd, Format};

pub(super) fn parse_head(head: Option<&str>) -> Result<Option<(u64, String)>> {
    let Some(h) = head else { return Ok(None) };
    let (seq, hash) = h
        .split_once(':')
        .context("--head takes SEQ:HASH, as printed by `dualsealctl audit head`")?;
    Ok(Some((
        seq.parse().context("--head: SEQ is not a number")?,
        hash.to_owned(),
    )))
}

pub(super) fn print_chain(report: &dualseal::audit::ChainReport, json: bool) -> ExitCode {
    let (seq, hash) = report.head.clone().unwrap_or_default();
    if json {
        println!(
            "{}",
            serde_json::json!({
                "events": report.events, "intact": report.broken.is_none(),
                "problem": report.broken.as_ref().map(ToString::to_string),
                "head_seq": seq, "head_hash": hash,
            })
        );
    } else if let Some(b) = &report.broken {
        println!("audit chain BROKEN after {} event(s): {b}", report.events);
    } else {
        println!(
            "audit chain intact: {} event(s), head {seq}:{hash}",
            report.events
        );
    }
    if report.broken.is_some() {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    }
}

/// Verifies an export file (JSON Lines, or CSV with a header) without a daemon.
pub(super) fn verify_file(
    path: &std::path::Path,
    head: Option<&str>,
    json: bool,
) -> Result<ExitCode> {
    use dualseal::audit::{verify_chain, AuditEvent};
    let head = parse_head(head)?;
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let events: Vec<AuditEvent> = if text.trim_start().starts_with('{') {
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .enumerate()
            .map(|(i, l)| {
                serde_json::from_str(l).with_context(|| {
                    format!("{} line {}: not an audit event", path.display(), i + 1)
                })
            })
            .collect::<Result<_>>()?
    } else {
        csv::Reader::from_reader(text.as_bytes())
            .deserialize()
            .enumerate()
            .map(|(i, r)| {
                r.with_context(|| {
                    format!("{} record {}: not an audit event", path.display(), i + 1)
                })
            })
            .collect::<Result<_>>()?
    };
    let report = verify_chain(events, head.as_ref().map(|(s, h)| (*s, h.as_str())));
    Ok(print_chain(&report, json))
}

pub(super) async fn audit(c: &mut Client, cmd: AuditCmd, json: bool) -> Result<ExitCode> {
    match cmd {
        AuditCmd::Export {
            filter,
            format,
            output,
        } => {
            let mut stream = Box::pin(c.audit_stream(filter.into()).await?);
            let mut out: Box<dyn Write> = open_output(output.as_deref())?;
            let mut n = 0u64;
            match format {
                Format::Jsonl => {
                    // The record form (docs/audit.md): what each hash covers, so any copy of
                    // the export verifies offline.
                    while let Some(e) = stream.next().await {
                        let e = dualseal::api::convert::audit_record(e?);
                        writeln!(out, "{}", serde_json::to_string(&e)?)?;
                        n += 1;
                    }
                    out.flush()?;
                }
                Format::Csv => {
                    let mut w = csv::Writer::from_writer(out);
                    while let Some(e) = stream.next().await {
                        w.serialize(dualseal::api::convert::audit_record(e?))?;
                        n += 1;
                    }
                    w.flush()?;
                }
            }
            if let Some(p) = output {
                eprintln!("wrote {n} audit events to {}", p.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        AuditCmd::Verify { file: _, head } => {
            let expected = parse_head(head.as_deref())?;
            let r = c.verify_audit().await?;
            let mut report = dualseal::audit::ChainReport {
                events: r.events,
                head: (r.head_seq > 0).then(|| (r.head_seq, r.head_hash.clone())),
                broken: None,
            };
            let problem = if !r.intact {
                Some(r.problem.clone())
            } else {
                match expected {
                    Some((s, _)) if s > r.head_seq => Some(format!(
                        "the trail ends at event {} but the recorded head is event {s}: events were removed (truncated)",
                        r.head_seq
                    )),
                    Some((s, h)) if s == r.head_seq && h != r.head_hash => {
                        Some(format!("event {s} does not match the recorded head hash: the trail was rewritten"))
                    }
                    _ => None,
                }
            };
            if let Some(p) = problem {
                if json {
                    println!(
                        "{}",
                        serde_json::json!({"events": r.events, "intact": false, "problem": p})
                    );
                } else {
                    println!("audit chain BROKEN after {} event(s): {p}", r.events);
                }
                return Ok(ExitCode::from(2));
            }
            report.broken = None;
            Ok(print_chain(&report, json))
        }
        AuditCmd::Head => {
            let r = c.verify_audit().await?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({"head_seq": r.head_seq, "head_hash": r.head_hash, "intact": r.intact})
                );
            } else {
                println!("{}:{}", r.head_seq, r.head_hash);
            }
            Ok(if r.intact {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            })
        }
        AuditCmd::Summary { filter } => {
            use std::collections::BTreeMap;
            let mut stream = Box::pin(c.audit_stream(filter.into()).await?);
            let mut by: BTreeMap<&str, BTreeMap<String, u64>> = BTreeMap::new();
            let mut total = 0u64;
            while let Some(e) = stream.next().await {
                let e = e?;
                total += 1;
                let day = e
                    .time
                    .as_ref()
                    .map(view::time)
                    .and_then(|t| t.get(..10).map(str::to_owned))
                    .unwrap_or_default();
                for (dim, v) in [
                    ("kind", e.kind),
                    ("outcome", e.outcome),
                    ("category", e.category),
                    ("day", day),
                ] {
                    if !v.is_empty() {
                        *by.entry(dim).or_default().entry(v).or_default() += 1;
                    }
                }
            }
            if json {
                println!("{}", serde_json::json!({"events": total, "by": by}));
            } else {
                println!("{total} event(s)");
                for (dim, counts) in &by {
                    println!("by {dim}:");
                    for (k, n) in counts {
                        println!("  {k:<28} {n:>10}");
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
