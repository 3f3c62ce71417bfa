//! IAM policy documents as typed values: key policies, bucket policies and the identity
//! policies of the daemon and each category's readers. Generated from the config, never from
//! string templates; serialized as IAM JSON. Pure.
//!
//! The model (docs/iam.md explains it): the daemon's role writes, each category's readers
//! read, and KMS lets either use a category key only with an encryption context naming that
//! category, so a key can never open another category's secrets even if a policy is wrong.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The encryption-context key every dualseal envelope and DSSE object carries.
pub const CONTEXT_CATEGORY: &str = "kms:EncryptionContext:dualseal:category";

/// One value or several, as IAM writes them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    /// A single value.
    One(String),
    /// Several values.
    Many(Vec<String>),
}

impl OneOrMany {
    fn of(mut v: Vec<String>) -> Self {
        v.sort();
        v.dedup();
        if v.len() == 1 {
            Self::One(v.remove(0))
        } else {
            Self::Many(v)
        }
    }

    /// Every value.
    pub fn values(&self) -> Vec<&str> {
        match self {
            Self::One(s) => vec![s.as_str()],
            Self::Many(v) => v.iter().map(String::as_str).collect(),
        }
    }
}

/// `Principal`: `"*"` or `{"AWS": ...}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Principal {
    /// Anyone (used only in Deny statements).
    Anyone(String),
    /// IAM principals.
    Aws {
        /// ARNs.
        #[serde(rename = "AWS")]
        aws: OneOrMany,
    },
}

/// One statement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Statement {
    /// Names the statement; diffs compare statements by it.
    pub sid: String,
    /// `Allow` or `Deny`.
    pub effect: String,
    /// Who (resource policies only).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub principal: Option<Principal>,
    /// What.
    pub action: OneOrMany,
    /// On what.
    pub resource: OneOrMany,
    /// When: operator → key → values.
    #[serde(skip_serializing_if = "BTreeMap::is_empty", default)]
    pub condition: BTreeMap<String, BTreeMap<String, OneOrMany>>,
}

/// A policy document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PolicyDocument {
    /// Always `2012-10-17`.
    pub version: String,
    /// Statements, in a stable order.
    pub statement: Vec<Statement>,
}

impl PolicyDocument {
    fn new(statement: Vec<Statement>) -> Self {
        Self {
            version: "2012-10-17".into(),
            statement,
        }
    }

    /// Pretty IAM JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Every principal ARN named anywhere in the document.
    pub fn principals(&self) -> Vec<&str> {
        let mut out = Vec::new();
        for s in &self.statement {
            if let Some(Principal::Aws { aws }) = &s.principal {
                out.extend(aws.values());
            }
            for m in s.condition.values() {
                for (k, v) in m {
                    if k == "aws:PrincipalArn" {
                        out.extend(v.values());
                    }
                }
            }
        }
        out
    }
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

fn cond(op: &str, key: &str, values: Vec<String>) -> BTreeMap<String, BTreeMap<String, OneOrMany>> {
    let mut inner = BTreeMap::new();
    inner.insert(key.to_owned(), OneOrMany::of(values));
    let mut outer = BTreeMap::new();
    outer.insert(op.to_owned(), inner);
    outer
}

fn allow(sid: &str, who: Option<Vec<String>>, action: &[&str], resource: Vec<String>) -> Statement {
    Statement {
        sid: sid.into(),
        effect: "Allow".into(),
        principal: who.map(|w| Principal::Aws {
            aws: OneOrMany::of(w),
        }),
        action: OneOrMany::of(strings(action)),
        resource: OneOrMany::of(resource),
        condition: BTreeMap::new(),
    }
}

/// Everything the generators need about one category.
#[derive(Debug, Clone)]
pub struct CategoryIam {
    /// Category name (the encryption-context value).
    pub name: String,
    /// Destination bucket.
    pub bucket: String,
    /// KMS key ARN (or a placeholder until the key exists).
    pub key_arn: String,
    /// Principals that may read the category's secrets.
    pub readers: Vec<String>,
}

/// The principals and partition shared by all documents.
#[derive(Debug, Clone)]
pub struct Principals {
    /// The daemon's role (the only writer).
    pub writer: String,
    /// Who administers keys (never uses them).
    pub key_admins: Vec<String>,
    /// `aws`, `aws-cn`, `aws-us-gov`.
    pub partition: String,
}

/// Key administration without any cryptographic use: admins can manage, not decrypt.
const KEY_ADMIN_ACTIONS: &[&str] = &[
    "kms:CancelKeyDeletion",
    "kms:CreateAlias",
    "kms:DeleteAlias",
    "kms:DescribeKey",
    "kms:DisableKey",
    "kms:EnableKey",
    "kms:GetKeyPolicy",
    "kms:GetKeyRotationStatus",
    "kms:ListAliases",
    "kms:ListResourceTags",
    "kms:PutKeyPolicy",
    "kms:ScheduleKeyDeletion",
    "kms:TagResource",
    "kms:UntagResource",
    "kms:UpdateAlias",
    "kms:UpdateKeyDescription",
];

/// The key policy of one category's key.
pub fn key_policy(c: &CategoryIam, p: &Principals) -> PolicyDocument {
    let ctx = |v: &str| cond("StringEquals", CONTEXT_CATEGORY, vec![v.to_owned()]);
    let mut writer = allow(
        "DaemonSealsThisCategoryOnly",
        Some(vec![p.writer.clone()]),
        &["kms:GenerateDataKey", "kms:Decrypt"],
        vec!["*".into()],
    );
    writer.condition = ctx(&c.name);
    let mut statements = vec![
        allow(
            "KeyAdministrationWithoutUse",
            Some(p.key_admins.clone()),
            KEY_ADMIN_ACTIONS,
            vec!["*".into()],
        ),
        allow(
            "DaemonDescribesKey",
            Some(vec![p.writer.clone()]),
            &["kms:DescribeKey"],
            vec!["*".into()],
        ),
        writer,
    ];
    if !c.readers.is_empty() {
        let mut readers = allow(
            "ReadersOpenThisCategoryOnly",
            Some(c.readers.clone()),
            &["kms:Decrypt"],
            vec!["*".into()],
        );
        readers.condition = ctx(&c.name);
        statements.push(readers);
    }
    PolicyDocument::new(statements)
}

/// The bucket policy of one category's bucket.
pub fn bucket_policy(c: &CategoryIam, p: &Principals) -> PolicyDocument {
    let bucket = format!("arn:{}:s3:::{}", p.partition, c.bucket);
    let objects = format!("{bucket}/*");
    let deny = |sid: &str, action: &[&str], resource: Vec<String>, condition| Statement {
        sid: sid.into(),
        effect: "Deny".into(),
        principal: Some(Principal::Anyone("*".into())),
        action: OneOrMany::of(strings(action)),
        resource: OneOrMany::of(resource),
        condition,
    };
    // Key administrators manage keys, not secrets: they are not among these.
    let mut allowed: Vec<String> = c.readers.clone();
    allowed.push(p.writer.clone());
    let mut statements = vec![
        deny(
            "DenyInsecureTransport",
            &["s3:*"],
            vec![bucket.clone(), objects.clone()],
            cond("Bool", "aws:SecureTransport", vec!["false".into()]),
        ),
        // `IfExists`: a multipart upload names its encryption in CreateMultipartUpload only;
        // its UploadPart requests (also `s3:PutObject`) carry no SSE header and a plain
        // `StringNotEquals` would deny them. A write without the header gets the bucket's
        // default encryption, DSSE-KMS under this same key.
        deny(
            "DenyWritesNotDsseKms",
            &["s3:PutObject"],
            vec![objects.clone()],
            cond(
                "StringNotEqualsIfExists",
                "s3:x-amz-server-side-encryption",
                vec!["aws:kms:dsse".into()],
            ),
        ),
        deny(
            "DenyWritesUnderAnotherKey",
            &["s3:PutObject"],
            vec![objects.clone()],
            cond(
                "StringNotEqualsIfExists",
                "s3:x-amz-server-side-encryption-aws-kms-key-id",
                vec![c.key_arn.clone()],
            ),
        ),
        deny(
            "DenyObjectAccessToOthers",
            &[
                "s3:GetObject",
                "s3:GetObjectVersion",
                "s3:PutObject",
                "s3:DeleteObject",
                "s3:DeleteObjectVersion",
            ],
            vec![objects.clone()],
            cond("StringNotEquals", "aws:PrincipalArn", allowed),
        ),
        allow(
            "DaemonWrites",
            Some(vec![p.writer.clone()]),
            &[
                "s3:PutObject",
                "s3:GetObject",
                "s3:GetObjectVersion",
                "s3:AbortMultipartUpload",
            ],
            vec![objects.clone()],
        ),
        allow(
            "DaemonLists",
            Some(vec![p.writer.clone()]),
            &["s3:ListBucket"],
            vec![bucket],
        ),
    ];
    if !c.readers.is_empty() {
        statements.push(allow(
            "ReadersRead",
            Some(c.readers.clone()),
            &["s3:GetObject", "s3:GetObjectVersion"],
            vec![objects],
        ));
    }
    PolicyDocument::new(statements)
}

/// The identity policy for one category's reader roles.
pub fn reader_policy(c: &CategoryIam, p: &Principals) -> PolicyDocument {
    let mut decrypt = allow(
        "OpenThisCategory",
        None,
        &["kms:Decrypt"],
        vec![c.key_arn.clone()],
    );
    decrypt.condition = cond("StringEquals", CONTEXT_CATEGORY, vec![c.name.clone()]);
    PolicyDocument::new(vec![
        allow(
            "ReadThisCategory",
            None,
            &["s3:GetObject", "s3:GetObjectVersion"],
            vec![format!("arn:{}:s3:::{}/*", p.partition, c.bucket)],
        ),
        decrypt,
    ])
}

/// The identity policy for the daemon's role.
pub fn daemon_policy(source_bucket: &str, cats: &[CategoryIam], p: &Principals) -> PolicyDocument {
    let src = format!("arn:{}:s3:::{source_bucket}", p.partition);
    let buckets: Vec<String> = cats
        .iter()
        .map(|c| format!("arn:{}:s3:::{}", p.partition, c.bucket))
        .collect();
    let objects: Vec<String> = buckets.iter().map(|b| format!("{b}/*")).collect();
    let keys: Vec<String> = cats.iter().map(|c| c.key_arn.clone()).collect();
    let mut statements = vec![
        allow(
            "ReadSource",
            None,
            &["s3:GetObject", "s3:GetObjectVersion"],
            vec![format!("{src}/*")],
        ),
        allow("ListSource", None, &["s3:ListBucket"], vec![src.clone()]),
        allow(
            "WriteAndProveDestinations",
            None,
            &[
                "s3:PutObject",
                "s3:GetObject",
                "s3:GetObjectVersion",
                "s3:AbortMultipartUpload",
            ],
            objects,
        ),
        allow(
            "ListDestinations",
            None,
            &["s3:ListBucket"],
            buckets.clone(),
        ),
        allow("DescribeCategoryKeys", None, &["kms:DescribeKey"], keys),
    ];
    // One statement per category: a key may only be used with its own category's context.
    for c in cats {
        let mut s = allow(
            &format!("SealCategory{}", sid_part(&c.name)),
            None,
            &["kms:GenerateDataKey", "kms:Decrypt"],
            vec![c.key_arn.clone()],
        );
        s.condition = cond("StringEquals", CONTEXT_CATEGORY, vec![c.name.clone()]);
        statements.push(s);
    }
    // Only ever exercised by a decommission the operator asked for (issue 7).
    statements.push(allow(
        "DecommissionSourceOnly",
        None,
        &[
            "s3:DeleteObject",
            "s3:DeleteObjectVersion",
            "s3:PutBucketPolicy",
            "s3:GetBucketPolicy",
        ],
        vec![src.clone(), format!("{src}/*")],
    ));
    PolicyDocument::new(statements)
}

/// A statement id may hold only letters and digits.
fn sid_part(name: &str) -> String {
    name.split(['-', '_'])
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_uppercase().chain(c).collect::<String>())
                .unwrap_or_default()
        })
        .collect()
}

/// The identity policies as a Terraform JSON module (`aws_iam_policy` resources).
pub fn terraform(docs: &[(String, PolicyDocument)]) -> String {
    let mut policies = serde_json::Map::new();
    for (name, doc) in docs {
        let id = name.replace('-', "_");
        policies.insert(
            id,
            serde_json::json!({
                "name": name,
                "description": format!("dualseal: {name}"),
                "policy": serde_json::to_string(doc).unwrap_or_default(),
            }),
        );
    }
    serde_json::to_string_pretty(&serde_json::json!({
        "resource": { "aws_iam_policy": policies }
    }))
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cat(name: &str, reader: &str) -> CategoryIam {
        CategoryIam {
            name: name.into(),
            bucket: format!("secrets-{name}"),
            key_arn: format!("arn:aws:kms:us-east-1:111122223333:key/{name}"),
            readers: vec![reader.into()],
        }
    }

    fn principals() -> Principals {
        Principals {
            writer: "arn:aws:iam::111122223333:role/dualseald".into(),
            key_admins: vec!["arn:aws:iam::111122223333:role/kms-admin".into()],
            partition: "aws".into(),
        }
    }

    #[test]
    fn documents_are_iam_json_with_context_conditions() {
        let p = principals();
        let db = cat("db", "arn:aws:iam::111122223333:role/payments");
        let key: serde_json::Value = serde_json::from_str(&key_policy(&db, &p).to_json()).unwrap();
        assert_eq!(key["Version"], "2012-10-17");
        let use_stmt = key["Statement"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["Sid"] == "ReadersOpenThisCategoryOnly")
            .unwrap();
        assert_eq!(
            use_stmt["Condition"]["StringEquals"][CONTEXT_CATEGORY],
            "db"
        );
        assert_eq!(use_stmt["Action"], "kms:Decrypt");
        let bucket: serde_json::Value =
            serde_json::from_str(&bucket_policy(&db, &p).to_json()).unwrap();
        let sids: Vec<&str> = bucket["Statement"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["Sid"].as_str().unwrap())
            .collect();
        for s in [
            "DenyInsecureTransport",
            "DenyWritesNotDsseKms",
            "DenyWritesUnderAnotherKey",
        ] {
            assert!(sids.contains(&s), "{sids:?}");
        }
        // Key admins manage keys but cannot use them.
        let admin = &key_policy(&db, &p).statement[0];
        assert!(admin
            .action
            .values()
            .iter()
            .all(|a| !a.contains("Decrypt") && !a.contains("Generate")));
    }

    #[test]
    fn no_category_names_another_categorys_readers() {
        let p = principals();
        let a = cat("db", "arn:aws:iam::111122223333:role/payments");
        let b = cat("api", "arn:aws:iam::111122223333:role/gateway");
        for doc in [
            key_policy(&b, &p),
            bucket_policy(&b, &p),
            reader_policy(&b, &p),
        ] {
            assert!(!doc.principals().contains(&a.readers[0].as_str()));
            assert!(!doc.to_json().contains(&a.key_arn));
        }
        let daemon = daemon_policy("master", &[a, b], &p);
        let seal: Vec<_> = daemon
            .statement
            .iter()
            .filter(|s| s.sid.starts_with("SealCategory"))
            .collect();
        assert_eq!(seal.len(), 2, "one context-bound statement per category");
        assert!(seal.iter().all(|s| s.resource.values().len() == 1));
    }

    #[test]
    fn terraform_module_embeds_the_documents() {
        let p = principals();
        let t = terraform(&[(
            "dualseal-reader-db".into(),
            reader_policy(&cat("db", "x"), &p),
        )]);
        let v: serde_json::Value = serde_json::from_str(&t).unwrap();
        let policy = v["resource"]["aws_iam_policy"]["dualseal_reader_db"]["policy"]
            .as_str()
            .unwrap();
        let doc: PolicyDocument = serde_json::from_str(policy).unwrap();
        assert_eq!(doc, reader_policy(&cat("db", "x"), &p));
        assert_eq!(sid_part("team-a_b"), "TeamAB");
    }
}
