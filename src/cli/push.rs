//! `stackyard push`: presign, upload (with progress on a terminal), report.

use std::path::PathBuf;
use std::sync::Arc;

use sha2::Digest;
use stackyard_api::{PresignRequest, Upload, UploadMethod, UploadState};

use super::{CliError, CliResult, Context, Exit};

pub struct PushArgs {
    pub packages: Vec<PathBuf>,
    pub sha256: Option<String>,
    pub labels: Vec<String>,
    pub put: bool,
}

pub async fn push(ctx: &Context, args: PushArgs) -> CliResult {
    if args.sha256.is_some() && args.packages.len() != 1 {
        return Err(CliError::usage("--sha256 names the digest of one package; push one at a time"));
    }
    let mut labels = std::collections::BTreeMap::new();
    for label in &args.labels {
        let (name, value) = label
            .split_once('=')
            .ok_or_else(|| CliError::usage(format!("label '{label}' must be name=value")))?;
        labels.insert(name.to_string(), value.to_string());
    }
    let mut uploads = Vec::new();
    for path in &args.packages {
        let size =
            std::fs::metadata(path).map_err(|e| CliError::usage(format!("{}: {e}", path.display())))?.len();
        let digest = sha256_file(path.clone()).await?;
        if let Some(expected) = &args.sha256
            && !expected.eq_ignore_ascii_case(&digest)
        {
            return Err(CliError::new(
                Exit::Conflict,
                format!(
                    "{} hashes to {digest}, not the --sha256 given ({expected}); nothing was uploaded",
                    path.display()
                ),
            ));
        }
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let presigned = ctx
            .client
            .presign(&PresignRequest {
                filename: Some(name.clone()),
                content_length: Some(size),
                sha256: Some(digest),
                labels: (!labels.is_empty()).then(|| labels.clone()),
                method: Some(if args.put { UploadMethod::Put } else { UploadMethod::Post }),
                ..Default::default()
            })
            .await?;
        let upload = send(ctx, path, &name, size, &presigned).await?;
        if upload.state != UploadState::Registered {
            let detail = upload
                .error
                .as_ref()
                .map_or("the upload was not registered".to_string(), |p| p.detail.clone());
            return Err(CliError::new(Exit::Conflict, format!("{name}: {detail}")));
        }
        uploads.push(upload);
    }
    ctx.emit(&uploads, |uploads| {
        uploads
            .iter()
            .map(|u| {
                let what = if u.created == Some(false) { "already exists" } else { "pushed" };
                format!(
                    "{} {}  version {}  {}",
                    what,
                    u.artifact_key.as_deref().unwrap_or("?"),
                    u.version.unwrap_or_default(),
                    u.digest.as_deref().unwrap_or("")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    })
}

async fn send(
    ctx: &Context,
    path: &std::path::Path,
    name: &str,
    size: u64,
    presigned: &stackyard_api::PresignResponse,
) -> CliResult<Upload> {
    if ctx.interactive() {
        let bar = indicatif::ProgressBar::new(size);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
            )
            .expect("a valid template")
            .progress_chars("=> "),
        );
        bar.set_message(name.to_string());
        let progress = Arc::new(bar);
        let tick = progress.clone();
        let body = stackyard_client::file_stream(path, move |n| tick.inc(n)).await?;
        let result = ctx.client.upload(presigned, name, body, size).await;
        progress.finish_and_clear();
        Ok(result?)
    } else {
        ctx.info(format!("uploading {name} ({size} bytes)"));
        let body = stackyard_client::file_stream(path, |_| {}).await?;
        Ok(ctx.client.upload(presigned, name, body, size).await?)
    }
}

/// The file's SHA-256 as hex, read in a blocking thread.
async fn sha256_file(path: PathBuf) -> CliResult<String> {
    tokio::task::spawn_blocking(move || -> std::io::Result<String> {
        use std::io::Read;
        let mut file = std::fs::File::open(&path)?;
        let mut hasher = sha2::Sha256::new();
        let mut buffer = vec![0u8; 256 * 1024];
        loop {
            match file.read(&mut buffer)? {
                0 => break,
                n => hasher.update(&buffer[..n]),
            }
        }
        Ok(hex::encode(hasher.finalize()))
    })
    .await
    .map_err(|e| CliError::new(Exit::Failed, e.to_string()))?
    .map_err(CliError::from)
}
