//! Fills a journal with N synthetic audit events, for `scripts/bench-audit-export.sh`.
//!
//! usage: cargo run --release --example fill_audit -- JOURNAL_DIR N

use dualseal::journal::{AuditDraft, Journal};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = args
        .next()
        .ok_or_else(|| anyhow::anyhow!("usage: fill_audit JOURNAL_DIR N"))?;
    let n: u64 = args
        .next()
        .ok_or_else(|| anyhow::anyhow!("usage: fill_audit JOURNAL_DIR N"))?
        .parse()?;
    std::fs::create_dir_all(&dir)?;
    let journal = Journal::open(std::path::Path::new(&dir))?;
    for i in 0..n {
        journal.append_audit(AuditDraft {
            job_id: 1,
            kind: "object_verified",
            category: ["db", "api", "tls", "misc"][(i % 4) as usize].to_owned(),
            source_key: format!("db/team-{}/secret-{i:08}.json", i % 8),
            dest_bucket: "secrets-db".into(),
            dest_key: format!("team-{}/secret-{i:08}.json", i % 8),
            detail: format!(
                "size=812 rule=prefix \"db/\" write=written source_etag=\"{i:032x}\" ciphertext_sha256={i:064x} kms_key=arn:aws:kms:us-east-1:123456789012:key/00000000-0000-4000-8000-000000000001 sse=aws:kms:dsse envelope=v1"
            ),
            ..Default::default()
        }).await?;
    }
    journal.flush().await?;
    journal.write_high_water_mark().await?;
    println!("{n} events in {dir}");
    Ok(())
}
