//! `countersign bundle build`: writes a `.tar.gz` bundle as `opa build -b` lays it out
//! (`/data.json`, the modules, `/.signatures.json` when signing, `/.manifest`).

use std::{path::PathBuf, process::ExitCode};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};

use crate::policy::{
    Bundle, LoadOptions, SignaturePolicy,
    signing::{SigningAlgorithm, SigningConfig},
};

#[derive(Debug, Subcommand)]
pub enum BundleCommand {
    /// Build a `.tar.gz` bundle from bundle directories (or archives).
    Build(BuildArgs),
}

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Bundle roots: directories laid out as OPA bundles (or `.tar.gz` bundles).
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Output file.
    #[arg(short = 'o', long, default_value = "bundle.tar.gz")]
    pub output: PathBuf,
    /// Revision written to `.manifest` (default: the manifest's own revision).
    #[arg(short = 'r', long)]
    pub revision: Option<String>,
    /// Private key (PEM) to sign the bundle with; writes `.signatures.json`.
    #[arg(long, value_name = "FILE")]
    pub signing_key: Option<PathBuf>,
    /// RS256 or ES256.
    #[arg(long, default_value = "RS256", requires = "signing_key")]
    pub signing_alg: String,
    /// Key id for the JWT header `kid`.
    #[arg(long, requires = "signing_key")]
    pub signing_key_id: Option<String>,
    /// JSON file of extra claims for the signature (e.g. `{"scope": "write"}`).
    #[arg(long, value_name = "FILE", requires = "signing_key")]
    pub claims_file: Option<PathBuf>,
    /// Rego v0 for modules whose version no manifest sets.
    #[arg(long)]
    pub v0_compatible: bool,
}

pub fn run(command: BundleCommand) -> Result<ExitCode> {
    match command {
        BundleCommand::Build(args) => build(&args),
    }
}

fn build(args: &BuildArgs) -> Result<ExitCode> {
    let options = LoadOptions {
        v0_compatible: args.v0_compatible,
        // Inputs are sources; a signature they carry is replaced by ours (or dropped).
        signatures: SignaturePolicy::Skip,
    };
    let mut bundles = Vec::with_capacity(args.paths.len());
    for path in &args.paths {
        bundles.push(Bundle::load_with(path, &options)?);
    }
    let bundle = Bundle::merge(bundles)?;
    let revision = args
        .revision
        .clone()
        .unwrap_or_else(|| bundle.manifest.revision.clone());
    let signing = match &args.signing_key {
        None => None,
        Some(path) => {
            let pem = std::fs::read(path)
                .with_context(|| format!("cannot read signing key {}", path.display()))?;
            let claims = match &args.claims_file {
                None => None,
                Some(path) => {
                    let text = std::fs::read(path)
                        .with_context(|| format!("cannot read claims file {}", path.display()))?;
                    match serde_json::from_slice(&text)
                        .with_context(|| format!("claims file {}", path.display()))?
                    {
                        serde_json::Value::Object(map) => Some(map),
                        _ => bail!("claims file {} must hold a JSON object", path.display()),
                    }
                }
            };
            Some(SigningConfig::new(
                &pem,
                SigningAlgorithm::parse(&args.signing_alg)?,
                args.signing_key_id.clone(),
                claims,
            )?)
        }
    };
    let archive = bundle.to_archive(&revision, signing.as_ref())?;
    std::fs::write(&args.output, &archive)
        .with_context(|| format!("cannot write {}", args.output.display()))?;
    println!(
        "wrote {} ({} modules, revision {:?}{})",
        args.output.display(),
        bundle.modules.len(),
        revision,
        if signing.is_some() { ", signed" } else { "" }
    );
    Ok(ExitCode::SUCCESS)
}
