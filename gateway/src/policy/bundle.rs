//! The one bundle loader, used by `serve`, `test` and `eval`: a directory or a `.tar.gz`
//! laid out as an OPA bundle.
//!
//! * `.manifest`: `revision`, `roots`, `rego_version`, `file_rego_versions` (glob → version,
//!   matched against the bundle path as OPA does, with or without the leading `/`) and
//!   `metadata`.
//! * `data.json`, `data.yaml`, `data.yml` are mounted at their directory path
//!   (`a/b/data.json` → `data.a.b`); two files may fill the same object but never the same key.
//! * Every `.rego` file is parsed on load (Rego v1 unless the manifest, a `file_rego_versions`
//!   entry or `v0_compatible` says v0), so a syntax error names `file:row:col`; data errors
//!   name `file:line:column` too.
//! * Every package and every data path must lie under the manifest `roots`.
//! * `.signatures.json` is verified as OPA does when verification is configured
//!   (see `signing.rs`); every other file of the bundle must then be listed in it.
//!
//! Archives are never unpacked to disk: entries are read into memory with bounds on their
//! count and total size (a gzip bomb stops at the bound), and a path with `..` is refused.

use std::{
    collections::BTreeMap,
    io::Read,
    path::{Path, PathBuf},
};

use regorus::{Engine, Value};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::{
    PolicyError,
    signing::{self, SIGNATURES_FILE, SignatureError, SigningConfig, VerificationConfig},
};

/// A bundle bigger than this is refused: policies are code, not data dumps.
const BUNDLE_FILES_MAX: usize = 2_000;
const BUNDLE_BYTES_MAX: u64 = 64 * 1024 * 1024;
/// The manifest file at the bundle root.
const MANIFEST_FILE: &str = ".manifest";

/// One Rego source file of a bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Module {
    /// Path relative to the bundle root, with `/` separators.
    pub path: String,
    pub source: String,
    /// Rego v1 (the default) or v0 (from the manifest or `--v0-compatible`).
    pub rego_v1: bool,
}

impl Module {
    pub fn v1(path: impl Into<String>, source: impl Into<String>) -> Module {
        Module {
            path: path.into(),
            source: source.into(),
            rego_v1: true,
        }
    }

    /// OPA's convention: test modules end in `_test.rego`; they never serve decisions.
    pub fn is_test(&self) -> bool {
        self.path.ends_with("_test.rego")
    }
}

/// What to do with `.signatures.json`.
#[derive(Debug, Clone, Default)]
pub enum SignaturePolicy {
    /// Ignore it (`countersign test`, as `opa test`; `eval --skip-verify`).
    #[default]
    Skip,
    /// No key configured: an unsigned bundle loads, a signed one is refused (as OPA does
    /// without a verification key) — someone meant it to be checked.
    RefuseSigned,
    /// Require a valid signature over every file.
    Verify(VerificationConfig),
}

/// How a bundle is read.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Rego v0 for modules whose version neither the manifest nor `file_rego_versions` sets.
    pub v0_compatible: bool,
    pub signatures: SignaturePolicy,
}

impl LoadOptions {
    /// The options `serve` (and every reload) reads its bundle with: `[policy]`
    /// `v0_compatible` and, with `verification_key`, a required signature.
    pub fn from_config(config: &crate::config::PolicyConfig) -> Result<LoadOptions, PolicyError> {
        let signatures = match &config.verification_key {
            None => SignaturePolicy::RefuseSigned,
            Some(path) => {
                let pem = std::fs::read(path).map_err(|error| read_error(path, &error))?;
                let algorithm = signing::SigningAlgorithm::parse(
                    config.verification_alg.as_deref().unwrap_or("RS256"),
                )?;
                SignaturePolicy::Verify(VerificationConfig::new(
                    &pem,
                    algorithm,
                    config.key_id.clone(),
                    config.scope.clone(),
                )?)
            }
        };
        Ok(LoadOptions {
            v0_compatible: config.v0_compatible,
            signatures,
        })
    }
}

/// The bundle `.manifest`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct Manifest {
    #[serde(default)]
    pub revision: String,
    /// `None`: the bundle owns all of `data` (OPA's default root `""`).
    #[serde(default)]
    pub roots: Option<Vec<String>>,
    #[serde(default)]
    pub rego_version: Option<i64>,
    #[serde(default)]
    pub file_rego_versions: BTreeMap<String, i64>,
    #[serde(default)]
    pub metadata: serde_json::Map<String, serde_json::Value>,
}

impl Manifest {
    /// The roots with surrounding `/` trimmed; `[""]` (everything) when none are declared.
    pub fn normalized_roots(&self) -> Vec<String> {
        match &self.roots {
            None => vec![String::new()],
            Some(roots) => roots
                .iter()
                .map(|root| root.trim_matches('/').to_owned())
                .collect(),
        }
    }
}

/// A policy bundle: Rego modules, the merged data document and the manifest.
#[derive(Debug, Clone)]
pub struct Bundle {
    /// The directory or archive it was read from.
    pub root: PathBuf,
    /// `.manifest` revision, or a content hash when the manifest has none.
    pub revision: String,
    pub manifest: Manifest,
    pub modules: Vec<Module>,
    /// All data documents merged at their directory paths.
    pub data: serde_json::Value,
}

/// A file read from a bundle: its path relative to the root (no leading `/`) and content.
type BundleFile = (String, Vec<u8>);

impl Bundle {
    /// Loads a directory or `.tar.gz` bundle with the defaults: Rego v1, signatures not
    /// checked. Serving uses [`Bundle::load_with`] with the configured verification.
    pub fn load(root: &Path) -> Result<Bundle, PolicyError> {
        Bundle::load_with(root, &LoadOptions::default())
    }

    /// Loads the configured bundle as `serve` does (see [`LoadOptions::from_config`]).
    pub fn load_configured(config: &crate::config::PolicyConfig) -> Result<Bundle, PolicyError> {
        Bundle::load_with(&config.bundle, &LoadOptions::from_config(config)?)
    }

    pub fn load_with(root: &Path, options: &LoadOptions) -> Result<Bundle, PolicyError> {
        let read_all = !matches!(options.signatures, SignaturePolicy::Skip);
        let (files, is_archive) = if root.is_dir() {
            (read_directory(root, read_all)?, false)
        } else {
            (read_archive(root)?, true)
        };
        let display = |name: &str| {
            if is_archive {
                format!("{}:/{name}", root.display())
            } else {
                root.join(name).display().to_string()
            }
        };
        Bundle::from_files(root, files, options, &display)
    }

    fn from_files(
        root: &Path,
        mut files: Vec<BundleFile>,
        options: &LoadOptions,
        display: &dyn Fn(&str) -> String,
    ) -> Result<Bundle, PolicyError> {
        files.sort_by(|a, b| a.0.cmp(&b.0));
        let signatures = files
            .iter()
            .position(|(name, _)| name == SIGNATURES_FILE)
            .map(|index| files.remove(index).1);
        match (&options.signatures, signatures) {
            (SignaturePolicy::Skip, _) | (SignaturePolicy::RefuseSigned, None) => {}
            (SignaturePolicy::RefuseSigned, Some(_)) => return Err(SignatureError::NoKey.into()),
            (SignaturePolicy::Verify(_), None) => return Err(SignatureError::Unsigned.into()),
            (SignaturePolicy::Verify(config), Some(signatures)) => {
                signing::verify(&signatures, &files, config)?;
            }
        }

        let invalid = |name: &str, message: &dyn std::fmt::Display| {
            PolicyError::Invalid(format!("{}: {message}", display(name)))
        };
        let mut manifest = Manifest::default();
        if let Some((_, content)) = files.iter().find(|(name, _)| name == MANIFEST_FILE) {
            manifest = serde_json::from_slice(content).map_err(|error| {
                PolicyError::Invalid(format!(
                    "{}:{}:{}: {error}",
                    display(MANIFEST_FILE),
                    error.line(),
                    error.column()
                ))
            })?;
        }
        if let Some(version) = manifest.rego_version
            && !(0..=1).contains(&version)
        {
            return Err(invalid(
                MANIFEST_FILE,
                &format!("unknown bundle rego_version {version}"),
            ));
        }
        let roots = manifest.normalized_roots();
        for (index, first) in roots.iter().enumerate() {
            for second in &roots[index + 1..] {
                if root_contains(first, second) || root_contains(second, first) {
                    return Err(invalid(
                        MANIFEST_FILE,
                        &format!("manifest has overlapped roots: '{first}' and '{second}'"),
                    ));
                }
            }
        }
        let version_globs =
            compile_version_globs(&manifest).map_err(|message| invalid(MANIFEST_FILE, &message))?;
        let default_v1 = match manifest.rego_version {
            Some(version) => version == 1,
            None => !options.v0_compatible,
        };

        let mut hasher = Sha256::new();
        let mut modules = Vec::new();
        let mut data = serde_json::Value::Object(Default::default());
        // One parser for the whole bundle: each module is parsed as it is added, so syntax
        // errors surface here with their location, not on the first decision.
        let mut parser = Engine::new();
        for (name, content) in &files {
            let base = name.rsplit('/').next().unwrap_or(name);
            let is_rego = base.ends_with(".rego");
            let is_json = base == "data.json";
            let is_yaml = base == "data.yaml" || base == "data.yml";
            if !(is_rego || is_json || is_yaml || name == MANIFEST_FILE) {
                continue;
            }
            hasher.update((name.len() as u64).to_be_bytes());
            hasher.update(name.as_bytes());
            hasher.update((content.len() as u64).to_be_bytes());
            hasher.update(content);
            if is_rego {
                let source = String::from_utf8(content.clone())
                    .map_err(|_| invalid(name, &"not valid UTF-8"))?;
                let rego_v1 = match version_for(&version_globs, name) {
                    Some(version) => version == 1,
                    None => default_v1,
                };
                parser.set_rego_v0(!rego_v1);
                let package = parser
                    .add_policy(name.clone(), source.clone())
                    .map_err(|error| {
                        PolicyError::Invalid(located_message(&display(name), &error.to_string()))
                    })?;
                let package_path = package
                    .strip_prefix("data.")
                    .unwrap_or(&package)
                    .replace('.', "/");
                if !roots.iter().any(|root| root_contains(root, &package_path)) {
                    return Err(invalid(
                        name,
                        &format!(
                            "manifest roots {roots:?} do not permit package '{}'",
                            package_path.replace('/', ".")
                        ),
                    ));
                }
                modules.push(Module {
                    path: name.clone(),
                    source,
                    rego_v1,
                });
            } else if is_json || is_yaml {
                let document: serde_json::Value = if is_json {
                    serde_json::from_slice(content).map_err(|error| {
                        PolicyError::Invalid(format!(
                            "{}:{}:{}: {error}",
                            display(name),
                            error.line(),
                            error.column()
                        ))
                    })?
                } else {
                    serde_norway::from_slice(content).map_err(|error| {
                        let (line, column) = error
                            .location()
                            .map_or((0, 0), |location| (location.line(), location.column()));
                        PolicyError::Invalid(format!("{}:{line}:{column}: {error}", display(name)))
                    })?
                };
                let directory: Vec<&str> = name
                    .rsplit_once('/')
                    .map(|(directory, _)| directory.split('/').collect())
                    .unwrap_or_default();
                insert_data(&mut data, &directory, document)
                    .map_err(|message| invalid(name, &message))?;
            }
        }
        check_data_roots(&data, "", &roots)
            .map_err(|message| PolicyError::Invalid(format!("{}: {message}", root.display())))?;

        let content_hash = hex::encode(hasher.finalize());
        let revision = if manifest.revision.is_empty() {
            format!("sha256:{}", &content_hash[..16])
        } else {
            manifest.revision.clone()
        };
        Ok(Bundle {
            root: root.to_owned(),
            revision,
            manifest,
            modules,
            data,
        })
    }

    /// Merges several bundles (several `-d` paths, or `bundle build a/ b/`) as OPA does:
    /// modules side by side, data merged without conflicts, roots combined, no revision.
    pub fn merge(mut bundles: Vec<Bundle>) -> Result<Bundle, PolicyError> {
        if bundles.len() == 1 {
            return Ok(bundles.remove(0));
        }
        let mut result = Bundle {
            root: PathBuf::new(),
            revision: String::new(),
            manifest: Manifest::default(),
            modules: Vec::new(),
            data: serde_json::Value::Object(Default::default()),
        };
        let mut roots = Some(Vec::new());
        for bundle in bundles {
            for module in bundle.modules {
                if result.modules.iter().any(|other| other.path == module.path) {
                    return Err(PolicyError::Invalid(format!(
                        "module {} is in more than one bundle ({})",
                        module.path,
                        bundle.root.display()
                    )));
                }
                result.modules.push(module);
            }
            if let serde_json::Value::Object(map) = bundle.data {
                for (key, value) in map {
                    insert_data(&mut result.data, &[key.as_str()], value).map_err(|message| {
                        PolicyError::Invalid(format!("{}: {message}", bundle.root.display()))
                    })?;
                }
            }
            match (&mut roots, bundle.manifest.roots) {
                (Some(all), Some(these)) => all.extend(these),
                _ => roots = None,
            }
        }
        result.manifest.roots = roots;
        result.revision = "merged".to_owned();
        Ok(result)
    }

    /// A fresh interpreter with the serving modules (not `*_test.rego`) and the data loaded.
    pub fn interpreter(&self) -> Result<Engine, PolicyError> {
        let mut engine = Engine::new();
        for module in self.modules.iter().filter(|module| !module.is_test()) {
            // The Rego version is a parser setting, so it is set per module as it is added.
            engine.set_rego_v0(!module.rego_v1);
            engine
                .add_policy(module.path.clone(), module.source.clone())
                .map_err(|error| PolicyError::Compile(error.to_string()))?;
        }
        engine
            .add_data(Value::from(self.data.clone()))
            .map_err(|error| PolicyError::Compile(error.to_string()))?;
        Ok(engine)
    }

    /// The `.manifest` that `bundle build` writes: the revision, the roots, the global Rego
    /// version and, per file, every module whose version differs from it (OPA's layout).
    pub fn archive_manifest(&self, revision: &str) -> serde_json::Value {
        let global_v1 = self
            .manifest
            .rego_version
            .is_none_or(|version| version == 1);
        let mut manifest = serde_json::Map::new();
        manifest.insert("revision".to_owned(), revision.into());
        manifest.insert("roots".to_owned(), self.manifest.normalized_roots().into());
        manifest.insert("rego_version".to_owned(), i64::from(global_v1).into());
        let per_file: serde_json::Map<String, serde_json::Value> = self
            .modules
            .iter()
            .filter(|module| module.rego_v1 != global_v1)
            .map(|module| {
                (
                    format!("/{}", module.path),
                    i64::from(module.rego_v1).into(),
                )
            })
            .collect();
        if !per_file.is_empty() {
            manifest.insert("file_rego_versions".to_owned(), per_file.into());
        }
        if !self.manifest.metadata.is_empty() {
            manifest.insert("metadata".to_owned(), self.manifest.metadata.clone().into());
        }
        serde_json::Value::Object(manifest)
    }

    /// Writes the bundle as OPA's `opa build` lays it out: `/data.json`, the modules at their
    /// bundle paths, `/.signatures.json` when signing, then `/.manifest`.
    pub fn to_archive(
        &self,
        revision: &str,
        signing: Option<&SigningConfig>,
    ) -> Result<Vec<u8>, PolicyError> {
        let mut files: Vec<BundleFile> = Vec::with_capacity(self.modules.len() + 2);
        let data = serde_json::to_vec(&self.data).expect("data serializes");
        files.push(("data.json".to_owned(), data));
        for module in &self.modules {
            files.push((module.path.clone(), module.source.clone().into_bytes()));
        }
        let manifest =
            serde_json::to_vec(&self.archive_manifest(revision)).expect("manifest serializes");
        let signatures = match signing {
            Some(config) => {
                let mut signed = files.clone();
                signed.push((MANIFEST_FILE.to_owned(), manifest.clone()));
                Some(signing::sign(&signed, config)?)
            }
            None => None,
        };
        if let Some(signatures) = signatures {
            files.push((SIGNATURES_FILE.to_owned(), signatures));
        }
        files.push((MANIFEST_FILE.to_owned(), manifest));
        write_archive(&files)
    }
}

fn read_error(path: &Path, error: &dyn std::fmt::Display) -> PolicyError {
    PolicyError::Read {
        path: path.to_owned(),
        message: error.to_string(),
    }
}

/// Reads a directory bundle. Only the files the loader uses are read, unless `read_all`
/// (signature checking: every file must be accounted for, as in OPA).
fn read_directory(root: &Path, read_all: bool) -> Result<Vec<BundleFile>, PolicyError> {
    let mut names = Vec::new();
    collect_files(root, root, &mut names).map_err(|error| read_error(root, &error))?;
    if names.len() > BUNDLE_FILES_MAX {
        return Err(PolicyError::TooLarge(format!(
            "more than {BUNDLE_FILES_MAX} files in {}",
            root.display()
        )));
    }
    let read_all = read_all && names.iter().any(|name| name == SIGNATURES_FILE);
    let mut total_bytes = 0_u64;
    let mut files = Vec::new();
    for name in names {
        let base = name.rsplit('/').next().unwrap_or(&name);
        let used = base.ends_with(".rego")
            || matches!(base, "data.json" | "data.yaml" | "data.yml")
            || name == MANIFEST_FILE
            || name == SIGNATURES_FILE;
        if !(used || read_all) {
            continue;
        }
        let path = root.join(&name);
        let content = std::fs::read(&path).map_err(|error| read_error(&path, &error))?;
        total_bytes += content.len() as u64;
        if total_bytes > BUNDLE_BYTES_MAX {
            return Err(PolicyError::TooLarge(format!(
                "more than {BUNDLE_BYTES_MAX} bytes"
            )));
        }
        files.push((name, content));
    }
    Ok(files)
}

/// Regular files below `directory`, as `/`-separated paths relative to `root`. Symbolic
/// links are not followed (as OPA's loader).
fn collect_files(root: &Path, directory: &Path, out: &mut Vec<String>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(directory)? {
        let entry = entry?;
        let path = entry.path();
        let file_type = entry.file_type()?;
        if file_type.is_dir() {
            collect_files(root, &path, out)?;
        } else if file_type.is_file() {
            let relative = path.strip_prefix(root).expect("walked below root");
            let name: Vec<String> = relative
                .components()
                .map(|component| component.as_os_str().to_string_lossy().into_owned())
                .collect();
            out.push(name.join("/"));
        }
        if out.len() > BUNDLE_FILES_MAX {
            return Ok(());
        }
    }
    Ok(())
}

/// Reads a gzipped tarball into memory with bounds on entries and bytes.
fn read_archive(path: &Path) -> Result<Vec<BundleFile>, PolicyError> {
    let file = std::fs::File::open(path).map_err(|error| read_error(path, &error))?;
    // The decompressed stream is cut at the bound (plus room for tar headers), so a gzip
    // bomb costs at most that much memory and then fails as a truncated archive.
    let decoder = flate2::read::GzDecoder::new(file).take(BUNDLE_BYTES_MAX * 2);
    let mut archive = tar::Archive::new(decoder);
    let entries = archive
        .entries()
        .map_err(|error| read_error(path, &format!("not a .tar.gz bundle: {error}")))?;
    let mut files: Vec<BundleFile> = Vec::new();
    let mut total_bytes = 0_u64;
    for entry in entries {
        let mut entry =
            entry.map_err(|error| read_error(path, &format!("corrupt archive: {error}")))?;
        let entry_type = entry.header().entry_type();
        // Like OPA, only regular files count; directories, links and devices are skipped.
        if !(entry_type.is_file() || entry_type.is_contiguous()) {
            continue;
        }
        let raw_name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let name =
            normalize_archive_path(&raw_name).map_err(|message| read_error(path, &message))?;
        if files.len() >= BUNDLE_FILES_MAX {
            return Err(PolicyError::TooLarge(format!(
                "more than {BUNDLE_FILES_MAX} files in {}",
                path.display()
            )));
        }
        let size = entry.header().size().unwrap_or(u64::MAX);
        total_bytes = total_bytes.saturating_add(size);
        if total_bytes > BUNDLE_BYTES_MAX {
            return Err(PolicyError::TooLarge(format!(
                "more than {BUNDLE_BYTES_MAX} bytes"
            )));
        }
        let mut content = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        entry
            .by_ref()
            .take(size)
            .read_to_end(&mut content)
            .map_err(|error| read_error(path, &format!("{name}: {error}")))?;
        if files.iter().any(|(existing, _)| *existing == name) {
            return Err(read_error(
                path,
                &format!("{name} appears twice in the archive"),
            ));
        }
        files.push((name, content));
    }
    Ok(files)
}

/// `/a/b.rego`, `./a/b.rego` and `a/b.rego` all name `a/b.rego` (OPA writes the leading
/// `/`; the archive is never unpacked, so it cannot escape anywhere). `..` is refused.
fn normalize_archive_path(raw: &str) -> Result<String, String> {
    let mut segments = Vec::new();
    for segment in raw.split('/') {
        match segment {
            "" | "." => {}
            ".." => return Err(format!("archive entry {raw:?} contains `..`")),
            other => segments.push(other),
        }
    }
    if segments.is_empty() {
        return Err(format!("archive entry {raw:?} has no file name"));
    }
    Ok(segments.join("/"))
}

/// Writes `files` as a gzipped tar with OPA's `/`-rooted entry names. The `tar` crate
/// refuses absolute names on purpose, so the ustar name fields are filled in directly.
fn write_archive(files: &[BundleFile]) -> Result<Vec<u8>, PolicyError> {
    let encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut builder = tar::Builder::new(encoder);
    let io_error =
        |error: std::io::Error| PolicyError::Invalid(format!("cannot write archive: {error}"));
    for (name, content) in files {
        let full_name = format!("/{name}");
        let mut header = tar::Header::new_ustar();
        header.set_size(content.len() as u64);
        header.set_mode(0o644);
        // A fixed time keeps builds of the same files byte-identical.
        header.set_mtime(0);
        header.set_entry_type(tar::EntryType::Regular);
        set_ustar_name(&mut header, &full_name)?;
        header.set_cksum();
        builder
            .append(&header, content.as_slice())
            .map_err(io_error)?;
    }
    let encoder = builder.into_inner().map_err(io_error)?;
    encoder.finish().map_err(io_error)
}

fn set_ustar_name(header: &mut tar::Header, name: &str) -> Result<(), PolicyError> {
    let ustar = header.as_ustar_mut().expect("ustar header");
    let bytes = name.as_bytes();
    let too_long = || PolicyError::Invalid(format!("path too long for the archive: {name}"));
    if bytes.len() <= ustar.name.len() {
        ustar.name[..bytes.len()].copy_from_slice(bytes);
        return Ok(());
    }
    // Split at a `/` so that the prefix (155 bytes) and the name (100 bytes) both fit.
    let split = (0..bytes.len())
        .rev()
        .find(|&index| {
            bytes[index] == b'/'
                && index <= ustar.prefix.len()
                && bytes.len() - index - 1 <= ustar.name.len()
        })
        .ok_or_else(too_long)?;
    ustar.prefix[..split].copy_from_slice(&bytes[..split]);
    let rest = &bytes[split + 1..];
    ustar.name[..rest.len()].copy_from_slice(rest);
    Ok(())
}

/// Turns a regorus parse error (`--> file:row:col`, a source excerpt, `error: message`) into
/// `path:row:col: message`, keeping the excerpt on the following lines.
fn located_message(display_path: &str, error: &str) -> String {
    let mut location = None;
    let mut excerpt = Vec::new();
    let mut message = None;
    for line in error.lines() {
        if let Some(rest) = line.trim_start().strip_prefix("--> ") {
            let mut parts = rest.rsplitn(3, ':');
            let column = parts.next().and_then(|part| part.parse::<u32>().ok());
            let row = parts.next().and_then(|part| part.parse::<u32>().ok());
            if let (Some(row), Some(column)) = (row, column) {
                location = Some((row, column));
            }
        } else if let Some(rest) = line.strip_prefix("error: ") {
            message = Some(rest.to_owned());
        } else if line.contains('|') {
            excerpt.push(line);
        }
    }
    match (location, message) {
        (Some((row, column)), Some(message)) => {
            let mut text = format!("{display_path}:{row}:{column}: {message}");
            for line in excerpt {
                text.push('\n');
                text.push_str(line);
            }
            text
        }
        _ => format!("{display_path}: {}", error.trim()),
    }
}

fn compile_version_globs(manifest: &Manifest) -> Result<Vec<(globset::GlobMatcher, i64)>, String> {
    let mut globs = Vec::with_capacity(manifest.file_rego_versions.len());
    for (pattern, version) in &manifest.file_rego_versions {
        if !(0..=1).contains(version) {
            return Err(format!(
                "unknown bundle rego_version {version} for files '{pattern}'"
            ));
        }
        // OPA uses gobwas/glob without separators: `*` also matches `/`.
        let glob = globset::GlobBuilder::new(pattern)
            .literal_separator(false)
            .build()
            .map_err(|error| format!("file_rego_versions pattern {pattern:?}: {error}"))?;
        globs.push((glob.compile_matcher(), *version));
    }
    Ok(globs)
}

/// The first `file_rego_versions` entry matching the module (OPA matches the path as the
/// bundle reader sees it, which has a leading `/` in OPA-built archives; we accept both).
fn version_for(globs: &[(globset::GlobMatcher, i64)], name: &str) -> Option<i64> {
    let rooted = format!("/{name}");
    globs
        .iter()
        .find(|(glob, _)| glob.is_match(&rooted) || glob.is_match(name))
        .map(|(_, version)| *version)
}

/// OPA's `RootPathsContain` for one root: `""` contains everything, otherwise segment-wise
/// prefix (`a/b` contains `a/b/c`, not `a/bc`).
fn root_contains(root: &str, path: &str) -> bool {
    if root.is_empty() {
        return true;
    }
    let root: Vec<&str> = root.split('/').collect();
    let path: Vec<&str> = path.split('/').collect();
    root.len() <= path.len() && root.iter().zip(&path).all(|(a, b)| a == b)
}

/// OPA's check that every data path lies under a root: a path under a root is fine; an
/// object on the way to a root is descended into; anything else is refused.
fn check_data_roots(value: &serde_json::Value, path: &str, roots: &[String]) -> Result<(), String> {
    let trimmed = path.trim_matches('/');
    if roots.iter().any(|root| root_contains(root, trimmed)) {
        return Ok(());
    }
    if let serde_json::Value::Object(map) = value
        && roots.iter().any(|root| root_contains(trimmed, root))
    {
        for (key, child) in map {
            check_data_roots(child, &format!("{trimmed}/{key}"), roots)?;
        }
        return Ok(());
    }
    Err(format!(
        "manifest roots {roots:?} do not permit data at path '/{trimmed}' \
         (hint: check bundle directory structure)"
    ))
}

/// Mounts `document` at `path` inside `data`, merging objects as OPA does: the same key may
/// be filled twice only if both sides are objects.
fn insert_data(
    data: &mut serde_json::Value,
    path: &[&str],
    document: serde_json::Value,
) -> Result<(), String> {
    let Some((last, parents)) = path.split_last() else {
        return match document {
            serde_json::Value::Object(map) => merge_objects(data, map, ""),
            _ => Err("a data document at the bundle root must be a JSON object".to_owned()),
        };
    };
    let mut cursor = data;
    let mut walked = String::new();
    for segment in parents {
        walked.push('/');
        walked.push_str(segment);
        cursor = cursor
            .as_object_mut()
            .ok_or_else(|| format!("data conflict at '{walked}'"))?
            .entry((*segment).to_owned())
            .or_insert_with(|| serde_json::Value::Object(Default::default()));
    }
    walked.push('/');
    walked.push_str(last);
    let object = cursor
        .as_object_mut()
        .ok_or_else(|| format!("data conflict at '{walked}'"))?;
    match (object.get_mut(*last), document) {
        (None, document) => {
            object.insert((*last).to_owned(), document);
            Ok(())
        }
        (Some(existing), serde_json::Value::Object(map)) if existing.is_object() => {
            merge_objects(existing, map, &walked)
        }
        _ => Err(format!("data conflict at '{walked}': defined twice")),
    }
}

fn merge_objects(
    target: &mut serde_json::Value,
    source: serde_json::Map<String, serde_json::Value>,
    walked: &str,
) -> Result<(), String> {
    for (key, value) in source {
        insert_data(target, &[key.as_str()], value)
            .map_err(|message| message.replacen("'/", &format!("'{walked}/"), 1))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_paths_are_normalized_and_dot_dot_refused() {
        assert_eq!(normalize_archive_path("/a/b.rego").unwrap(), "a/b.rego");
        assert_eq!(normalize_archive_path("./data.json").unwrap(), "data.json");
        assert!(normalize_archive_path("/../etc/passwd").is_err());
        assert!(normalize_archive_path("a/../../b").is_err());
    }

    #[test]
    fn roots_contain_by_segment() {
        assert!(root_contains("", "anything/at/all"));
        assert!(root_contains("a/b", "a/b/c"));
        assert!(root_contains("a/b", "a/b"));
        assert!(!root_contains("a/b", "a/bc"));
        assert!(!root_contains("a/b", "a"));
    }

    #[test]
    fn data_merges_objects_and_refuses_conflicts() {
        let mut data = serde_json::json!({});
        insert_data(&mut data, &["a", "b"], serde_json::json!({"x": 1})).unwrap();
        insert_data(&mut data, &["a"], serde_json::json!({"b": {"y": 2}})).unwrap();
        assert_eq!(data, serde_json::json!({"a": {"b": {"x": 1, "y": 2}}}));
        let error = insert_data(&mut data, &["a", "b"], serde_json::json!({"x": 3})).unwrap_err();
        assert!(error.contains("/a/b/x"), "{error}");
    }

    #[test]
    fn regorus_errors_become_path_row_col() {
        let mut engine = Engine::new();
        let error = engine
            .add_policy("p.rego".to_owned(), "package p\n\nallow if {\n".to_owned())
            .unwrap_err()
            .to_string();
        let message = located_message("dir/p.rego", &error);
        assert!(
            message.starts_with("dir/p.rego:"),
            "{message} (from {error})"
        );
        let location: Vec<&str> = message.splitn(4, ':').collect();
        assert!(location[1].parse::<u32>().is_ok() && location[2].parse::<u32>().is_ok());
    }
}
