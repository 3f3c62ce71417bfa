//! What one job covers: include/exclude globs over source keys and a set of categories, on top
//! of its prefix. Pure logic, checked when the job is started and applied as it lists.

use std::collections::BTreeSet;

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

use crate::model::JobOptions;

/// A job's compiled filters.
#[derive(Debug)]
pub struct Scope {
    include: Option<GlobSet>,
    exclude: GlobSet,
    only: BTreeSet<String>,
    shard: Option<crate::shard::Shard>,
}

fn globs(patterns: &[String], what: &str, problems: &mut Vec<String>) -> GlobSet {
    let mut b = GlobSetBuilder::new();
    for p in patterns {
        // Same syntax as the category globs: `*` stays within one path segment.
        match GlobBuilder::new(p).literal_separator(true).build() {
            Ok(g) => {
                b.add(g);
            }
            Err(e) => problems.push(format!("{what} glob {p:?} is not valid: {e}")),
        }
    }
    b.build().unwrap_or_else(|e| {
        problems.push(format!("{what} globs do not compile: {e}"));
        GlobSet::empty()
    })
}

impl Scope {
    /// Compiles a job's filters against the configured category names.
    ///
    /// # Errors
    /// Every problem found (bad glob, unknown category, threshold out of range), in words.
    pub fn new(options: &JobOptions, categories: &[&str]) -> Result<Self, Vec<String>> {
        let mut problems = Vec::new();
        let include = (!options.include.is_empty())
            .then(|| globs(&options.include, "include", &mut problems));
        let exclude = globs(&options.exclude, "exclude", &mut problems);
        for c in &options.only_categories {
            if !categories.contains(&c.as_str()) {
                problems.push(format!(
                    "category {c:?} is not configured (configured: {})",
                    categories.join(", ")
                ));
            }
        }
        if let Some(t) = options.failure_threshold {
            if !(1..=100).contains(&t.percent) {
                problems.push(format!(
                    "failure threshold {}% is out of range; give 1 to 100",
                    t.percent
                ));
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Self {
            include,
            exclude,
            only: options.only_categories.iter().cloned().collect(),
            shard: None,
        })
    }

    /// The same scope, limited to this daemon's shard of the bucket.
    pub fn in_shard(mut self, shard: Option<crate::shard::Shard>) -> Self {
        self.shard = shard;
        self
    }

    /// Whether this daemon's shard takes a source key (other shards' keys are neither
    /// migrated nor reported here).
    pub fn owns(&self, key: &str) -> bool {
        self.shard.is_none_or(|s| s.owns(key))
    }

    /// Whether the job takes a source key, before classification.
    pub fn admits_key(&self, key: &str) -> bool {
        self.include.as_ref().is_none_or(|g| g.is_match(key)) && !self.exclude.is_match(key)
    }

    /// Whether the job takes an object of `category` (`None`: unclassified or conflicting,
    /// which a job limited to some categories leaves to others to report).
    pub fn admits_category(&self, category: Option<&str>) -> bool {
        match category {
            _ if self.only.is_empty() => true,
            Some(c) => self.only.contains(c),
            None => false,
        }
    }

    /// Whether two jobs may pick up the same objects: their category sets intersect (their
    /// prefixes are compared by the caller; globs are not, so this errs towards "yes").
    pub fn categories_overlap(&self, other: &Scope) -> bool {
        self.only.is_empty() || other.only.is_empty() || !self.only.is_disjoint(&other.only)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::FailureThreshold;

    fn scope(include: &[&str], exclude: &[&str], only: &[&str]) -> Scope {
        let o = JobOptions {
            include: include.iter().map(|s| s.to_string()).collect(),
            exclude: exclude.iter().map(|s| s.to_string()).collect(),
            only_categories: only.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        Scope::new(&o, &["db", "api"]).unwrap()
    }

    #[test]
    fn include_then_exclude() {
        let s = scope(&["db/**"], &["db/tmp/*"], &[]);
        assert!(s.admits_key("db/prod/a.json"));
        assert!(!s.admits_key("db/tmp/x"));
        assert!(!s.admits_key("api/k"));
        let all = scope(&[], &["*.bak"], &[]);
        assert!(all.admits_key("api/k"));
        assert!(!all.admits_key("x.bak"));
        assert!(all.admits_key("dir/x.bak"), "`*` stays within one segment");
    }

    #[test]
    fn only_categories() {
        let s = scope(&[], &[], &["db"]);
        assert!(s.admits_category(Some("db")));
        assert!(!s.admits_category(Some("api")));
        assert!(!s.admits_category(None));
        assert!(scope(&[], &[], &[]).admits_category(None));
        assert!(!s.categories_overlap(&scope(&[], &[], &["api"])));
        assert!(s.categories_overlap(&scope(&[], &[], &[])));
    }

    #[test]
    fn every_problem_is_named() {
        let o = JobOptions {
            include: vec!["a[".into()],
            only_categories: vec!["nope".into()],
            failure_threshold: Some(FailureThreshold {
                percent: 0,
                min_objects: 10,
            }),
            ..Default::default()
        };
        let errs = Scope::new(&o, &["db"]).unwrap_err();
        assert_eq!(errs.len(), 3, "{errs:?}");
        assert!(errs[1].contains("\"nope\"") && errs[1].contains("db"));
    }
}
