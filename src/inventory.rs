//! S3 Inventory as a listing source: the `manifest.json` and gzip-compressed CSV files S3
//! writes daily or weekly, read instead of ListObjectsV2 for buckets with hundreds of
//! millions of keys (a listing at 1,000 keys per request is days of requests there). Pure:
//! parsing and checking only; the engine fetches the files.
//!
//! The format is AWS's (`fileFormat` CSV; ORC and Parquet are refused with a message):
//! the manifest names the source bucket, the column schema and every data file with its MD5;
//! each CSV row is one object version, keys URL-encoded. Only current versions that are not
//! delete markers are listed.

use md5::{Digest, Md5};
use serde::Deserialize;

use crate::store::ListedObject;

/// What is wrong with an inventory. Messages name the file and what to do; they never carry
/// object contents (an inventory holds names, sizes and ETags only).
#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    /// The manifest is not an S3 Inventory manifest.
    #[error("inventory manifest {location}: {why}")]
    Manifest {
        /// Where it was read.
        location: String,
        /// What is wrong.
        why: String,
    },
    /// A data file does not match the manifest's checksum: damaged or replaced.
    #[error("inventory file {file}: MD5 {found} differs from the manifest's {expected}; the inventory is damaged or was rewritten — use the manifest of a complete delivery")]
    Checksum {
        /// Data file key.
        file: String,
        /// From the manifest.
        expected: String,
        /// Of the bytes read.
        found: String,
    },
    /// A data file cannot be read.
    #[error("inventory file {file}, row {row}: {why}")]
    Row {
        /// Data file key.
        file: String,
        /// 1-based data row.
        row: u64,
        /// What is wrong.
        why: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawManifest {
    source_bucket: String,
    #[serde(default)]
    destination_bucket: String,
    file_format: String,
    file_schema: String,
    files: Vec<RawFile>,
}

#[derive(Debug, Deserialize)]
struct RawFile {
    key: String,
    #[serde(default)]
    size: u64,
    #[serde(rename = "MD5checksum")]
    md5: String,
}

/// A parsed manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// The bucket the inventory describes.
    pub source_bucket: String,
    /// The bucket holding the data files (from the manifest's ARN; empty: the manifest's own).
    pub destination_bucket: String,
    /// Column positions.
    pub columns: Columns,
    /// The data files, in manifest order.
    pub files: Vec<DataFile>,
}

/// One data file of an inventory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataFile {
    /// Its key in the destination bucket.
    pub key: String,
    /// Compressed size in bytes.
    pub size: u64,
    /// Hex MD5 of the compressed file.
    pub md5: String,
}

/// Where the fields dualseal needs sit in a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Columns {
    key: usize,
    size: Option<usize>,
    etag: Option<usize>,
    is_latest: Option<usize>,
    is_delete_marker: Option<usize>,
}

/// Parses a `manifest.json` read from `location` (for messages).
///
/// # Errors
/// `Manifest` naming the problem: not JSON, not CSV, no `Key` column, no files.
pub fn parse_manifest(bytes: &[u8], location: &str) -> Result<Manifest, InventoryError> {
    let bad = |why: String| InventoryError::Manifest {
        location: location.to_owned(),
        why,
    };
    let raw: RawManifest = serde_json::from_slice(bytes)
        .map_err(|e| bad(format!("not an S3 Inventory manifest.json ({e})")))?;
    if !raw.file_format.eq_ignore_ascii_case("CSV") {
        return Err(bad(format!(
            "fileFormat {:?} is not supported; configure the inventory with format CSV",
            raw.file_format
        )));
    }
    let names: Vec<String> = raw
        .file_schema
        .split(',')
        .map(|c| c.trim().to_owned())
        .collect();
    let at = |name: &str| names.iter().position(|c| c.eq_ignore_ascii_case(name));
    let key = at("Key").ok_or_else(|| bad("the fileSchema has no Key column".into()))?;
    if raw.files.is_empty() {
        return Err(bad("it lists no data files".into()));
    }
    let destination_bucket = raw
        .destination_bucket
        .rsplit(":::")
        .next()
        .unwrap_or_default()
        .to_owned();
    Ok(Manifest {
        source_bucket: raw.source_bucket,
        destination_bucket,
        columns: Columns {
            key,
            size: at("Size"),
            etag: at("ETag"),
            is_latest: at("IsLatest"),
            is_delete_marker: at("IsDeleteMarker"),
        },
        files: raw
            .files
            .into_iter()
            .map(|f| DataFile {
                key: f.key,
                size: f.size,
                md5: f.md5.to_ascii_lowercase(),
            })
            .collect(),
    })
}

/// The rows of one data file, as listed objects, after its MD5 has been checked.
pub struct Rows {
    reader: csv::Reader<flate2::read::MultiGzDecoder<std::io::Cursor<Vec<u8>>>>,
    columns: Columns,
    file: String,
    row: u64,
    record: csv::StringRecord,
}

impl std::fmt::Debug for Rows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rows")
            .field("file", &self.file)
            .field("row", &self.row)
            .finish_non_exhaustive()
    }
}

impl Rows {
    /// Opens `bytes`, the compressed data file `file` of `manifest`.
    ///
    /// # Errors
    /// `Checksum` when the bytes are not the file the manifest describes.
    pub fn open(bytes: Vec<u8>, file: &DataFile, columns: Columns) -> Result<Self, InventoryError> {
        let found = hex::encode(Md5::digest(&bytes));
        if found != file.md5 {
            return Err(InventoryError::Checksum {
                file: file.key.clone(),
                expected: file.md5.clone(),
                found,
            });
        }
        let gz = flate2::read::MultiGzDecoder::new(std::io::Cursor::new(bytes));
        Ok(Self {
            reader: csv::ReaderBuilder::new()
                .has_headers(false)
                .flexible(true)
                .from_reader(gz),
            columns,
            file: file.key.clone(),
            row: 0,
            record: csv::StringRecord::new(),
        })
    }

    /// Data rows consumed so far (listed or skipped): the resume point within the file.
    pub fn position(&self) -> u64 {
        self.row
    }

    /// The next row: `Some(Some(object))` for a current version, `Some(None)` for a row that
    /// lists nothing to migrate (an older version or a delete marker), `None` at the end.
    ///
    /// # Errors
    /// `Row` for a damaged file or a row without the schema's columns.
    pub fn next_row(&mut self) -> Result<Option<Option<ListedObject>>, InventoryError> {
        let more = self
            .reader
            .read_record(&mut self.record)
            .map_err(|e| self.err(self.row + 1, e.to_string()))?;
        if !more {
            return Ok(None);
        }
        self.row += 1;
        let field = |i: Option<usize>| i.and_then(|i| self.record.get(i));
        let flag = |i| field(i).is_some_and(|v| v.eq_ignore_ascii_case("true"));
        if field(self.columns.is_latest).is_some_and(|v| v.eq_ignore_ascii_case("false"))
            || flag(self.columns.is_delete_marker)
        {
            return Ok(Some(None));
        }
        let raw_key = field(Some(self.columns.key))
            .ok_or_else(|| self.err(self.row, "the row has no Key column".into()))?;
        // Inventory keys are URL-encoded (spaces as '+', as in a form).
        let key = percent_encoding::percent_decode_str(&raw_key.replace('+', " "))
            .decode_utf8()
            .map_err(|_| self.err(self.row, "the key is not URL-encoded UTF-8".into()))?
            .into_owned();
        let size = match field(self.columns.size) {
            None | Some("") => 0,
            Some(s) => s
                .parse()
                .map_err(|_| self.err(self.row, format!("size {s:?} is not a number")))?,
        };
        let etag = field(self.columns.etag)
            .filter(|e| !e.is_empty())
            .map(|e| format!("\"{}\"", e.trim_matches('"')))
            .unwrap_or_default();
        Ok(Some(Some(ListedObject { key, size, etag })))
    }

    /// Skips `n` data rows (a resume within the file).
    ///
    /// # Errors
    /// As [`next_row`](Self::next_row).
    pub fn skip(&mut self, n: u64) -> Result<(), InventoryError> {
        while self.row < n {
            if self.next_row()?.is_none() {
                break;
            }
        }
        Ok(())
    }

    fn err(&self, row: u64, why: String) -> InventoryError {
        InventoryError::Row {
            file: self.file.clone(),
            row,
            why,
        }
    }
}

/// Where a listing from an inventory stands: data file and rows consumed in it. Stored as
/// the job's continuation token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Position {
    /// Index of the data file in the manifest.
    pub file: usize,
    /// Data rows of it already listed.
    pub row: u64,
}

impl Position {
    const PREFIX: &'static str = "inventory:";

    /// As a continuation token.
    pub fn token(self) -> String {
        format!("{}{}:{}", Self::PREFIX, self.file, self.row)
    }

    /// From a continuation token (`None` for anything else).
    pub fn from_token(token: &str) -> Option<Self> {
        let (file, row) = token.strip_prefix(Self::PREFIX)?.split_once(':')?;
        Some(Self {
            file: file.parse().ok()?,
            row: row.parse().ok()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const SCHEMA: &str =
        "Bucket, Key, VersionId, IsLatest, IsDeleteMarker, Size, LastModifiedDate, ETag";

    fn manifest(files: &[(&str, &[u8])]) -> Vec<u8> {
        let files: Vec<_> = files
            .iter()
            .map(|(k, b)| {
                serde_json::json!({"key": k, "size": b.len(), "MD5checksum": hex::encode(Md5::digest(b))})
            })
            .collect();
        serde_json::to_vec(&serde_json::json!({
            "sourceBucket": "master-secrets",
            "destinationBucket": "arn:aws:s3:::inventories",
            "version": "2016-11-30",
            "creationTimestamp": "1514944800000",
            "fileFormat": "CSV",
            "fileSchema": SCHEMA,
            "files": files,
        }))
        .unwrap()
    }

    fn gz(rows: &str) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(rows.as_bytes()).unwrap();
        e.finish().unwrap()
    }

    fn all(rows: &mut Rows) -> Vec<Option<ListedObject>> {
        std::iter::from_fn(|| rows.next_row().unwrap()).collect()
    }

    #[test]
    fn current_versions_are_listed_with_decoded_keys_and_quoted_etags() {
        let data = gz(concat!(
            "\"master-secrets\",\"db/a%20b+c.json\",\"v1\",\"true\",\"false\",\"12\",\"2026-01-01T00:00:00.000Z\",\"0123abcd\"\n",
            "\"master-secrets\",\"db/old.json\",\"v0\",\"false\",\"false\",\"5\",\"2026-01-01T00:00:00.000Z\",\"ffff\"\n",
            "\"master-secrets\",\"db/gone.json\",\"v2\",\"true\",\"true\",\"\",\"2026-01-01T00:00:00.000Z\",\"\"\n",
            "\"master-secrets\",\"tls/%C3%A9.pem\",\"v3\",\"true\",\"false\",\"7\",\"2026-01-01T00:00:00.000Z\",\"9a9a\"\n",
        ));
        let m = parse_manifest(
            &manifest(&[("inv/data/1.csv.gz", &data)]),
            "s3://inv/m.json",
        )
        .unwrap();
        assert_eq!(m.source_bucket, "master-secrets");
        assert_eq!(m.destination_bucket, "inventories");
        let mut rows = Rows::open(data, &m.files[0], m.columns).unwrap();
        let got = all(&mut rows);
        assert_eq!(got.len(), 4);
        assert_eq!(
            got[0],
            Some(ListedObject {
                key: "db/a b c.json".into(),
                size: 12,
                etag: "\"0123abcd\"".into()
            })
        );
        assert_eq!(got[1], None, "an older version is not listed");
        assert_eq!(got[2], None, "a delete marker is not listed");
        assert_eq!(got[3].as_ref().unwrap().key, "tls/é.pem");
        assert_eq!(rows.position(), 4);
    }

    #[test]
    fn a_damaged_file_or_an_unsupported_manifest_is_refused_clearly() {
        let data = gz("\"b\",\"k\",\"\",\"true\",\"false\",\"1\",\"\",\"e\"\n");
        let m = parse_manifest(&manifest(&[("inv/1.csv.gz", &data)]), "s3://inv/m.json").unwrap();
        let mut damaged = data.clone();
        let last = damaged.len() - 1;
        damaged[last] ^= 1;
        let e = Rows::open(damaged, &m.files[0], m.columns).unwrap_err();
        assert!(
            e.to_string().contains("inv/1.csv.gz") && e.to_string().contains("MD5"),
            "{e}"
        );

        let mut orc: serde_json::Value = serde_json::from_slice(&manifest(&[("x", b"")])).unwrap();
        orc["fileFormat"] = "ORC".into();
        let e = parse_manifest(&serde_json::to_vec(&orc).unwrap(), "s3://inv/m.json").unwrap_err();
        assert!(e.to_string().contains("format CSV"), "{e}");
        let mut keyless = orc.clone();
        keyless["fileFormat"] = "CSV".into();
        keyless["fileSchema"] = "Bucket, Size".into();
        let e =
            parse_manifest(&serde_json::to_vec(&keyless).unwrap(), "s3://inv/m.json").unwrap_err();
        assert!(e.to_string().contains("no Key column"), "{e}");
        assert!(parse_manifest(b"<html>", "s3://inv/m.json").is_err());

        let bad_size = gz("\"b\",\"k\",\"\",\"true\",\"false\",\"lots\",\"\",\"e\"\n");
        let m = parse_manifest(&manifest(&[("inv/2.csv.gz", &bad_size)]), "m").unwrap();
        let e = Rows::open(bad_size, &m.files[0], m.columns)
            .unwrap()
            .next_row()
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "inventory file inv/2.csv.gz, row 1: size \"lots\" is not a number"
        );
    }

    #[test]
    fn positions_round_trip_and_a_resume_skips_what_was_listed() {
        let p = Position { file: 3, row: 1000 };
        assert_eq!(Position::from_token(&p.token()), Some(p));
        assert_eq!(Position::from_token("opaque-s3-token"), None);
        let rows: String = (0..5)
            .map(|i| format!("\"b\",\"k{i}\",\"\",\"true\",\"false\",\"1\",\"\",\"e\"\n"))
            .collect();
        let data = gz(&rows);
        let m = parse_manifest(&manifest(&[("f", &data)]), "m").unwrap();
        let mut r = Rows::open(data, &m.files[0], m.columns).unwrap();
        r.skip(3).unwrap();
        let rest: Vec<_> = all(&mut r).into_iter().map(|o| o.unwrap().key).collect();
        assert_eq!(rest, ["k3", "k4"]);
    }
}
