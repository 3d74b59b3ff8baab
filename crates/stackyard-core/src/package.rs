//! Package inspection: recognise the archive by its magic bytes and read its
//! manifest without extracting anything.
//!
//! A zip is read through its central directory, so only the manifest entry's
//! bytes are decompressed. A tarball has no index: its headers are scanned in
//! one streaming pass (the data of other entries is skipped, never kept).

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::{Component, Path};

use crate::manifest::{Manifest, ManifestError, ManifestSyntax};

/// Bounds that keep a hostile package from exhausting the server.
#[derive(Debug, Clone, Copy)]
pub struct PackageLimits {
    /// Most entries an archive may hold.
    pub max_entries: u64,
    /// Largest manifest, decompressed.
    pub max_manifest_bytes: u64,
    /// For compressed tarballs: the decompressed stream may be at most this
    /// many times the compressed size (plus one MiB), so a gzip bomb is cut off.
    pub max_expansion_ratio: u64,
}

impl Default for PackageLimits {
    fn default() -> Self {
        Self { max_entries: 10_000, max_manifest_bytes: 1024 * 1024, max_expansion_ratio: 200 }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PackageFormat {
    Zip,
    TarGz,
    Tar,
}

impl PackageFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Zip => "zip",
            Self::TarGz => "tar.gz",
            Self::Tar => "tar",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Zip, Self::TarGz, Self::Tar].into_iter().find(|f| f.as_str() == s)
    }

    pub fn media_type(self) -> &'static str {
        match self {
            Self::Zip => "application/zip",
            Self::TarGz => "application/gzip",
            Self::Tar => "application/x-tar",
        }
    }
}

/// What inspection learned about a package.
#[derive(Debug, Clone)]
pub struct PackageInfo {
    pub format: PackageFormat,
    /// The manifest's path inside the archive.
    pub manifest_path: String,
    pub manifest: Manifest,
}

#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    #[error("the file is not a zip, tar.gz or tar archive")]
    NotAnArchive,
    #[error("the {format} archive is damaged or truncated: {detail}")]
    Corrupt { format: &'static str, detail: String },
    #[error(
        "no manifest found: put manifest.yaml, manifest.yml or manifest.json at the archive's \
         root or inside its single top-level folder"
    )]
    NoManifest,
    #[error("the archive holds more than one manifest: {}", .0.join(", "))]
    MultipleManifests(Vec<String>),
    #[error("the archive holds more than {limit} entries")]
    TooManyEntries { limit: u64 },
    #[error("the manifest {path} is larger than {limit} bytes once decompressed")]
    ManifestTooLarge { path: String, limit: u64 },
    #[error("the archive decompresses to more than {limit} bytes, {ratio} times its compressed size")]
    ExpansionTooLarge { limit: u64, ratio: u64 },
    #[error("{path}: {source}")]
    InvalidManifest { path: String, source: ManifestError },
    #[error("reading the package failed: {0}")]
    Io(#[from] io::Error),
}

impl PackageError {
    /// A stable machine-readable code for the problem.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotAnArchive => "not_an_archive",
            Self::Corrupt { .. } => "corrupt_archive",
            Self::NoManifest => "no_manifest",
            Self::MultipleManifests(_) => "multiple_manifests",
            Self::TooManyEntries { .. } => "too_many_entries",
            Self::ManifestTooLarge { .. } => "manifest_too_large",
            Self::ExpansionTooLarge { .. } => "decompression_limit",
            Self::InvalidManifest { .. } => "invalid_manifest",
            Self::Io(_) => "io_error",
        }
    }
}

/// Detects the format of the file at `path` and reads its manifest.
pub fn inspect(path: &Path, limits: &PackageLimits) -> Result<PackageInfo, PackageError> {
    let file = File::open(path)?;
    let size = file.metadata()?.len();
    inspect_reader(file, size, limits)
}

/// [`inspect`] for any seekable source of `size` bytes (the fuzzer reads from memory).
pub fn inspect_reader<R: Read + Seek>(
    mut file: R,
    size: u64,
    limits: &PackageLimits,
) -> Result<PackageInfo, PackageError> {
    let format = detect_format(&mut file)?;
    file.seek(SeekFrom::Start(0))?;
    let (manifest_path, bytes) = match format {
        PackageFormat::Zip => zip_manifest(file, limits)?,
        PackageFormat::Tar => {
            let mut archive = tar::Archive::new(BufReader::new(file));
            // Entries are skipped by seeking past them, not by reading them:
            // a gigabyte package is inspected in a few reads.
            let entries = archive.entries_with_seek().map_err(tar_corrupt)?;
            tar_manifest(entries, Some(size), limits)?
        }
        PackageFormat::TarGz => {
            let compressed = size;
            let budget = compressed.saturating_mul(limits.max_expansion_ratio).saturating_add(1 << 20);
            let decoder = flate2::read::GzDecoder::new(BufReader::new(file));
            let mut bounded = BoundedReader { inner: decoder, remaining: budget, exceeded: false };
            let mut archive = tar::Archive::new(&mut bounded);
            let found = archive
                .entries()
                .map_err(tar_corrupt)
                .and_then(|entries| tar_manifest(entries, None, limits));
            match found {
                Err(_) if bounded.exceeded => {
                    return Err(PackageError::ExpansionTooLarge {
                        limit: budget,
                        ratio: limits.max_expansion_ratio,
                    });
                }
                Err(PackageError::Corrupt { detail, .. }) => {
                    return Err(PackageError::Corrupt { format: "tar.gz", detail });
                }
                other => other?,
            }
        }
    };
    let syntax = if manifest_path.ends_with(".json") { ManifestSyntax::Json } else { ManifestSyntax::Yaml };
    let manifest = Manifest::parse(&bytes, syntax)
        .map_err(|source| PackageError::InvalidManifest { path: manifest_path.clone(), source })?;
    Ok(PackageInfo { format, manifest_path, manifest })
}

fn detect_format(file: &mut impl Read) -> Result<PackageFormat, PackageError> {
    let mut head = [0u8; 512];
    let n = read_up_to(file, &mut head)?;
    let head = &head[..n];
    if head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06") {
        Ok(PackageFormat::Zip)
    } else if head.starts_with(&[0x1f, 0x8b]) {
        Ok(PackageFormat::TarGz)
    } else if n >= 262 && &head[257..262] == b"ustar" {
        Ok(PackageFormat::Tar)
    } else {
        Err(PackageError::NotAnArchive)
    }
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

/// Where manifests were seen while walking an archive's entry names.
#[derive(Default)]
struct ManifestSearch {
    root: Vec<String>,
    nested: Vec<String>,
    top_level: Option<String>,
    single_top_folder: bool,
    entries: u64,
}

impl ManifestSearch {
    fn new() -> Self {
        Self { single_top_folder: true, ..Default::default() }
    }

    /// Records one entry; answers whether it is a manifest candidate.
    fn see(&mut self, raw_path: &str, is_dir: bool, limits: &PackageLimits) -> Result<bool, PackageError> {
        self.entries += 1;
        if self.entries > limits.max_entries {
            return Err(PackageError::TooManyEntries { limit: limits.max_entries });
        }
        let parts: Vec<&str> = Path::new(raw_path)
            .components()
            .filter_map(|c| match c {
                Component::Normal(s) => s.to_str(),
                _ => None,
            })
            .collect();
        let Some(first) = parts.first() else { return Ok(false) };
        // Finder-made zips carry resource forks that are not part of the package.
        if *first == "__MACOSX" {
            return Ok(false);
        }
        match &self.top_level {
            None => self.top_level = Some(first.to_string()),
            Some(top) if top != first => self.single_top_folder = false,
            Some(_) => {}
        }
        if parts.len() == 1 && !is_dir {
            self.single_top_folder = false;
        }
        let is_manifest = !is_dir && is_manifest_name(parts[parts.len() - 1]);
        match parts.len() {
            1 if is_manifest => self.root.push(parts.join("/")),
            2 if is_manifest => self.nested.push(parts.join("/")),
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// The one manifest this archive has, by the contract's rules.
    fn choose(self) -> Result<String, PackageError> {
        let level = if !self.root.is_empty() {
            self.root
        } else if self.single_top_folder {
            self.nested
        } else {
            Vec::new()
        };
        match level.len() {
            0 => Err(PackageError::NoManifest),
            1 => Ok(level.into_iter().next().unwrap_or_default()),
            _ => Err(PackageError::MultipleManifests(level)),
        }
    }
}

fn is_manifest_name(name: &str) -> bool {
    matches!(name, "manifest.yaml" | "manifest.yml" | "manifest.json")
}

fn zip_manifest(file: impl Read + Seek, limits: &PackageLimits) -> Result<(String, Vec<u8>), PackageError> {
    let corrupt = |e: zip::result::ZipError| PackageError::Corrupt { format: "zip", detail: e.to_string() };
    let mut archive = zip::ZipArchive::new(BufReader::new(file)).map_err(corrupt)?;
    if archive.len() as u64 > limits.max_entries {
        return Err(PackageError::TooManyEntries { limit: limits.max_entries });
    }
    let mut search = ManifestSearch::new();
    let mut raw_names = Vec::new();
    let names: Vec<String> =
        archive.file_names().map(|n| n.map(|n| n.into_owned())).collect::<Result<_, _>>().map_err(corrupt)?;
    for name in names {
        if search.see(&name, name.ends_with('/'), limits)? {
            raw_names.push(name);
        }
    }
    let chosen = search.choose()?;
    let raw_name = raw_names.into_iter().find(|n| normalise(n) == chosen).ok_or(PackageError::NoManifest)?;
    let entry = archive.by_name(&raw_name).map_err(corrupt)?;
    let bytes = read_bounded(entry, &chosen, limits.max_manifest_bytes).map_err(|e| match e {
        PackageError::Io(io) => PackageError::Corrupt { format: "zip", detail: io.to_string() },
        other => other,
    })?;
    Ok((chosen, bytes))
}

fn tar_corrupt(e: io::Error) -> PackageError {
    PackageError::Corrupt { format: "tar", detail: e.to_string() }
}

/// The manifest among a tar's entries. `size` is the archive's length when
/// the entries skip by seeking: a seek past the end succeeds, so an entry
/// running past it is caught here instead of by a failed read.
fn tar_manifest<R: Read>(
    entries: tar::Entries<'_, R>,
    size: Option<u64>,
    limits: &PackageLimits,
) -> Result<(String, Vec<u8>), PackageError> {
    let mut search = ManifestSearch::new();
    // Only the first candidate of each level is kept: a second one is an error
    // anyway, so memory stays bounded by two manifests whatever the archive holds.
    let mut first_root: Option<(String, Vec<u8>)> = None;
    let mut first_nested: Option<(String, Vec<u8>)> = None;
    for entry in entries {
        let entry = entry.map_err(tar_corrupt)?;
        let end = entry.header().entry_size().ok().and_then(|n| entry.raw_file_position().checked_add(n));
        if let Some(size) = size
            && end.is_none_or(|end| end > size)
        {
            let path = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            return Err(PackageError::Corrupt { format: "tar", detail: format!("{path} runs past the end") });
        }
        let kind = entry.header().entry_type();
        if !(kind.is_file() || kind.is_dir()) {
            continue;
        }
        let path = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        if !search.see(&path, kind.is_dir(), limits)? {
            continue;
        }
        let name = normalise(&path);
        let slot = if name.contains('/') { &mut first_nested } else { &mut first_root };
        if slot.is_none() {
            let bytes = read_bounded(entry, &name, limits.max_manifest_bytes)?;
            *slot = Some((name, bytes));
        }
    }
    let chosen = search.choose()?;
    [first_root, first_nested]
        .into_iter()
        .flatten()
        .find(|(name, _)| *name == chosen)
        .ok_or(PackageError::NoManifest)
}

fn normalise(raw: &str) -> String {
    Path::new(raw)
        .components()
        .filter_map(|c| match c {
            Component::Normal(s) => s.to_str(),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// Reads a whole entry, refusing one that decompresses past `limit`.
fn read_bounded(entry: impl Read, path: &str, limit: u64) -> Result<Vec<u8>, PackageError> {
    let mut bytes = Vec::new();
    entry.take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(PackageError::ManifestTooLarge { path: path.to_string(), limit });
    }
    Ok(bytes)
}

/// A reader that fails once more than `remaining` bytes have passed through.
struct BoundedReader<R> {
    inner: R,
    remaining: u64,
    exceeded: bool,
}

impl<R: Read> Read for BoundedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n as u64 > self.remaining {
            self.exceeded = true;
            return Err(io::Error::other("decompression limit exceeded"));
        }
        self.remaining -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn tar_bytes(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, data) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            builder.append_data(&mut header, path, *data).unwrap();
        }
        builder.into_inner().unwrap()
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(bytes).unwrap();
        enc.finish().unwrap()
    }

    fn zip_bytes(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut w = zip::ZipWriter::new(io::Cursor::new(Vec::new()));
        let opts = zip::write::SimpleFileOptions::default();
        for (path, data) in entries {
            w.start_file(*path, opts).unwrap();
            w.write_all(data).unwrap();
        }
        w.finish().unwrap().into_inner()
    }

    fn inspect_bytes(bytes: &[u8]) -> Result<PackageInfo, PackageError> {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(bytes).unwrap();
        inspect(f.path(), &PackageLimits::default())
    }

    const MANIFEST: &[u8] = b"stack_name: Network Core\n";

    #[test]
    fn reads_each_format() {
        let cases = [
            (zip_bytes(&[("manifest.yaml", MANIFEST)]), PackageFormat::Zip),
            (gzip(&tar_bytes(&[("./manifest.yaml", MANIFEST)])), PackageFormat::TarGz),
            (tar_bytes(&[("manifest.yaml", MANIFEST)]), PackageFormat::Tar),
        ];
        for (bytes, format) in cases {
            let info = inspect_bytes(&bytes).unwrap();
            assert_eq!(info.format, format);
            assert_eq!(info.manifest.artifact_key.as_str(), "network-core");
        }
    }

    #[test]
    fn finds_the_manifest_in_a_single_top_level_folder() {
        let zip = zip_bytes(&[
            ("net/", b""),
            ("net/manifest.json", br#"{"stack_name":"net"}"#),
            ("net/main.tf", b""),
        ]);
        assert_eq!(inspect_bytes(&zip).unwrap().manifest_path, "net/manifest.json");
        let tar = tar_bytes(&[("net/main.tf", b""), ("net/manifest.yml", b"stack_name: net")]);
        assert_eq!(inspect_bytes(&tar).unwrap().manifest_path, "net/manifest.yml");
    }

    #[test]
    fn ignores_manifests_nested_in_one_of_several_folders() {
        let tar = tar_bytes(&[("a/manifest.yaml", MANIFEST), ("b/main.tf", b"")]);
        assert!(matches!(inspect_bytes(&tar), Err(PackageError::NoManifest)));
        let tar = tar_bytes(&[("README", b""), ("a/manifest.yaml", MANIFEST)]);
        assert!(matches!(inspect_bytes(&tar), Err(PackageError::NoManifest)));
    }

    #[test]
    fn rejects_two_manifests() {
        let zip = zip_bytes(&[("manifest.yaml", MANIFEST), ("manifest.json", b"{}")]);
        let Err(PackageError::MultipleManifests(names)) = inspect_bytes(&zip) else { panic!() };
        assert_eq!(names, ["manifest.yaml", "manifest.json"]);
    }

    #[test]
    fn rejects_non_archives_and_truncation() {
        assert!(matches!(inspect_bytes(b"hello world"), Err(PackageError::NotAnArchive)));
        assert!(matches!(inspect_bytes(b""), Err(PackageError::NotAnArchive)));
        let tgz = gzip(&tar_bytes(&[("manifest.yaml", MANIFEST)]));
        assert!(matches!(inspect_bytes(&tgz[..tgz.len() / 2]), Err(PackageError::Corrupt { .. })));
        let zip = zip_bytes(&[("manifest.yaml", MANIFEST)]);
        assert!(matches!(inspect_bytes(&zip[..zip.len() - 30]), Err(PackageError::Corrupt { .. })));
        // Cut inside the data of the entry after the manifest.
        let tar = tar_bytes(&[("manifest.yaml", MANIFEST), ("main.tf", &[b'x'; 4096])]);
        let Err(PackageError::Corrupt { detail, .. }) = inspect_bytes(&tar[..tar.len() - 2048]) else {
            panic!()
        };
        assert_eq!(detail, "main.tf runs past the end");
    }

    #[test]
    fn limits_entries_and_manifest_size() {
        let limits = PackageLimits { max_entries: 3, max_manifest_bytes: 64, max_expansion_ratio: 200 };
        let mut f = tempfile::NamedTempFile::new().unwrap();
        let many: Vec<(String, &[u8])> = (0..5).map(|i| (format!("f{i}"), &b""[..])).collect();
        let refs: Vec<(&str, &[u8])> = many.iter().map(|(n, d)| (n.as_str(), *d)).collect();
        f.write_all(&zip_bytes(&refs)).unwrap();
        assert!(matches!(inspect(f.path(), &limits), Err(PackageError::TooManyEntries { limit: 3 })));

        let big = format!("stack_name: x\ndescription: {}\n", "y".repeat(100));
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(&zip_bytes(&[("manifest.yaml", big.as_bytes())])).unwrap();
        assert!(matches!(inspect(f.path(), &limits), Err(PackageError::ManifestTooLarge { .. })));
    }

    #[test]
    fn cuts_off_gzip_bombs() {
        let zeros = vec![0u8; 8 << 20];
        let tgz = gzip(&tar_bytes(&[("manifest.yaml", MANIFEST), ("zeros", &zeros)]));
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(&tgz).unwrap();
        let limits = PackageLimits { max_expansion_ratio: 10, ..Default::default() };
        assert!(matches!(inspect(f.path(), &limits), Err(PackageError::ExpansionTooLarge { .. })));
    }

    #[test]
    fn surfaces_manifest_problems_with_the_path() {
        let tar = tar_bytes(&[("manifest.yaml", b"depends_on: 3")]);
        let Err(PackageError::InvalidManifest { path, source: ManifestError::Fields(p) }) =
            inspect_bytes(&tar)
        else {
            panic!()
        };
        assert_eq!(path, "manifest.yaml");
        assert_eq!(p.len(), 2);
    }
}
