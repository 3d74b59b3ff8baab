//! What each fuzz target in `fuzz/` does with its input, here so that the
//! test suite replays the fuzz corpus on stable Rust (`tests/fuzz_corpus.rs`)
//! and the targets stay one line each. Every function must never panic, and
//! checks the properties its parser promises beyond "no crash".

use std::collections::BTreeSet;
use std::io::Cursor;

use crate::manifest::ManifestSyntax;
use crate::plan::{self, PlanEntry, PlanProblem};
use crate::{ArtifactKey, Digest, Manifest, Organization, PackageLimits, Selector, VersionRef, package};

/// A manifest in either syntax: when accepted, its key and dependencies
/// are valid keys, the key is derived from the stack name, and the
/// dependencies are unique. (A stack may name itself: the plan check
/// reports that as a cycle, where the user sees it.)
pub fn manifest(data: &[u8]) {
    for syntax in [ManifestSyntax::Json, ManifestSyntax::Yaml] {
        if let Ok(manifest) = Manifest::parse(data, syntax) {
            check_manifest(&manifest);
        }
    }
}

fn check_manifest(manifest: &Manifest) {
    let key = &manifest.artifact_key;
    assert_eq!(ArtifactKey::from_stack_name(&manifest.stack_name).as_ref(), Ok(key));
    assert_eq!(ArtifactKey::parse(key.as_str()).as_ref(), Ok(key));
    let unique: BTreeSet<&str> = manifest.depends_on.iter().map(ArtifactKey::as_str).collect();
    assert_eq!(unique.len(), manifest.depends_on.len(), "dependencies are de-duplicated");
    for dependency in &manifest.depends_on {
        assert_eq!(ArtifactKey::parse(dependency.as_str()).as_ref(), Ok(dependency));
    }
}

/// A package of any bytes, with small limits so the fuzzer reaches them:
/// an accepted one has a valid manifest.
pub fn package(data: &[u8]) {
    let limits = PackageLimits { max_entries: 64, max_manifest_bytes: 4096, max_expansion_ratio: 20 };
    if let Ok(info) = package::inspect_reader(Cursor::new(data), data.len() as u64, &limits) {
        check_manifest(&info.manifest);
    }
}

/// A plan built from the bytes (pairs name an artifact and a dependency
/// among eight keys): accepted plans hold every dependency, waves put each
/// artifact after what it needs; refused ones say why.
pub fn plan(data: &[u8]) {
    const KEYS: [&str; 8] = ["a", "b", "c", "d", "e", "f", "g", "h"];
    let mut entries: Vec<PlanEntry> = Vec::new();
    for pair in data.chunks(2) {
        let key = ArtifactKey::parse(KEYS[usize::from(pair[0] % 8)]).unwrap();
        let dependency =
            pair.get(1).filter(|b| **b < 0xc0).map(|b| ArtifactKey::parse(KEYS[usize::from(b % 8)]).unwrap());
        match entries.iter_mut().find(|e| e.artifact_key == key).filter(|_| pair[0] < 0xf0) {
            Some(entry) => entry.depends_on.extend(dependency),
            None => entries.push(PlanEntry {
                artifact_key: key,
                version: 1,
                digest: Digest::from_sha256(&[0; 32]).to_string(),
                depends_on: dependency.into_iter().collect(),
            }),
        }
    }
    match plan::validate(&entries) {
        Ok(planned) => {
            let keys: BTreeSet<&str> = planned.iter().map(|p| p.artifact_key.as_str()).collect();
            assert_eq!(keys.len(), entries.len());
            for artifact in &planned {
                for dependency in &artifact.depends_on {
                    let needed = planned
                        .iter()
                        .find(|p| &p.artifact_key == dependency)
                        .expect("dependency in the plan");
                    assert!(
                        needed.wave < artifact.wave,
                        "{dependency} deploys before {}",
                        artifact.artifact_key
                    );
                    assert!(needed.dependents.contains(&artifact.artifact_key));
                }
            }
            let diff = plan::diff(&planned, &planned);
            assert!(diff.is_empty(), "a plan does not differ from itself");
        }
        Err(problems) => {
            assert!(!problems.is_empty(), "a refused plan says why");
            for problem in &problems {
                if let PlanProblem::DependencyCycle { cycle } = problem {
                    assert!(cycle.len() >= 2 && cycle.first() == cycle.last(), "{cycle:?}");
                }
            }
        }
    }
}

/// Selectors, organizations, keys, versions and digests: what is accepted
/// prints back as itself (digests in lower case) and parses again.
pub fn names(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(selector) = Selector::parse(text) {
        assert_eq!(selector.as_str(), text);
        assert!(!text.contains(',') && !text.chars().any(char::is_control));
    }
    if let Ok(organization) = Organization::parse(text) {
        assert_eq!(organization.as_str(), text);
    }
    if let Ok(key) = ArtifactKey::parse(text) {
        assert_eq!(key.as_str(), text);
        assert_eq!(ArtifactKey::from_stack_name(text).as_ref(), Ok(&key));
    }
    if let Ok(version) = VersionRef::parse(text) {
        assert_eq!(VersionRef::parse(&version.to_string()).as_ref(), Ok(&version));
    }
    if let Ok(digest) = Digest::parse(text) {
        assert_eq!(digest.to_string(), text.to_ascii_lowercase());
    }
}
