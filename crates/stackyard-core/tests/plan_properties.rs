//! Random plans either validate with waves consistent with every edge, or
//! are rejected with reasons that are true of the plan.

use std::collections::{HashMap, HashSet};

use proptest::prelude::*;
use stackyard_core::ArtifactKey;
use stackyard_core::plan::{PlanEntry, PlanProblem, validate};

/// Up to 12 nodes `n0..`, each with edges to random nodes among `n0..n15`
/// (so some dependencies are missing and some edges form cycles).
fn plans() -> impl Strategy<Value = Vec<PlanEntry>> {
    prop::collection::vec(prop::collection::btree_set(0usize..16, 0..4), 0..12).prop_map(|nodes| {
        nodes
            .iter()
            .enumerate()
            .map(|(i, deps)| PlanEntry {
                artifact_key: ArtifactKey::parse(&format!("n{i}")).unwrap(),
                version: 1,
                digest: String::new(),
                depends_on: deps.iter().map(|d| ArtifactKey::parse(&format!("n{d}")).unwrap()).collect(),
            })
            .collect()
    })
}

/// An independent cycle check: depth-first search with colours.
fn has_cycle(entries: &[PlanEntry]) -> bool {
    let present: HashSet<&str> = entries.iter().map(|e| e.artifact_key.as_str()).collect();
    let graph: HashMap<&str, Vec<&str>> = entries
        .iter()
        .map(|e| {
            let deps = e.depends_on.iter().map(|d| d.as_str()).filter(|d| present.contains(d)).collect();
            (e.artifact_key.as_str(), deps)
        })
        .collect();
    fn visit<'a>(n: &'a str, g: &HashMap<&'a str, Vec<&'a str>>, colour: &mut HashMap<&'a str, u8>) -> bool {
        match colour.get(n) {
            Some(1) => return true,
            Some(2) => return false,
            _ => {}
        }
        colour.insert(n, 1);
        let found = g[n].iter().any(|d| visit(d, g, colour));
        colour.insert(n, 2);
        found
    }
    let mut colour = HashMap::new();
    entries.iter().any(|e| visit(e.artifact_key.as_str(), &graph, &mut colour))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn plans_validate_consistently_or_are_rejected_truthfully(entries in plans()) {
        let by_key: HashMap<&str, &PlanEntry> = entries.iter().map(|e| (e.artifact_key.as_str(), e)).collect();
        let missing = entries.iter().any(|e| e.depends_on.iter().any(|d| !by_key.contains_key(d.as_str())));
        match validate(&entries) {
            Ok(plan) => {
                prop_assert!(!missing && !has_cycle(&entries));
                prop_assert_eq!(plan.len(), entries.len());
                let wave: HashMap<&str, u32> = plan.iter().map(|a| (a.artifact_key.as_str(), a.wave)).collect();
                for artifact in &plan {
                    let expected = artifact.depends_on.iter().map(|d| wave[d.as_str()] + 1).max().unwrap_or(0);
                    prop_assert_eq!(artifact.wave, expected);
                    for dependent in &artifact.dependents {
                        prop_assert!(wave[dependent.as_str()] > artifact.wave);
                    }
                }
            }
            Err(problems) => {
                prop_assert!(missing || has_cycle(&entries));
                prop_assert_eq!(missing, problems.iter().any(|p| matches!(p, PlanProblem::MissingDependency { .. })));
                prop_assert_eq!(has_cycle(&entries), problems.iter().any(|p| matches!(p, PlanProblem::DependencyCycle { .. })));
                for problem in &problems {
                    match problem {
                        PlanProblem::MissingDependency { artifact_key, dependency } => {
                            prop_assert!(!by_key.contains_key(dependency.as_str()));
                            prop_assert!(by_key[artifact_key.as_str()].depends_on.iter().any(|d| d.as_str() == dependency));
                        }
                        PlanProblem::DependencyCycle { cycle } => {
                            prop_assert_eq!(cycle.first(), cycle.last());
                            for pair in cycle.windows(2) {
                                prop_assert!(by_key[pair[0].as_str()].depends_on.iter().any(|d| d.as_str() == pair[1]));
                            }
                        }
                        PlanProblem::DuplicateArtifact { .. } => prop_assert!(false, "no duplicates generated"),
                    }
                }
            }
        }
    }
}
