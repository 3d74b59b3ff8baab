//! `stackyard package`: build a package from a folder, checking the manifest first.

use std::io::Write;
use std::path::{Path, PathBuf};

use stackyard_core::manifest::{Manifest, ManifestError, ManifestSyntax};
use stackyard_core::package::{self, PackageLimits};

use super::{CliError, CliResult, Context, Exit};

#[derive(serde::Serialize)]
struct Built {
    file: String,
    artifact_key: String,
    format: String,
    size: u64,
    files: usize,
}

pub fn package(ctx: &Context, dir: &Path, out: &Path) -> CliResult {
    let manifest = check_manifest(dir)?;
    let files = files_under(dir)?;
    let name = out.to_string_lossy();
    let written =
        std::fs::File::create(out).map_err(|e| CliError::usage(format!("{}: {e}", out.display())))?;
    if name.ends_with(".zip") {
        let mut zip = zip::ZipWriter::new(written);
        let options =
            zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
        for (relative, path) in &files {
            zip.start_file(relative.as_str(), options)
                .map_err(|e| CliError::new(Exit::Failed, e.to_string()))?;
            std::io::copy(&mut std::fs::File::open(path)?, &mut zip)?;
        }
        zip.finish().map_err(|e| CliError::new(Exit::Failed, e.to_string()))?;
    } else if name.ends_with(".tar.gz") || name.ends_with(".tgz") {
        let gz = flate2::write::GzEncoder::new(written, flate2::Compression::default());
        write_tar(gz, &files)?.finish()?.flush()?;
    } else if name.ends_with(".tar") {
        write_tar(written, &files)?.flush()?;
    } else {
        std::fs::remove_file(out).ok();
        return Err(CliError::usage("the output file must end in .tar.gz, .tgz, .tar or .zip"));
    }
    // Read it back the way the registry will.
    let info = package::inspect(out, &PackageLimits::default())
        .map_err(|e| CliError::new(Exit::Conflict, format!("the built package would be refused: {e}")))?;
    let built = Built {
        file: out.display().to_string(),
        artifact_key: manifest.artifact_key.to_string(),
        format: info.format.as_str().to_string(),
        size: std::fs::metadata(out)?.len(),
        files: files.len(),
    };
    ctx.emit(&built, |b| {
        format!(
            "wrote {} ({}, {} files, {} bytes) for artifact {}",
            b.file, b.format, b.files, b.size, b.artifact_key
        )
    })
}

fn write_tar<W: Write>(writer: W, files: &[(String, PathBuf)]) -> CliResult<W> {
    let mut tar = tar::Builder::new(writer);
    for (relative, path) in files {
        tar.append_path_with_name(path, relative)?;
    }
    Ok(tar.into_inner()?)
}

/// Finds and validates the manifest at the folder's root.
fn check_manifest(dir: &Path) -> CliResult<Manifest> {
    let found: Vec<&str> = ["manifest.yaml", "manifest.yml", "manifest.json"]
        .into_iter()
        .filter(|n| dir.join(n).is_file())
        .collect();
    let name = match found.as_slice() {
        [one] => *one,
        [] => {
            return Err(CliError::usage(format!(
                "{} has no manifest.yaml, manifest.yml or manifest.json",
                dir.display()
            )));
        }
        many => {
            return Err(CliError::usage(format!(
                "{} has more than one manifest: {}",
                dir.display(),
                many.join(", ")
            )));
        }
    };
    let syntax = if name.ends_with(".json") { ManifestSyntax::Json } else { ManifestSyntax::Yaml };
    Manifest::parse(&std::fs::read(dir.join(name))?, syntax).map_err(|e| {
        let mut error = CliError::new(Exit::Conflict, format!("{name} is invalid"));
        error.items = match e {
            ManifestError::Fields(problems) => problems.into_iter().map(|p| p.detail).collect(),
            other => vec![other.to_string()],
        };
        error
    })
}

/// Every file below `dir`, sorted, with its path relative to `dir`.
fn files_under(dir: &Path) -> CliResult<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        for entry in std::fs::read_dir(&current)? {
            let path = entry?.path();
            if path.is_dir() {
                pending.push(path);
            } else {
                let relative =
                    path.strip_prefix(dir).expect("below dir").to_string_lossy().replace('\\', "/");
                out.push((relative, path));
            }
        }
    }
    out.sort();
    Ok(out)
}
