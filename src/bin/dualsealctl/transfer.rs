//! Commands that move documents out of the daemon: the key mapping applications switch with,
//! and `get` (one object, fetched and opened client-side).

use std::io::Write;
use std::process::ExitCode;

use anyhow::{Context, Result};
use dualseal::api::client::Client;
use dualseal::api::pb;
use futures::StreamExt;

use crate::MapFormat;

pub(super) fn write_documents(
    dir: &std::path::Path,
    r: &pb::ProvisionResponse,
    terraform: bool,
) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    for d in &r.documents {
        let path = dir.join(format!("{}.json", d.name));
        std::fs::write(&path, &d.json)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if terraform {
        let path = dir.join("dualseal-iam.tf.json");
        std::fs::write(&path, &r.terraform_json)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    eprintln!(
        "{} document(s) written to {}",
        r.documents.len(),
        dir.display()
    );
    Ok(())
}

/// An environment variable name for a source key: `db/payments/x.json` ->
/// `DUALSEAL_DB_PAYMENTS_X_JSON`.
pub(super) fn env_name(key: &str) -> String {
    let mut out = String::from("DUALSEAL_");
    for ch in key.chars() {
        out.push(if ch.is_ascii_alphanumeric() {
            ch.to_ascii_uppercase()
        } else {
            '_'
        });
    }
    out
}

/// Where an export goes: the file given (created or truncated), else standard output.
pub(super) fn open_output(output: Option<&std::path::Path>) -> Result<Box<dyn Write>> {
    Ok(match output {
        Some(p) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("cannot create {}", p.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    })
}

pub(super) async fn mapping(
    c: &mut Client,
    job: u64,
    format: MapFormat,
    output: Option<&std::path::Path>,
) -> Result<ExitCode> {
    let mut out: Box<dyn Write> = open_output(output)?;
    let mut s = Box::pin(c.mapping(job).await?);
    let mut n = 0u64;
    if let MapFormat::Csv = format {
        let mut w = csv::Writer::from_writer(out);
        w.write_record([
            "source_bucket",
            "source_key",
            "source_version",
            "destination_bucket",
            "destination_key",
            "category",
            "kms_key_arn",
            "envelope_version",
        ])?;
        while let Some(m) = s.next().await {
            let m = m?;
            n += 1;
            w.write_record([
                m.source_bucket.as_str(),
                &m.source_key,
                &m.source_version,
                &m.destination_bucket,
                &m.destination_key,
                &m.category,
                &m.kms_key_arn,
                &m.envelope_version.to_string(),
            ])?;
        }
        w.flush()?;
    } else {
        let mut names = std::collections::HashMap::<String, String>::new();
        while let Some(m) = s.next().await {
            let m = m?;
            n += 1;
            if let MapFormat::Env = format {
                let name = env_name(&m.source_key);
                if let Some(other) = names.insert(name.clone(), m.source_key.clone()) {
                    anyhow::bail!(
                        "{other:?} and {:?} both map to {name}; use --format json or csv",
                        m.source_key
                    );
                }
                writeln!(
                    out,
                    "{name}=s3://{}/{}",
                    m.destination_bucket, m.destination_key
                )?;
            } else {
                writeln!(out, "{}", serde_json::to_value(&m)?)?;
            }
        }
        out.flush()?;
    }
    if output.is_some() {
        eprintln!("{n} object(s) in the map of job {job}");
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) async fn get(
    url: &str,
    output: Option<&std::path::Path>,
    cfg: dualseal::config::AwsConfig,
    expect: Option<dualseal::reader::Expectation>,
) -> Result<ExitCode> {
    if expect.is_none() {
        eprintln!("warning: no --expect-category/--expect-kms-key given: the KMS keys of both layers and the category were NOT checked against what this location should hold (only that it is DSSE-KMS and an envelope sealed for this location); `dualsealctl mapping` names both");
    }
    let expect = expect.as_ref();
    let (bucket, key) = url
        .strip_prefix("s3://")
        .and_then(|r| r.split_once('/'))
        .filter(|(b, k)| !b.is_empty() && !k.is_empty())
        .context("give the object as s3://BUCKET/KEY")?;
    let (s3_sdk, kms_sdk) = dualseal::aws::service_configs(&cfg).await;
    let store = dualseal::store::S3Store::new(&s3_sdk, cfg.path_style());
    let keys = dualseal::kms::AwsKms::new(&kms_sdk);
    match output {
        Some(path) => {
            use std::os::unix::fs::OpenOptionsExt;
            let f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .with_context(|| {
                    format!("cannot create {} (it must not exist yet)", path.display())
                })?;
            let mut w = std::io::BufWriter::with_capacity(1 << 20, f);
            match dualseal::reader::read_into(&store, &keys, bucket, key, expect, &mut w).await {
                Ok(n) => eprintln!("{n} bytes written to {}", path.display()),
                Err(e) => {
                    // Never leave part of a secret behind under the name the caller asked for.
                    drop(w);
                    let removed = std::fs::remove_file(path);
                    return Err(anyhow::Error::new(e).context(match removed {
                        Ok(()) => format!("{} was not written", path.display()),
                        Err(_) => format!("{} is incomplete: delete it", path.display()),
                    }));
                }
            }
        }
        None => {
            let stdout = std::io::stdout();
            let mut w = Counting {
                inner: std::io::BufWriter::with_capacity(1 << 20, stdout.lock()),
                written: 0,
            };
            if let Err(e) =
                dualseal::reader::read_into(&store, &keys, bucket, key, expect, &mut w).await
            {
                let what = if w.written == 0 {
                    "nothing was written".to_owned()
                } else {
                    format!(
                        "the output is incomplete: {} authenticated byte(s) were written before the failure; discard them",
                        w.written
                    )
                };
                return Err(anyhow::Error::new(e).context(what));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A writer that counts what it was given, so that a failure can say whether any output left.
struct Counting<W> {
    inner: W,
    written: u64,
}

impl<W: std::io::Write> std::io::Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}
