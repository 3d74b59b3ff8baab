//! `stackyard status` (a live view grouped by wave), `report`, `trigger`.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::Utc;
use stackyard_api::{ArtifactState, DeploymentStatus, RolloutState, StatusReport};

use super::{CliError, CliResult, Context, Exit};

fn marker(state: ArtifactState) -> &'static str {
    match state {
        ArtifactState::Pending => "[ ]",
        ArtifactState::InProgress => "[~]",
        ArtifactState::Succeeded => "[+]",
        ArtifactState::Failed => "[!]",
    }
}

fn name<T: serde::Serialize>(state: T) -> String {
    serde_json::to_value(state).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default()
}

fn elapsed(seconds: i64) -> String {
    match seconds {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{:02}s", s / 60, s % 60),
        s => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// The rollout, grouped by wave. `with_time` adds how long each state has lasted.
pub fn render(status: &DeploymentStatus, with_time: bool) -> String {
    let mut waves: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    let now = Utc::now();
    for a in &status.artifacts {
        let since = if with_time {
            format!("  {}", elapsed((now - a.updated_at).num_seconds().max(0)))
        } else {
            String::new()
        };
        let message = a.message.as_deref().map(|m| format!("  {m}")).unwrap_or_default();
        waves.entry(a.wave).or_default().push(format!(
            "  {} {} @{}  {}{since}{message}",
            marker(a.state),
            a.artifact_key,
            a.version,
            name(a.state)
        ));
    }
    let mut out = vec![format!(
        "{}  revision {}  status id {}  {}{}",
        status.selector,
        status.revision,
        status.status_id,
        name(status.state),
        if status.ready.is_empty() { String::new() } else { format!("  ready: {}", status.ready.join(", ")) }
    )];
    for (wave, lines) in waves {
        out.push(format!("wave {wave}"));
        out.extend(lines);
    }
    out.join("\n")
}

fn finished(state: RolloutState) -> bool {
    matches!(state, RolloutState::Succeeded | RolloutState::Failed | RolloutState::Superseded)
}

pub async fn status(
    ctx: &Context,
    selector: &str,
    status_id: Option<String>,
    watch: bool,
    interval: f64,
) -> CliResult {
    let status_id = match status_id {
        Some(id) => id,
        None => {
            ctx.client
                .deployment(selector)
                .await?
                .ok_or_else(|| CliError::new(Exit::NotFound, format!("no deployment '{selector}'")))?
                .status_id
        }
    };
    let mut status = ctx.client.status(selector, &status_id).await?;
    if watch {
        let live = ctx.interactive();
        let mut last_shown = String::new();
        loop {
            if live {
                // Redraw in place: clear the screen, home the cursor.
                println!("\x1b[2J\x1b[H{}", render(&status, true));
            } else if ctx.output == super::Output::Table {
                let view = render(&status, false);
                if view != last_shown {
                    println!("{view}\n");
                    last_shown = view;
                }
            }
            if finished(status.state) {
                break;
            }
            tokio::time::sleep(Duration::from_secs_f64(interval)).await;
            status = ctx.client.status(selector, &status_id).await?;
        }
        if ctx.output != super::Output::Table {
            ctx.emit(&status, |_| String::new())?;
        }
    } else {
        ctx.emit(&status, |s| render(s, true))?;
    }
    match status.state {
        RolloutState::Failed => Err(CliError::new(Exit::Failed, format!("the rollout of {selector} failed"))),
        RolloutState::Superseded => Err(CliError::new(
            Exit::Failed,
            format!("revision {} of {selector} was superseded", status.revision),
        )),
        _ => Ok(()),
    }
}

pub async fn report(
    ctx: &Context,
    selector: &str,
    status_id: &str,
    key: &str,
    state: ArtifactState,
    message: Option<String>,
) -> CliResult {
    let status = ctx.client.report(selector, status_id, key, &StatusReport { state, message }).await?;
    ctx.emit(&status, |s| render(s, false))
}

pub async fn trigger(ctx: &Context, selector: &str, key: &str) -> CliResult {
    let triggered = ctx.client.trigger(selector, key).await?;
    ctx.emit(&triggered, |t| {
        format!("triggered {key} on {selector} (trigger {}, status id {})", t.trigger_id, t.status_id)
    })
}
