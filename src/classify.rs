//! Category rules: which category a source key belongs to and what its destination key is.
//! Pure logic; the plan, the engine and config validation all ask the same [`Classifier`].

use globset::{GlobBuilder, GlobMatcher};
use serde::Deserialize;

use std::collections::HashMap;

use crate::content::{ContentKind, Verdict};

/// How a destination key is formed from the source key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DestKeyMode {
    /// The destination key is the source key.
    #[default]
    Same,
    /// When a prefix rule matched, the destination key is the source key without that prefix
    /// (glob matches keep the whole key).
    StripPrefix,
}

/// What the classifier needs of one category: its name and its match rules.
#[derive(Debug, Clone, Copy)]
pub struct Rules<'a> {
    /// Category name.
    pub name: &'a str,
    /// Key prefixes that belong to the category.
    pub prefixes: &'a [String],
    /// Glob patterns that belong to the category.
    pub globs: &'a [String],
    /// How the destination key is formed.
    pub dest_key: DestKeyMode,
    /// Content kinds the category claims.
    pub contents: &'a [ContentKind],
}

/// The verdict for one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Classification {
    /// Exactly one category matched.
    Matched {
        /// Index into the configured categories.
        category: usize,
        /// Key to write in the category's bucket.
        dest_key: String,
        /// The rule that matched, for reports and the audit trail (`prefix "db/"`).
        rule: String,
    },
    /// No category matched (or the match cannot be used, with the reason).
    Unclassified {
        /// Why a matching rule could not be used, if one matched.
        reason: Option<String>,
    },
    /// More than one category matched; names of all of them, in config order.
    Conflict(Vec<String>),
}

#[derive(Debug)]
enum Rule {
    Prefix(String),
    Glob(GlobMatcher),
}

impl Rule {
    /// The text every key this rule matches begins with.
    fn literal_prefix(&self) -> &str {
        match self {
            Self::Prefix(p) => p,
            Self::Glob(g) => {
                let glob = g.glob().glob();
                // globset's special characters; a backslash escapes, so it ends the literal
                // text too (conservatively: the prefix only gets shorter).
                let end = glob.find(['*', '?', '[', '{', '\\']).unwrap_or(glob.len());
                &glob[..end]
            }
        }
    }
}

#[derive(Debug)]
struct CategoryRules {
    name: String,
    rules: Vec<Rule>,
    mode: DestKeyMode,
}

/// Compiled match rules for every category.
#[derive(Debug)]
pub struct Classifier {
    categories: Vec<CategoryRules>,
    /// Content kind → the category that claims it.
    content: HashMap<ContentKind, usize>,
}

/// A content verdict with the category that claims its kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentMatch {
    /// Index into the configured categories.
    pub category: usize,
    /// What the object is, and why.
    pub verdict: Verdict,
}

impl Classifier {
    /// Compiles the rules of `categories`.
    ///
    /// # Errors
    /// One message per glob that does not compile.
    pub fn new<'a>(categories: impl IntoIterator<Item = Rules<'a>>) -> Result<Self, Vec<String>> {
        let mut errs = Vec::new();
        let mut out = Vec::new();
        let mut content = HashMap::new();
        for (i, c) in categories.into_iter().enumerate() {
            for kind in c.contents {
                content.entry(*kind).or_insert(i);
            }
            let mut rules: Vec<Rule> = c.prefixes.iter().cloned().map(Rule::Prefix).collect();
            for g in c.globs {
                // `*` stays within one path segment, `**` crosses them, as in .gitignore.
                match GlobBuilder::new(g).literal_separator(true).build() {
                    Ok(glob) => rules.push(Rule::Glob(glob.compile_matcher())),
                    Err(e) => {
                        errs.push(format!("category {:?}: glob {g:?} is invalid: {e}", c.name))
                    }
                }
            }
            out.push(CategoryRules {
                name: c.name.to_owned(),
                rules,
                mode: c.dest_key,
            });
        }
        if errs.is_empty() {
            Ok(Self {
                categories: out,
                content,
            })
        } else {
            Err(errs)
        }
    }

    /// Classifies one source key.
    pub fn classify(&self, key: &str) -> Classification {
        let mut hits: Vec<(usize, (Option<&str>, &Rule))> = Vec::new();
        for (i, c) in self.categories.iter().enumerate() {
            // Within a category the first matching rule wins (it decides what is stripped).
            let hit = c.rules.iter().find_map(|r| match r {
                Rule::Prefix(p) => key.starts_with(p.as_str()).then_some((Some(p.as_str()), r)),
                Rule::Glob(g) => g.is_match(key).then_some((None, r)),
            });
            if let Some(prefix) = hit {
                hits.push((i, prefix));
            }
        }
        match hits.as_slice() {
            [] => Classification::Unclassified { reason: None },
            [(i, (prefix, rule))] => {
                let c = &self.categories[*i];
                let dest_key = match (c.mode, prefix) {
                    (DestKeyMode::StripPrefix, Some(p)) => &key[p.len()..],
                    _ => key,
                };
                if dest_key.is_empty() {
                    return Classification::Unclassified {
                        reason: Some(format!(
                            "key equals the prefix of category {:?}, so stripping it leaves an empty key",
                            c.name
                        )),
                    };
                }
                Classification::Matched {
                    category: *i,
                    dest_key: dest_key.to_owned(),
                    rule: match rule {
                        Rule::Prefix(p) => format!("prefix {p:?}"),
                        Rule::Glob(g) => format!("glob {:?}", g.glob().glob()),
                    },
                }
            }
            many => Classification::Conflict(
                many.iter()
                    .map(|(i, _)| self.categories[*i].name.clone())
                    .collect(),
            ),
        }
    }

    /// Whether the rules alone show that no key can match two categories, so a listing would
    /// find no conflict. A rule only matches keys that begin with its literal prefix: a
    /// prefix rule's prefix, a glob's text before its first special character. Two categories
    /// are apart when no literal prefix of one begins with a literal prefix of the other.
    /// `false` means only that it takes a listing to know (a glob such as `**/*.pem` can
    /// match anywhere).
    pub fn categories_are_disjoint(&self) -> bool {
        let literal: Vec<Vec<&str>> = self
            .categories
            .iter()
            .map(|c| c.rules.iter().map(Rule::literal_prefix).collect())
            .collect();
        literal.iter().enumerate().all(|(i, mine)| {
            literal[i + 1..].iter().all(|theirs| {
                mine.iter().all(|a| {
                    theirs
                        .iter()
                        .all(|b| !a.starts_with(b) && !b.starts_with(a))
                })
            })
        })
    }

    /// Whether any category claims content kinds.
    pub fn has_content_rules(&self) -> bool {
        !self.content.is_empty()
    }

    /// What `bytes` (an object's first bytes) is, when a category claims that kind.
    pub fn classify_content(&self, bytes: &[u8]) -> Option<ContentMatch> {
        if self.content.is_empty() {
            return None;
        }
        let verdict = crate::content::inspect(bytes)?;
        let category = *self.content.get(&verdict.kind)?;
        Some(ContentMatch { category, verdict })
    }

    /// What `bytes` is, whether or not a category claims the kind.
    pub fn inspect(&self, bytes: &[u8]) -> (Option<Verdict>, Option<usize>) {
        match crate::content::inspect(bytes) {
            Some(v) => {
                let owner = self.content.get(&v.kind).copied();
                (Some(v), owner)
            }
            None => (None, None),
        }
    }

    /// Name of category `i`.
    pub fn name(&self, i: usize) -> &str {
        self.categories.get(i).map_or("", |c| c.name.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::CategoryConfig;

    fn compile(categories: &[CategoryConfig]) -> Result<Classifier, Vec<String>> {
        Classifier::new(categories.iter().map(CategoryConfig::rules))
    }

    fn cat(name: &str, prefixes: &[&str], globs: &[&str], mode: DestKeyMode) -> CategoryConfig {
        CategoryConfig {
            name: name.into(),
            bucket: format!("secrets-{name}"),
            kms_key: Some("alias/k".into()),
            readers: Vec::new(),
            prefixes: prefixes.iter().map(|s| s.to_string()).collect(),
            globs: globs.iter().map(|s| s.to_string()).collect(),
            dest_key: mode,
            contents: Vec::new(),
        }
    }

    fn classifier() -> Classifier {
        compile(&[
            cat("db", &["db/"], &[], DestKeyMode::StripPrefix),
            cat("tls", &["tls/"], &["**/*.pem"], DestKeyMode::StripPrefix),
            cat("api", &["api/"], &["*.token"], DestKeyMode::Same),
        ])
        .unwrap()
    }

    #[test]
    fn disjoint_categories_are_proved_from_their_literal_prefixes() {
        let disjoint =
            |cats: &[CategoryConfig]| compile(cats).expect("compiles").categories_are_disjoint();
        let same = DestKeyMode::Same;
        assert!(disjoint(&[
            cat("db", &["db/"], &["db/**/*.json"], same),
            cat("tls", &["tls/", "certs/"], &["pki/*/key.pem"], same),
            cat("api", &["api/"], &["tokens/{a,b}/*"], same),
        ]));
        // One category's rules may overlap each other: the first matching rule wins.
        assert!(disjoint(&[
            cat("db", &["db/", "db/prod/"], &[], same),
            cat("api", &["api/"], &[], same)
        ]));
        // A key can match both when one literal prefix begins the other.
        for (a, b) in [
            (
                cat("db", &["db/"], &[], same),
                cat("prod", &["db/prod/"], &[], same),
            ),
            (cat("db", &["db/"], &[], same), cat("all", &[""], &[], same)),
            (
                cat("db", &["db/"], &[], same),
                cat("pem", &[], &["**/*.pem"], same),
            ),
            (
                cat("db", &["db/"], &[], same),
                cat("d", &[], &["d*/x"], same),
            ),
            (
                cat("db", &["db/"], &[], same),
                cat("e", &[], &["db\\*"], same),
            ),
        ] {
            assert!(!disjoint(&[a.clone(), b.clone()]), "{a:?} {b:?}");
            assert!(!disjoint(&[b, a]));
        }
        // What the listing would find agrees: a key both match is a conflict.
        let overlapping = compile(&[
            cat("db", &["db/"], &[], same),
            cat("d", &[], &["d*/x"], same),
        ])
        .expect("compiles");
        assert!(matches!(
            overlapping.classify("db/x"),
            Classification::Conflict(_)
        ));
    }

    #[test]
    fn content_is_matched_to_the_category_that_claims_it() {
        let mut tls = cat("tls", &["tls/"], &[], DestKeyMode::Same);
        tls.contents = vec![ContentKind::PemPrivateKey, ContentKind::Certificate];
        let mut db = cat("db", &["db/"], &[], DestKeyMode::Same);
        db.contents = vec![ContentKind::DatabaseUrl];
        let c = compile(&[db, tls]).unwrap();
        assert!(c.has_content_rules());
        let m = c
            .classify_content(b"-----BEGIN EC PRIVATE KEY-----\nMHc\n")
            .unwrap();
        assert_eq!(
            (c.name(m.category), m.verdict.kind),
            ("tls", ContentKind::PemPrivateKey)
        );
        assert_eq!(
            c.classify_content(b"mysql://root:pw@10.0.0.1/app")
                .map(|m| m.category),
            Some(0)
        );
        // A token is recognised, but no category claims tokens: no content match.
        assert_eq!(
            c.classify_content(b"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b"),
            None
        );
        assert_eq!(
            c.inspect(b"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b")
                .0
                .map(|v| v.kind),
            Some(ContentKind::HighEntropyToken)
        );
        assert!(!classifier().has_content_rules());
    }

    #[test]
    fn prefix_match_strips_only_in_strip_mode() {
        let c = classifier();
        assert_eq!(
            c.classify("db/payments/a.json"),
            Classification::Matched {
                category: 0,
                dest_key: "payments/a.json".into(),
                rule: r#"prefix "db/""#.into(),
            }
        );
        assert_eq!(
            c.classify("api/x"),
            Classification::Matched {
                category: 2,
                dest_key: "api/x".into(),
                rule: r#"prefix "api/""#.into(),
            }
        );
    }

    #[test]
    fn glob_match_keeps_the_whole_key() {
        let c = classifier();
        assert_eq!(
            c.classify("misc/deep/server.pem"),
            Classification::Matched {
                category: 1,
                dest_key: "misc/deep/server.pem".into(),
                rule: r#"glob "**/*.pem""#.into(),
            }
        );
        // `*` does not cross '/'.
        assert_eq!(
            c.classify("x/y.token"),
            Classification::Unclassified { reason: None }
        );
        assert!(matches!(
            c.classify("y.token"),
            Classification::Matched { category: 2, .. }
        ));
    }

    #[test]
    fn two_categories_are_a_conflict_naming_both() {
        let c = classifier();
        assert_eq!(
            c.classify("db/server.pem"),
            Classification::Conflict(vec!["db".into(), "tls".into()])
        );
    }

    #[test]
    fn unmatched_and_degenerate_keys_are_unclassified() {
        let c = classifier();
        assert_eq!(
            c.classify("other/x"),
            Classification::Unclassified { reason: None }
        );
        assert!(matches!(
            c.classify("db/"),
            Classification::Unclassified { reason: Some(r) } if r.contains("empty key")
        ));
    }

    #[test]
    fn unicode_and_spaces_survive() {
        let c = classifier();
        assert_eq!(
            c.classify("db/équipe paie/clé secrète.json"),
            Classification::Matched {
                category: 0,
                dest_key: "équipe paie/clé secrète.json".into(),
                rule: r#"prefix "db/""#.into(),
            }
        );
    }

    #[test]
    fn bad_glob_is_reported_with_its_category() {
        let errs = compile(&[cat("x", &[], &["a[b"], DestKeyMode::Same)]).unwrap_err();
        assert!(
            errs[0].contains("\"x\"") && errs[0].contains("a[b"),
            "{errs:?}"
        );
    }
}
