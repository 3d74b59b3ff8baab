//! `stackyard deploy`, `get`, `ls`, `history`, `rm`: plans, shown before applied.

use std::path::Path;

use serde::Deserialize;
use stackyard_api::{Deployment, DeploymentPlan, DeploymentRequest, PlanDiff, PlanItem, VersionSpec};
use stackyard_client::{ClientError, Precondition};

use super::{CliError, CliResult, Context, Exit, confirm, split_version, table};

/// A plan file, YAML or JSON: `organization` and `artifacts: [{key, version?}]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PlanFile {
    organization: Option<String>,
    artifacts: Vec<PlanFileItem>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PlanFileItem {
    #[serde(alias = "artifact_key")]
    key: String,
    version: Option<VersionSpec>,
}

pub struct DeployArgs<'a> {
    pub selector: &'a str,
    pub file: Option<&'a Path>,
    pub add: &'a [String],
    pub remove: &'a [String],
    pub organization: Option<String>,
    pub dry_run: bool,
    pub yes: bool,
    /// Apply only if the deployment is still at this status id.
    pub if_match: Option<String>,
}

fn version_spec(text: &str) -> VersionSpec {
    text.parse::<i64>().map_or_else(|_| VersionSpec::Text(text.to_string()), VersionSpec::Number)
}

fn plan_from_file(path: &Path) -> CliResult<PlanFile> {
    let text =
        std::fs::read_to_string(path).map_err(|e| CliError::usage(format!("{}: {e}", path.display())))?;
    let parsed = if path.extension().is_some_and(|e| e == "json") {
        serde_json::from_str(&text).map_err(|e| e.to_string())
    } else {
        serde_norway::from_str(&text).map_err(|e| e.to_string())
    };
    parsed.map_err(|e| CliError::usage(format!("{} is not a plan file: {e}", path.display())))
}

/// The plan the user asks for: a file, or the current plan with additions and removals.
fn requested(args: &DeployArgs, current: Option<&Deployment>) -> CliResult<DeploymentRequest> {
    let (organization, artifacts) = match args.file {
        Some(path) => {
            let plan = plan_from_file(path)?;
            let items = plan
                .artifacts
                .into_iter()
                .map(|i| PlanItem { artifact_key: i.key, version: i.version })
                .collect();
            (args.organization.clone().or(plan.organization), items)
        }
        None => {
            let mut items: Vec<PlanItem> = current
                .map(|d| {
                    d.artifacts
                        .iter()
                        .map(|a| PlanItem {
                            artifact_key: a.artifact_key.clone(),
                            version: Some(VersionSpec::Number(a.version)),
                        })
                        .collect()
                })
                .unwrap_or_default();
            for key in args.remove {
                if !items.iter().any(|i| i.artifact_key == *key) {
                    return Err(CliError::new(
                        Exit::NotFound,
                        format!("{key} is not in the plan of {}", args.selector),
                    ));
                }
                items.retain(|i| i.artifact_key != *key);
            }
            for spec in args.add {
                let (key, version) = split_version(spec);
                items.retain(|i| i.artifact_key != key);
                items.push(PlanItem { artifact_key: key.to_string(), version: version.map(version_spec) });
            }
            (args.organization.clone(), items)
        }
    };
    Ok(DeploymentRequest {
        selector: args.selector.to_string(),
        organization,
        deployment_plan: DeploymentPlan { artifacts },
    })
}

pub fn describe_diff(diff: &PlanDiff) -> String {
    let mut lines = Vec::new();
    lines.extend(diff.added.iter().map(|e| format!("  + {} {}", e.artifact_key, e.version)));
    lines.extend(
        diff.changed.iter().map(|c| format!("  ~ {} {} -> {}", c.artifact_key, c.old_version, c.new_version)),
    );
    lines.extend(diff.removed.iter().map(|e| format!("  - {} {}", e.artifact_key, e.version)));
    lines.join("\n")
}

#[derive(serde::Serialize)]
struct DeployResult<'a> {
    applied: bool,
    /// The status id the diff was computed against (none for a new deployment).
    based_on: Option<&'a str>,
    deployment: &'a Deployment,
}

pub async fn deploy(ctx: &Context, args: DeployArgs<'_>) -> CliResult {
    if args.file.is_some() != (args.add.is_empty() && args.remove.is_empty()) {
        return Err(CliError::usage("give either -f PLAN_FILE or --add/--remove"));
    }
    let current = ctx.client.deployment(args.selector).await?;
    let based_on = args.if_match.clone().or_else(|| current.as_ref().map(|d| d.status_id.clone()));
    let request = requested(&args, current.as_ref())?;
    let pre = match &based_on {
        Some(tag) => Precondition { if_match: Some(tag.clone()), if_none_match_any: false },
        None => Precondition { if_match: None, if_none_match_any: true },
    };

    let preview =
        ctx.client.write_deployment(&request, &pre, true).await.map_err(|e| stale(e, args.selector))?;
    let diff = preview.deployment.diff.clone().unwrap_or_default();
    let unchanged = diff.added.is_empty()
        && diff.removed.is_empty()
        && diff.changed.is_empty()
        && current.as_ref().is_some_and(|c| c.organization == preview.deployment.organization);
    if ctx.output == super::Output::Table {
        match (&current, unchanged) {
            (_, true) => ctx.info(format!("{}: no changes", args.selector)),
            (None, _) => ctx.info(format!("{}: new deployment\n{}", args.selector, describe_diff(&diff))),
            (Some(c), _) => ctx.info(format!(
                "{}: revision {} -> {}\n{}",
                args.selector,
                c.revision,
                c.revision + 1,
                describe_diff(&diff)
            )),
        }
    }
    if unchanged || args.dry_run {
        if args.dry_run && !unchanged {
            ctx.info(format!(
                "dry run: nothing applied; apply this diff with --if-match {}",
                based_on.as_deref().unwrap_or("(none: new)")
            ));
        }
        let result =
            DeployResult { applied: false, based_on: based_on.as_deref(), deployment: &preview.deployment };
        return ctx.emit(&result, |_| String::new());
    }
    if !confirm("Apply these changes?", args.yes)? {
        return Err(CliError::new(Exit::Failed, "not applied"));
    }
    let written =
        ctx.client.write_deployment(&request, &pre, false).await.map_err(|e| stale(e, args.selector))?;
    let result =
        DeployResult { applied: true, based_on: based_on.as_deref(), deployment: &written.deployment };
    ctx.emit(&result, |r| {
        format!(
            "{}: revision {} (status id {})",
            r.deployment.selector, r.deployment.revision, r.deployment.status_id
        )
    })
}

/// A 412 means someone changed the deployment after the diff was computed.
fn stale(e: ClientError, selector: &str) -> CliError {
    if e.status().is_some_and(|s| s.as_u16() == 412) {
        return CliError::new(
            Exit::Conflict,
            format!(
                "{selector} changed since this diff was computed; nothing was applied. Review the new state and run again"
            ),
        );
    }
    e.into()
}

pub fn render(d: &Deployment) -> String {
    let header = format!(
        "{}  revision {}  status id {}{}",
        d.selector,
        d.revision,
        d.status_id,
        d.organization.as_deref().map(|o| format!("  organization {o}")).unwrap_or_default()
    );
    let rows: Vec<Vec<String>> = d
        .artifacts
        .iter()
        .map(|a| {
            let deps = if a.depends_on.is_empty() { "-".to_string() } else { a.depends_on.join(", ") };
            vec![a.wave.to_string(), a.artifact_key.clone(), a.version.to_string(), a.role.clone(), deps]
        })
        .collect();
    format!("{header}\n{}", table(&["WAVE", "ARTIFACT", "VERSION", "ROLE", "DEPENDS ON"], &rows))
}

pub async fn get(ctx: &Context, selector: &str) -> CliResult {
    let deployment = ctx
        .client
        .deployment(selector)
        .await?
        .ok_or_else(|| CliError::new(Exit::NotFound, format!("no deployment '{selector}'")))?;
    ctx.emit(&deployment, render)
}

pub async fn list(ctx: &Context, selectors: &[String], keys: &[String], orgs: &[String]) -> CliResult {
    let deployments = ctx.client.all_deployments(selectors, keys, orgs).await?;
    ctx.emit(&deployments, |list| {
        let rows: Vec<Vec<String>> = list
            .iter()
            .map(|d| {
                vec![
                    d.selector.clone(),
                    d.organization.clone().unwrap_or_else(|| "-".into()),
                    d.revision.to_string(),
                    d.artifacts.len().to_string(),
                    d.updated_at.to_rfc3339(),
                ]
            })
            .collect();
        table(&["SELECTOR", "ORGANIZATION", "REVISION", "ARTIFACTS", "UPDATED"], &rows)
    })
}

pub async fn history(ctx: &Context, selector: &str) -> CliResult {
    let revisions = ctx.client.revisions(selector).await?;
    ctx.emit(&revisions, |list| {
        let rows: Vec<Vec<String>> = list
            .iter()
            .map(|r| {
                let summary =
                    format!("+{} ~{} -{}", r.diff.added.len(), r.diff.changed.len(), r.diff.removed.len());
                vec![r.revision.to_string(), r.status_id.clone(), r.created_at.to_rfc3339(), summary]
            })
            .collect();
        table(&["REVISION", "STATUS ID", "CREATED", "CHANGES"], &rows)
    })
}

pub async fn remove(ctx: &Context, selector: &str, yes: bool) -> CliResult {
    let current = ctx
        .client
        .deployment(selector)
        .await?
        .ok_or_else(|| CliError::new(Exit::NotFound, format!("no deployment '{selector}'")))?;
    if !confirm(&format!("Remove deployment {selector} (revision {})?", current.revision), yes)? {
        return Err(CliError::new(Exit::Failed, "not removed"));
    }
    let pre = Precondition { if_match: Some(current.status_id.clone()), if_none_match_any: false };
    ctx.client.delete_deployment(selector, &pre).await.map_err(|e| stale(e, selector))?;
    ctx.info(format!("removed {selector}"));
    Ok(())
}
