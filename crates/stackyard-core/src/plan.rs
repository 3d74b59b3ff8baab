//! Deployment plans: the dependency rules, waves and roles, diffs between
//! revisions and status ids. Pure functions, no I/O.
//!
//! Validation is linear in artifacts + edges (Kahn's algorithm), and reports
//! every problem at once: each missing dependency and each cycle found.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use sha2::{Digest as _, Sha256};

use crate::key::ArtifactKey;
use crate::selector::Selector;

/// One artifact version chosen for a plan, with what its manifest needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanEntry {
    pub artifact_key: ArtifactKey,
    pub version: i64,
    pub digest: String,
    pub depends_on: Vec<ArtifactKey>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Has dependents, no dependencies.
    Root,
    /// Both.
    Stem,
    /// Dependencies, no dependents.
    Leaf,
    /// Neither.
    Standalone,
}

impl Role {
    /// As serialised: `root`, `stem`, `leaf` or `standalone`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Root => "root",
            Self::Stem => "stem",
            Self::Leaf => "leaf",
            Self::Standalone => "standalone",
        }
    }
}

/// A validated plan entry with its computed place in the graph.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct PlannedArtifact {
    pub artifact_key: String,
    pub version: i64,
    pub digest: String,
    pub wave: u32,
    pub role: Role,
    pub depends_on: Vec<String>,
    pub dependents: Vec<String>,
}

/// Why a plan is invalid. Each variant is one item of a 422's `errors`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "code", rename_all = "snake_case")]
pub enum PlanProblem {
    DuplicateArtifact {
        artifact_key: String,
    },
    MissingDependency {
        artifact_key: String,
        dependency: String,
    },
    /// `cycle` starts and ends with the same key: `[a, b, a]` means a needs b needs a.
    DependencyCycle {
        cycle: Vec<String>,
    },
}

/// Checks a plan and computes waves, roles, dependencies and dependents.
/// The result is ordered by wave, then key.
pub fn validate(entries: &[PlanEntry]) -> Result<Vec<PlannedArtifact>, Vec<PlanProblem>> {
    let mut problems = Vec::new();
    let mut index: HashMap<&str, usize> = HashMap::with_capacity(entries.len());
    for (i, entry) in entries.iter().enumerate() {
        if index.insert(entry.artifact_key.as_str(), i).is_some() {
            problems.push(PlanProblem::DuplicateArtifact { artifact_key: entry.artifact_key.to_string() });
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }

    // deps[i]: indexes i depends on; dependents[j]: indexes depending on j.
    let mut deps: Vec<Vec<usize>> = vec![Vec::new(); entries.len()];
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); entries.len()];
    for (i, entry) in entries.iter().enumerate() {
        for dependency in &entry.depends_on {
            match index.get(dependency.as_str()) {
                Some(&j) => {
                    deps[i].push(j);
                    dependents[j].push(i);
                }
                None => problems.push(PlanProblem::MissingDependency {
                    artifact_key: entry.artifact_key.to_string(),
                    dependency: dependency.to_string(),
                }),
            }
        }
    }

    // Kahn: a node's wave is settled once all its dependencies are.
    let mut waiting: Vec<usize> = deps.iter().map(Vec::len).collect();
    let mut wave = vec![0u32; entries.len()];
    let mut ready: Vec<usize> = (0..entries.len()).filter(|&i| waiting[i] == 0).collect();
    let mut settled = 0;
    while let Some(j) = ready.pop() {
        settled += 1;
        for &i in &dependents[j] {
            wave[i] = wave[i].max(wave[j] + 1);
            waiting[i] -= 1;
            if waiting[i] == 0 {
                ready.push(i);
            }
        }
    }
    if settled < entries.len() {
        problems.extend(find_cycles(entries, &deps, &waiting));
    }
    if !problems.is_empty() {
        return Err(problems);
    }

    let key = |i: usize| entries[i].artifact_key.to_string();
    let mut planned: Vec<PlannedArtifact> = entries
        .iter()
        .enumerate()
        .map(|(i, entry)| {
            let mut depends_on: Vec<String> = deps[i].iter().map(|&j| key(j)).collect();
            let mut needed_by: Vec<String> = dependents[i].iter().map(|&j| key(j)).collect();
            depends_on.sort();
            needed_by.sort();
            let role = match (depends_on.is_empty(), needed_by.is_empty()) {
                (true, false) => Role::Root,
                (false, false) => Role::Stem,
                (false, true) => Role::Leaf,
                (true, true) => Role::Standalone,
            };
            PlannedArtifact {
                artifact_key: entry.artifact_key.to_string(),
                version: entry.version,
                digest: entry.digest.clone(),
                wave: wave[i],
                role,
                depends_on,
                dependents: needed_by,
            }
        })
        .collect();
    planned.sort_by(|a, b| (a.wave, &a.artifact_key).cmp(&(b.wave, &b.artifact_key)));
    Ok(planned)
}

/// Every node Kahn could not settle waits on at least one other unsettled
/// node, so walking "first unsettled dependency" edges from any of them must
/// loop. Each walk either closes a new cycle or reaches an earlier walk's
/// nodes; every node is visited once, so this stays linear.
fn find_cycles(entries: &[PlanEntry], deps: &[Vec<usize>], waiting: &[usize]) -> Vec<PlanProblem> {
    const UNSEEN: usize = usize::MAX;
    let mut walk_of = vec![UNSEEN; entries.len()];
    let mut cycles = Vec::new();
    for start in 0..entries.len() {
        if waiting[start] == 0 || walk_of[start] != UNSEEN {
            continue;
        }
        let mut path = Vec::new();
        let mut node = start;
        while walk_of[node] == UNSEEN {
            walk_of[node] = start;
            path.push(node);
            node = *deps[node].iter().find(|&&d| waiting[d] > 0).expect("an unsettled node waits on another");
        }
        if walk_of[node] == start {
            let from = path.iter().position(|&n| n == node).expect("the node is on this walk");
            let mut cycle: Vec<String> =
                path[from..].iter().map(|&n| entries[n].artifact_key.to_string()).collect();
            cycle.push(entries[node].artifact_key.to_string());
            cycles.push(PlanProblem::DependencyCycle { cycle });
        }
    }
    cycles
}

/// What changed between two plans.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct PlanDiff {
    pub added: Vec<DiffEntry>,
    pub removed: Vec<DiffEntry>,
    pub changed: Vec<DiffChange>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct DiffEntry {
    pub artifact_key: String,
    pub version: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct DiffChange {
    pub artifact_key: String,
    pub old_version: i64,
    pub new_version: i64,
}

impl PlanDiff {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

/// The diff from `old` to `new`, each sorted by key.
pub fn diff(old: &[PlannedArtifact], new: &[PlannedArtifact]) -> PlanDiff {
    let old: BTreeMap<&str, i64> = old.iter().map(|a| (a.artifact_key.as_str(), a.version)).collect();
    let new: BTreeMap<&str, i64> = new.iter().map(|a| (a.artifact_key.as_str(), a.version)).collect();
    let mut result = PlanDiff::default();
    for (&key, &version) in &new {
        match old.get(key) {
            None => result.added.push(DiffEntry { artifact_key: key.into(), version }),
            Some(&old_version) if old_version != version => result.changed.push(DiffChange {
                artifact_key: key.into(),
                old_version,
                new_version: version,
            }),
            Some(_) => {}
        }
    }
    for (&key, &version) in &old {
        if !new.contains_key(key) {
            result.removed.push(DiffEntry { artifact_key: key.into(), version });
        }
    }
    result
}

/// The status id (and ETag) of a revision: deterministic, and unique per
/// (selector, revision) because both are hashed in.
pub fn status_id(selector: &Selector, revision: i64) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"stackyard-status-v1\0");
    hasher.update(selector.as_str().as_bytes());
    hasher.update(b"\0");
    hasher.update(revision.to_string().as_bytes());
    hex::encode(&hasher.finalize()[..16])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_names_are_their_serialised_form() {
        for role in [Role::Root, Role::Stem, Role::Leaf, Role::Standalone] {
            assert_eq!(serde_json::to_value(role).unwrap(), role.as_str());
        }
    }

    fn entry(key: &str, deps: &[&str]) -> PlanEntry {
        PlanEntry {
            artifact_key: ArtifactKey::parse(key).unwrap(),
            version: 1,
            digest: format!("sha256:{key}"),
            depends_on: deps.iter().map(|d| ArtifactKey::parse(d).unwrap()).collect(),
        }
    }

    #[test]
    fn computes_waves_roles_and_edges() {
        let plan = validate(&[
            entry("app", &["network", "database"]),
            entry("database", &["network"]),
            entry("network", &[]),
            entry("docs", &[]),
            entry("monitoring", &["app"]),
        ])
        .unwrap();
        let summary: Vec<_> = plan.iter().map(|a| (a.artifact_key.as_str(), a.wave, a.role)).collect();
        assert_eq!(
            summary,
            [
                ("docs", 0, Role::Standalone),
                ("network", 0, Role::Root),
                ("database", 1, Role::Stem),
                ("app", 2, Role::Stem),
                ("monitoring", 3, Role::Leaf),
            ]
        );
        let network = &plan[1];
        assert_eq!(network.dependents, ["app", "database"]);
        assert_eq!(plan[3].depends_on, ["database", "network"]);
    }

    #[test]
    fn reports_every_missing_dependency() {
        let problems =
            validate(&[entry("app", &["network", "database"]), entry("monitoring", &["app", "logs"])])
                .unwrap_err();
        assert_eq!(
            problems,
            [
                PlanProblem::MissingDependency { artifact_key: "app".into(), dependency: "network".into() },
                PlanProblem::MissingDependency { artifact_key: "app".into(), dependency: "database".into() },
                PlanProblem::MissingDependency {
                    artifact_key: "monitoring".into(),
                    dependency: "logs".into()
                },
            ]
        );
    }

    #[test]
    fn reports_cycles_of_every_length_with_their_path() {
        let cycle = |p: &PlanProblem| match p {
            PlanProblem::DependencyCycle { cycle } => cycle.clone(),
            other => panic!("{other:?}"),
        };
        let one = validate(&[entry("a", &["a"])]).unwrap_err();
        assert_eq!(cycle(&one[0]), ["a", "a"]);
        let two = validate(&[entry("a", &["b"]), entry("b", &["a"])]).unwrap_err();
        assert_eq!(cycle(&two[0]), ["a", "b", "a"]);
        let many = validate(&[
            entry("a", &["b"]),
            entry("b", &["c"]),
            entry("c", &["d"]),
            entry("d", &["a"]),
            entry("e", &["a"]),
        ])
        .unwrap_err();
        assert_eq!(many.len(), 1);
        assert_eq!(cycle(&many[0]), ["a", "b", "c", "d", "a"]);
        let two_cycles =
            validate(&[entry("a", &["b"]), entry("b", &["a"]), entry("c", &["d"]), entry("d", &["c"])])
                .unwrap_err();
        assert_eq!(two_cycles.len(), 2);
    }

    #[test]
    fn rejects_duplicates() {
        let problems = validate(&[entry("a", &[]), entry("a", &[])]).unwrap_err();
        assert_eq!(problems, [PlanProblem::DuplicateArtifact { artifact_key: "a".into() }]);
    }

    #[test]
    fn diffs_plans() {
        let old = validate(&[entry("a", &[]), entry("b", &[])]).unwrap();
        let mut c = entry("c", &[]);
        c.version = 1;
        let mut b = entry("b", &[]);
        b.version = 2;
        let new = validate(&[b, c]).unwrap();
        let d = diff(&old, &new);
        assert_eq!(d.added, [DiffEntry { artifact_key: "c".into(), version: 1 }]);
        assert_eq!(d.removed, [DiffEntry { artifact_key: "a".into(), version: 1 }]);
        assert_eq!(d.changed, [DiffChange { artifact_key: "b".into(), old_version: 1, new_version: 2 }]);
        assert!(diff(&new, &new).is_empty());
    }

    #[test]
    fn status_ids_are_deterministic_and_unique() {
        let s = Selector::parse("prod/eu").unwrap();
        assert_eq!(status_id(&s, 1), status_id(&s, 1));
        assert_ne!(status_id(&s, 1), status_id(&s, 2));
        assert_ne!(status_id(&s, 1), status_id(&Selector::parse("prod/us").unwrap(), 1));
        assert_eq!(status_id(&s, 1).len(), 32);
    }

    #[test]
    fn validates_ten_thousand_artifacts() {
        let keys: Vec<String> = (0..10_000).map(|i| format!("a{i}")).collect();
        let entries: Vec<PlanEntry> = (0..10_000)
            .map(|i| {
                let deps: Vec<&str> =
                    [i / 2, i / 3, i / 5].iter().filter(|&&d| d < i).map(|&d| keys[d].as_str()).collect();
                entry(&keys[i], &deps)
            })
            .collect();
        let plan = validate(&entries).unwrap();
        assert_eq!(plan.len(), 10_000);
        assert_eq!(plan[0].wave, 0);
    }
}
