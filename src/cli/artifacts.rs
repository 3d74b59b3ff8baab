//! `stackyard artifacts`: list, show, versions, download, rm, dependents.

use std::path::PathBuf;

use futures::StreamExt;
use tokio::io::AsyncWriteExt;

use super::{CliError, CliResult, Context, split_version, table};

pub async fn list(ctx: &Context, prefix: Option<&str>, labels: &[String]) -> CliResult {
    let mut artifacts = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = ctx.client.list_artifacts(prefix, labels, cursor.as_deref()).await?;
        artifacts.extend(page.artifacts);
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    ctx.emit(&artifacts, |list| {
        let rows: Vec<Vec<String>> = list
            .iter()
            .map(|a| {
                vec![
                    a.artifact_key.clone(),
                    a.stack_name.clone(),
                    a.latest_version.to_string(),
                    a.versions.to_string(),
                    a.updated_at.to_rfc3339(),
                ]
            })
            .collect();
        table(&["KEY", "STACK NAME", "LATEST", "VERSIONS", "UPDATED"], &rows)
    })
}

pub async fn show(ctx: &Context, key: &str) -> CliResult {
    let artifact = ctx.client.artifact(key).await?;
    ctx.emit(&artifact, |a| {
        let l = &a.latest;
        let deps = if l.depends_on.is_empty() { "-".to_string() } else { l.depends_on.join(", ") };
        let labels: Vec<String> = l.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        format!(
            "artifact    {}\nstack name  {}\nlatest      {} ({}, {} bytes, {})\ndigest      {}\ndepends on  {}\nlabels      {}\nversions    {}",
            a.artifact_key,
            a.stack_name,
            l.version,
            l.format,
            l.size,
            l.uploaded_at.to_rfc3339(),
            l.digest,
            deps,
            if labels.is_empty() { "-".to_string() } else { labels.join(", ") },
            a.versions.len()
        )
    })
}

pub async fn versions(ctx: &Context, key: &str) -> CliResult {
    let artifact = ctx.client.artifact(key).await?;
    ctx.emit(&artifact.versions, |versions| {
        let rows: Vec<Vec<String>> = versions
            .iter()
            .map(|v| {
                vec![
                    v.version.to_string(),
                    v.digest.clone(),
                    v.size.to_string(),
                    v.format.clone(),
                    v.uploaded_at.to_rfc3339(),
                ]
            })
            .collect();
        table(&["VERSION", "DIGEST", "SIZE", "FORMAT", "UPLOADED"], &rows)
    })
}

pub async fn download(ctx: &Context, spec: &str, out: Option<PathBuf>) -> CliResult {
    let (key, version) = split_version(spec);
    let version = match version {
        Some(v) => v.to_string(),
        None => ctx.client.artifact(key).await?.latest_version.to_string(),
    };
    let meta = ctx.client.version(key, &version).await?;
    let out = out
        .unwrap_or_else(|| PathBuf::from(format!("{}-{}.{}", meta.artifact_key, meta.version, meta.format)));
    let response = ctx.client.download(key, &version).await?;
    let mut file = tokio::fs::File::create(&out)
        .await
        .map_err(|e| CliError::usage(format!("{}: {e}", out.display())))?;
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(stackyard_client::ClientError::Network)?;
        file.write_all(&chunk).await?;
    }
    file.flush().await?;
    ctx.info(format!("wrote {} ({} bytes, {})", out.display(), meta.size, meta.digest));
    Ok(())
}

pub async fn remove(ctx: &Context, spec: &str) -> CliResult {
    let (key, Some(version)) = split_version(spec) else {
        return Err(CliError::usage("name the version to delete: KEY@VERSION"));
    };
    ctx.client.delete_version(key, version).await?;
    ctx.info(format!("deleted {key}@{version}"));
    Ok(())
}

pub async fn dependents(ctx: &Context, key: &str) -> CliResult {
    let dependents = ctx.client.dependents(key).await?;
    ctx.emit(&dependents, |d| {
        let artifacts: Vec<String> = d
            .artifacts
            .iter()
            .map(|a| {
                format!(
                    "{} (versions {})",
                    a.artifact_key,
                    a.versions.iter().map(i64::to_string).collect::<Vec<_>>().join(", ")
                )
            })
            .collect();
        format!(
            "artifacts  {}\nselectors  {}",
            if artifacts.is_empty() { "-".into() } else { artifacts.join("; ") },
            if d.selectors.is_empty() { "-".into() } else { d.selectors.join(", ") }
        )
    })
}
