//! Where a migration's keys come from: the source bucket's listing (ListObjectsV2), or an S3
//! Inventory report of it (`StartJob` with an inventory manifest). Both give pages and a
//! continuation token that the journal stores with each recorded page, so a resume continues
//! after the last page recorded.

use super::error::EngineError;
use super::retry::JOB_CALL_ATTEMPTS;
use super::Inner;
use crate::inventory::{self, Manifest, Position, Rows};
use crate::store::ListPage;

/// Objects per page read from an inventory: the same as a ListObjectsV2 page.
const PAGE: usize = 1000;

/// A job's source of keys.
pub(super) enum Lister {
    /// ListObjectsV2 over the source bucket.
    Bucket {
        /// Source bucket.
        bucket: String,
        /// Key prefix.
        prefix: String,
    },
    /// An S3 Inventory report.
    Inventory(Box<InventoryLister>),
}

impl Lister {
    /// The lister of a job: its inventory when it names one, else the bucket.
    ///
    /// # Errors
    /// As [`InventoryLister::open`].
    pub async fn for_job(
        inner: &Inner,
        bucket: &str,
        prefix: &str,
        inventory: Option<&str>,
    ) -> Result<Self, EngineError> {
        Ok(match inventory {
            Some(url) => Self::Inventory(Box::new(
                InventoryLister::open(inner, url, bucket, prefix).await?,
            )),
            None => Self::Bucket {
                bucket: bucket.to_owned(),
                prefix: prefix.to_owned(),
            },
        })
    }

    /// The page after `token` (`None`: the first).
    ///
    /// # Errors
    /// `Store` after retries; `Inventory` for a damaged inventory.
    pub async fn page(
        &mut self,
        inner: &Inner,
        token: Option<String>,
    ) -> Result<ListPage, EngineError> {
        match self {
            Self::Bucket { bucket, prefix } => {
                inner
                    .retry
                    .list_page(&*inner.store, "list source", bucket, prefix, token)
                    .await
            }
            Self::Inventory(inv) => inv.page(inner, token.as_deref()).await,
        }
    }
}

/// Reads an inventory report page by page, one data file open at a time.
pub(super) struct InventoryLister {
    manifest: Manifest,
    /// Bucket holding the data files.
    files_bucket: String,
    prefix: String,
    open: Option<(usize, Rows)>,
}

fn parse_url(url: &str) -> Option<(&str, &str)> {
    url.strip_prefix("s3://")?
        .split_once('/')
        .filter(|(b, k)| !b.is_empty() && !k.is_empty())
}

impl InventoryLister {
    /// Reads and checks the manifest at `url` (`s3://bucket/key/manifest.json`): it must be
    /// a CSV inventory of `source_bucket`.
    ///
    /// # Errors
    /// `InvalidRequest` for a malformed URL, an unsupported or foreign manifest; `Store`.
    pub async fn open(
        inner: &Inner,
        url: &str,
        source_bucket: &str,
        prefix: &str,
    ) -> Result<Self, EngineError> {
        let (bucket, key) = parse_url(url)
            .filter(|(b, k)| {
                b.len() <= crate::store::MAX_BUCKET_BYTES && k.len() <= crate::store::MAX_KEY_BYTES
            })
            .ok_or_else(|| {
                EngineError::InvalidRequest(format!(
                    "inventory {:?}: give the manifest as s3://BUCKET/KEY/manifest.json (a bucket name of at most {} bytes, a key of at most {} bytes)",
                    url.chars().take(200).collect::<String>(),
                    crate::store::MAX_BUCKET_BYTES,
                    crate::store::MAX_KEY_BYTES
                ))
            })?;
        let body = inner
            .retry
            .run("read inventory manifest", JOB_CALL_ATTEMPTS, || async {
                Ok::<_, EngineError>(inner.store.get(bucket, key).await?)
            })
            .await?;
        let manifest = inventory::parse_manifest(&body.body, url)
            .map_err(|e| EngineError::InvalidRequest(e.to_string()))?;
        if manifest.source_bucket != source_bucket {
            return Err(EngineError::InvalidRequest(format!(
                "inventory {url} describes bucket {:?}, but the source is {source_bucket:?}; use an inventory of the source bucket",
                manifest.source_bucket
            )));
        }
        let files_bucket = if manifest.destination_bucket.is_empty() {
            bucket.to_owned()
        } else {
            manifest.destination_bucket.clone()
        };
        Ok(Self {
            manifest,
            files_bucket,
            prefix: prefix.to_owned(),
            open: None,
        })
    }

    async fn page(&mut self, inner: &Inner, token: Option<&str>) -> Result<ListPage, EngineError> {
        let at = match token {
            None => Position::default(),
            Some(t) => Position::from_token(t).ok_or_else(|| {
                EngineError::FailedPrecondition(format!(
                    "the job's listing stopped at {t:?}, which is not a position in an inventory"
                ))
            })?,
        };
        let Some(file) = self.manifest.files.get(at.file).cloned() else {
            return Ok(ListPage::default());
        };
        let reusable =
            matches!(&self.open, Some((i, rows)) if *i == at.file && rows.position() == at.row);
        if !reusable {
            let mut got = inner
                .retry
                .run("read inventory file", JOB_CALL_ATTEMPTS, || async {
                    Ok::<_, EngineError>(inner.store.get(&self.files_bucket, &file.key).await?)
                })
                .await?;
            let bytes = std::mem::take(&mut *got.body);
            let mut rows = Rows::open(bytes, &file, self.manifest.columns)?;
            rows.skip(at.row)?;
            self.open = Some((at.file, rows));
        }
        let Some((_, rows)) = self.open.as_mut() else {
            return Ok(ListPage::default());
        };
        let mut objects = Vec::with_capacity(PAGE);
        let mut ended = false;
        while objects.len() < PAGE {
            match rows.next_row()? {
                None => {
                    ended = true;
                    break;
                }
                Some(Some(o)) if o.key.starts_with(&self.prefix) => objects.push(o),
                Some(_) => {}
            }
        }
        let next = if ended {
            self.open = None;
            (at.file + 1 < self.manifest.files.len()).then(|| {
                Position {
                    file: at.file + 1,
                    row: 0,
                }
                .token()
            })
        } else {
            Some(
                Position {
                    file: at.file,
                    row: rows.position(),
                }
                .token(),
            )
        };
        Ok(ListPage {
            objects,
            next_token: next,
        })
    }
}
