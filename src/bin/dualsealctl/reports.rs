//! Printing what the daemon reports: plans, content findings, job reports and verification
//! reports, as text or JSON.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Result;
use dualseal::api::client::Client;
use dualseal::api::pb;
use futures::StreamExt;

use crate::{object_json, object_state, transfer::open_output, view, Format};

pub(super) fn print_plan(p: &pb::PlanResponse, prefix: &str, json: bool) -> Result<ExitCode> {
    if json {
        println!("{}", serde_json::to_value(p)?);
    } else {
        println!(
            "plan for s3://{}/{}: {} objects, {}",
            p.source_bucket,
            prefix,
            p.total_objects,
            view::bytes(p.total_bytes)
        );
        for cat in &p.categories {
            println!(
                "  {:<16} -> {:<28} {:>8} objects {:>12}",
                cat.category,
                cat.destination_bucket,
                cat.objects,
                view::bytes(cat.bytes)
            );
            let mut rules: Vec<_> = cat.objects_by_rule.iter().collect();
            rules.sort();
            for (rule, n) in rules {
                println!("      {n:>8} by {rule}");
            }
            for l in &cat.largest {
                println!("      largest {} ({})", l.key, view::bytes(l.bytes));
            }
        }
        if let Some(e) = &p.estimate {
            println!(
                "  estimate: {} GET, {} PUT, {} LIST/HEAD; KMS {} by dualseal + {} by S3 for DSSE; {:.3} GB under DSSE; about ${:.2} at list prices",
                e.s3_gets, e.s3_puts, e.s3_lists_and_heads, e.kms_dualseal_requests, e.kms_dsse_requests, e.dsse_gb, e.cost_usd
            );
            println!(
                "  time: {}",
                e.eta.as_ref().map_or_else(
                    || e.basis.clone(),
                    |d| format!(
                        "at least {} ({})",
                        view::duration(u64::try_from(d.seconds).unwrap_or(0)),
                        e.basis
                    )
                )
            );
        }
        println!(
            "  unclassified (stay in place): {} objects, {}",
            p.unclassified_objects,
            view::bytes(p.unclassified_bytes)
        );
        for k in &p.unclassified_sample {
            println!("    {k}");
        }
        println!(
            "  conflicts (match several categories): {}",
            p.conflict_objects
        );
        for k in &p.conflicts_sample {
            println!("    {} -> {}", k.key, k.categories.join(", "));
        }
        if let Some(c) = &p.content {
            print_content(c);
        }
    }
    let disagree = p
        .content
        .as_ref()
        .is_some_and(|c| c.disagreement_objects > 0);
    Ok(if p.conflict_objects > 0 {
        ExitCode::from(3)
    } else if disagree {
        ExitCode::from(4)
    } else {
        ExitCode::SUCCESS
    })
}

pub(super) fn print_content(c: &pb::ContentReport) {
    let mut kinds: Vec<String> = c
        .objects_by_kind
        .iter()
        .map(|(k, n)| format!("{k} {n}"))
        .collect();
    kinds.sort();
    println!(
        "  content of {} object(s): {}; {} agree with the key rules, {} disagree, {} of a kind no category claims, {} not recognised, {} unreadable",
        c.inspected_objects,
        if kinds.is_empty() { "nothing recognised".to_owned() } else { kinds.join(", ") },
        c.agreement_objects,
        c.disagreement_objects,
        c.unclaimed_objects,
        c.unrecognised_objects,
        c.unreadable_objects
    );
    if !c.first_error.is_empty() {
        println!("    first read error: {}", c.first_error);
    }
    if c.disagreement_objects > 0 {
        println!("  disagreements (a migration leaves these in the source until the rules agree):");
        for v in &c.disagreements_sample {
            println!(
                "    {}: key rules say {}; content is {} ({}), claimed by {}",
                v.key, v.key_rules, v.kind, v.why, v.content_category
            );
        }
    }
    println!("  verdicts:");
    for v in &c.verdicts_sample {
        println!(
            "    {} {}: {} ({}); key rules: {}{}",
            if v.agrees {
                "ok "
            } else if v.content_category.is_empty() {
                " - "
            } else {
                "!! "
            },
            v.key,
            v.kind,
            v.why,
            v.key_rules,
            if v.content_category.is_empty() {
                String::new()
            } else {
                format!("; content category: {}", v.content_category)
            }
        );
    }
}

/// Streams a job's completion report: every object with its outcome.
pub(super) async fn report(
    c: &mut Client,
    job: u64,
    format: Format,
    output: Option<&std::path::Path>,
) -> Result<ExitCode> {
    let out: Box<dyn Write> = open_output(output)?;
    let mut s = Box::pin(c.objects_stream(job, pb::ObjectState::Unspecified).await?);
    let mut n = 0u64;
    match format {
        Format::Csv => {
            let mut w = csv::Writer::from_writer(out);
            w.write_record([
                "source_bucket",
                "source_key",
                "source_version",
                "category",
                "destination_bucket",
                "destination_key",
                "status",
                "size",
                "attempts",
                "error_code",
                "message",
            ])?;
            let bucket = c.job(job).await?.source_bucket;
            while let Some(o) = s.next().await {
                let o = o?;
                n += 1;
                w.write_record([
                    bucket.as_str(),
                    &o.source_key,
                    &o.source_version,
                    &o.category,
                    &o.destination_bucket,
                    &o.destination_key,
                    &object_state(o.state).to_ascii_lowercase(),
                    &o.size_bytes.to_string(),
                    &o.attempts.to_string(),
                    &o.error_code,
                    &o.reason,
                ])?;
            }
            w.flush()?;
        }
        Format::Jsonl => {
            let mut out = out;
            while let Some(o) = s.next().await {
                let o = o?;
                n += 1;
                writeln!(out, "{}", object_json(&o))?;
            }
            out.flush()?;
        }
    }
    if output.is_some() {
        eprintln!("{n} object(s) in the report of job {job}");
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn print_verify_report(r: &pb::VerifyReport, json: bool) -> Result<ExitCode> {
    if json {
        let mut v = serde_json::to_value(r)?;
        v["mismatches"] = r.mismatches.iter().map(object_json).collect();
        println!("{v}");
    } else {
        println!(
            "verification job {}: checked {}, ok {}, problems {}",
            r.job_id,
            r.checked_objects,
            r.ok_objects,
            r.checked_objects - r.ok_objects
        );
        for cat in &r.categories {
            let mut findings: Vec<_> = cat.objects_by_finding.iter().collect();
            findings.sort();
            let f: Vec<String> = findings.iter().map(|(k, n)| format!("{k}={n}")).collect();
            println!(
                "  {:<16} checked {:>8} ok {:>8}  {}",
                cat.category,
                cat.checked_objects,
                cat.ok_objects,
                f.join(" ")
            );
        }
        for m in &r.mismatches {
            println!("  {}: {}", m.source_key, m.reason);
        }
    }
    Ok(if r.ok_objects == r.checked_objects {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}
