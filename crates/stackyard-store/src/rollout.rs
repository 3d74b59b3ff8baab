//! Rollout rules: the state of a revision from its artifacts' states, which
//! artifacts are ready, and which reports an engine may make.

use std::collections::HashMap;

use stackyard_api::{ArtifactState, RolloutState};
use stackyard_core::plan::PlannedArtifact;

/// Why an engine's report is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReportRefusal {
    /// These dependencies have not succeeded yet.
    DependenciesNotReady(Vec<String>),
    /// A finished artifact may only start over through a trigger.
    Backwards { from: ArtifactState, to: ArtifactState },
}

fn rank(state: ArtifactState) -> u8 {
    match state {
        ArtifactState::Pending => 0,
        ArtifactState::InProgress => 1,
        ArtifactState::Succeeded | ArtifactState::Failed => 2,
    }
}

/// Checks a report against the current state of the artifact and its dependencies.
pub fn check_report(
    artifact: &PlannedArtifact,
    from: ArtifactState,
    to: ArtifactState,
    states: &HashMap<&str, ArtifactState>,
) -> Result<(), ReportRefusal> {
    let finished = rank(from) == 2;
    if (finished && from != to) || rank(to) < rank(from) {
        return Err(ReportRefusal::Backwards { from, to });
    }
    if matches!(to, ArtifactState::InProgress | ArtifactState::Succeeded) {
        let waiting: Vec<String> = artifact
            .depends_on
            .iter()
            .filter(|d| states.get(d.as_str()) != Some(&ArtifactState::Succeeded))
            .cloned()
            .collect();
        if !waiting.is_empty() {
            return Err(ReportRefusal::DependenciesNotReady(waiting));
        }
    }
    Ok(())
}

/// The revision's state: superseded once not current, failed if anything
/// failed, succeeded when everything did, pending until anything moved.
pub fn rollout_state(current: bool, states: impl IntoIterator<Item = ArtifactState>) -> RolloutState {
    if !current {
        return RolloutState::Superseded;
    }
    let (mut total, mut succeeded, mut pending, mut failed) = (0, 0, 0, 0);
    for state in states {
        total += 1;
        match state {
            ArtifactState::Succeeded => succeeded += 1,
            ArtifactState::Pending => pending += 1,
            ArtifactState::Failed => failed += 1,
            ArtifactState::InProgress => {}
        }
    }
    if failed > 0 {
        RolloutState::Failed
    } else if succeeded == total {
        RolloutState::Succeeded
    } else if pending == total {
        RolloutState::Pending
    } else {
        RolloutState::InProgress
    }
}

/// Pending artifacts whose dependencies have all succeeded, in plan order.
pub fn ready<'a>(plan: &'a [PlannedArtifact], states: &HashMap<&str, ArtifactState>) -> Vec<&'a str> {
    plan.iter()
        .filter(|a| states[a.artifact_key.as_str()] == ArtifactState::Pending)
        .filter(|a| a.depends_on.iter().all(|d| states.get(d.as_str()) == Some(&ArtifactState::Succeeded)))
        .map(|a| a.artifact_key.as_str())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ArtifactState::*;
    use stackyard_core::plan::Role;

    fn artifact(key: &str, deps: &[&str]) -> PlannedArtifact {
        PlannedArtifact {
            artifact_key: key.into(),
            version: 1,
            digest: String::new(),
            wave: 0,
            role: Role::Standalone,
            depends_on: deps.iter().map(|d| d.to_string()).collect(),
            dependents: vec![],
        }
    }

    #[test]
    fn reports_wait_for_dependencies() {
        let app = artifact("app", &["net", "db"]);
        let states = HashMap::from([("net", Succeeded), ("db", InProgress), ("app", Pending)]);
        assert_eq!(
            check_report(&app, Pending, InProgress, &states),
            Err(ReportRefusal::DependenciesNotReady(vec!["db".into()]))
        );
        assert_eq!(check_report(&app, Pending, Failed, &states), Ok(()), "failing early is always allowed");
        let states = HashMap::from([("net", Succeeded), ("db", Succeeded), ("app", Pending)]);
        assert_eq!(check_report(&app, Pending, InProgress, &states), Ok(()));
    }

    #[test]
    fn finished_artifacts_do_not_move_backwards() {
        let net = artifact("net", &[]);
        let states = HashMap::new();
        assert!(check_report(&net, Succeeded, Pending, &states).is_err());
        assert!(check_report(&net, Succeeded, Failed, &states).is_err());
        assert!(check_report(&net, Failed, InProgress, &states).is_err());
        assert!(check_report(&net, InProgress, Pending, &states).is_err());
        assert_eq!(
            check_report(&net, Succeeded, Succeeded, &states),
            Ok(()),
            "repeating a report is harmless"
        );
        assert_eq!(check_report(&net, InProgress, Succeeded, &states), Ok(()));
        assert_eq!(check_report(&net, Pending, Succeeded, &states), Ok(()));
    }

    #[test]
    fn rollout_state_summarises() {
        assert_eq!(rollout_state(false, [Succeeded]), RolloutState::Superseded);
        assert_eq!(rollout_state(true, [Pending, Pending]), RolloutState::Pending);
        assert_eq!(rollout_state(true, [Succeeded, Pending]), RolloutState::InProgress);
        assert_eq!(rollout_state(true, [Succeeded, Failed]), RolloutState::Failed);
        assert_eq!(rollout_state(true, [Succeeded, Succeeded]), RolloutState::Succeeded);
        assert_eq!(rollout_state(true, []), RolloutState::Succeeded, "an empty plan has nothing left to do");
    }
}
