//! `countersign eval`: one-off queries against bundles, with `opa eval`'s output shape and
//! exit codes (0 ok; 2 on an error; 1 with `--fail` on an undefined result or with
//! `--fail-defined` on a defined one).

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use regorus::Value;

use crate::policy::{
    Bundle, LoadOptions, Module, SignaturePolicy,
    signing::{SigningAlgorithm, VerificationConfig},
};

/// An input document larger than this is refused (the bundle has its own bounds).
const INPUT_BYTES_MAX: u64 = 64 * 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EvalFormat {
    /// OPA's `{"result": [{"expressions": [{"value", "text", "location"}], "bindings"}]}`.
    Json,
    /// The value alone for a single expression without bindings; otherwise the JSON result.
    Pretty,
}

#[derive(Debug, Args)]
pub struct EvalArgs {
    /// A bundle directory, a `.tar.gz` bundle, a `.rego` file or a JSON/YAML data file
    /// (mounted at the root of `data`). Repeatable.
    #[arg(short = 'd', long = "data", value_name = "PATH")]
    pub data: Vec<PathBuf>,
    /// A bundle directory or `.tar.gz` (as `-d`; accepted for `opa eval -b` habits).
    #[arg(short = 'b', long = "bundle", value_name = "PATH")]
    pub bundles: Vec<PathBuf>,
    /// Input document (JSON or YAML).
    #[arg(short = 'i', long = "input", value_name = "FILE")]
    pub input: Option<PathBuf>,
    #[arg(short = 'f', long, value_enum, default_value = "json")]
    pub format: EvalFormat,
    /// Rego v0 for modules whose version no manifest sets.
    #[arg(long)]
    pub v0_compatible: bool,
    /// Exit 1 when the result is undefined.
    #[arg(long, conflicts_with = "fail_defined")]
    pub fail: bool,
    /// Exit 1 when the result is defined.
    #[arg(long)]
    pub fail_defined: bool,
    /// Public key (PEM) that must have signed the bundles' `.signatures.json`.
    #[arg(long, value_name = "FILE")]
    pub verification_key: Option<PathBuf>,
    /// Algorithm of --verification-key: RS256 or ES256.
    #[arg(long, default_value = "RS256", requires = "verification_key")]
    pub verification_alg: String,
    /// Scope the signature must carry.
    #[arg(long, requires = "verification_key")]
    pub scope: Option<String>,
    /// Load signed bundles without checking their signature.
    #[arg(long, conflicts_with = "verification_key")]
    pub skip_verify: bool,
    /// The Rego query, e.g. `data.countersign.transfer.decision`.
    pub query: String,
}

pub fn run(args: EvalArgs) -> ExitCode {
    match evaluate(&args) {
        Ok(results) => {
            let defined = !results.result.is_empty();
            if let Err(error) = print_results(&results, args.format) {
                eprintln!("error: {error:#}");
                return ExitCode::from(2);
            }
            if (args.fail && !defined) || (args.fail_defined && defined) {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(error) => {
            let message = format!("{error:#}");
            match args.format {
                // As `opa eval --format json`: errors are part of the output document.
                EvalFormat::Json => println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({
                        "errors": [{ "message": message }]
                    }))
                    .expect("error document serializes")
                ),
                EvalFormat::Pretty => eprintln!("error: {message}"),
            }
            ExitCode::from(2)
        }
    }
}

fn evaluate(args: &EvalArgs) -> Result<regorus::QueryResults> {
    let options = load_options(args)?;
    let mut bundles = Vec::with_capacity(args.data.len() + args.bundles.len());
    for path in &args.data {
        bundles.push(load_path(path, &options)?);
    }
    for path in &args.bundles {
        bundles.push(Bundle::load_with(path, &options)?);
    }
    let mut engine = regorus::Engine::new();
    if !bundles.is_empty() {
        let bundle = Bundle::merge(bundles)?;
        // All modules, tests included: `opa eval -d` loads every file it is given.
        for module in &bundle.modules {
            engine.set_rego_v0(!module.rego_v1);
            engine
                .add_policy(module.path.clone(), module.source.clone())
                .map_err(|error| anyhow::anyhow!("{error}"))?;
        }
        engine
            .add_data(Value::from(bundle.data))
            .map_err(|error| anyhow::anyhow!("{error}"))?;
    }
    engine.set_rego_v0(args.v0_compatible);
    if let Some(path) = &args.input {
        engine.set_input(Value::from(read_document(path)?));
    }
    engine
        .eval_query(args.query.clone(), false)
        .map_err(|error| anyhow::anyhow!("{error}"))
}

fn load_options(args: &EvalArgs) -> Result<LoadOptions> {
    let signatures = match &args.verification_key {
        Some(path) => {
            let pem = std::fs::read(path)
                .with_context(|| format!("cannot read verification key {}", path.display()))?;
            let algorithm = SigningAlgorithm::parse(&args.verification_alg)?;
            SignaturePolicy::Verify(VerificationConfig::new(
                &pem,
                algorithm,
                None,
                args.scope.clone(),
            )?)
        }
        None if args.skip_verify => SignaturePolicy::Skip,
        None => SignaturePolicy::RefuseSigned,
    };
    Ok(LoadOptions {
        v0_compatible: args.v0_compatible,
        signatures,
    })
}

/// A `-d` path: a bundle (directory or archive), a single module, or a data document.
fn load_path(path: &Path, options: &LoadOptions) -> Result<Bundle> {
    let name = path.to_string_lossy();
    if path.is_file() && name.ends_with(".rego") {
        let source = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        // Parsed here so a syntax error is reported with its location, as for bundles.
        let mut parser = regorus::Engine::new();
        parser.set_rego_v0(options.v0_compatible);
        parser
            .add_policy(name.clone().into_owned(), source.clone())
            .map_err(|error| anyhow::anyhow!("{error}"))?;
        return Ok(Bundle {
            root: path.to_owned(),
            revision: String::new(),
            manifest: Default::default(),
            modules: vec![Module {
                path: name.into_owned(),
                source,
                rego_v1: !options.v0_compatible,
            }],
            data: serde_json::Value::Object(Default::default()),
        });
    }
    if path.is_file()
        && (name.ends_with(".json") || name.ends_with(".yaml") || name.ends_with(".yml"))
    {
        let document = read_document(path)?;
        if !document.is_object() {
            bail!("{}: a data file must hold an object", path.display());
        }
        return Ok(Bundle {
            root: path.to_owned(),
            revision: String::new(),
            manifest: Default::default(),
            modules: Vec::new(),
            data: document,
        });
    }
    Ok(Bundle::load_with(path, options)?)
}

/// A JSON (or, failing that, YAML) document, with the location of a syntax error.
fn read_document(path: &Path) -> Result<serde_json::Value> {
    let metadata =
        std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    if metadata.len() > INPUT_BYTES_MAX {
        bail!("{} is larger than {INPUT_BYTES_MAX} bytes", path.display());
    }
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let name = path.to_string_lossy();
    if name.ends_with(".yaml") || name.ends_with(".yml") {
        return serde_norway::from_slice(&bytes).map_err(|error| {
            let (line, column) = error
                .location()
                .map_or((0, 0), |location| (location.line(), location.column()));
            anyhow::anyhow!("{}:{line}:{column}: {error}", path.display())
        });
    }
    serde_json::from_slice(&bytes).map_err(|error| {
        anyhow::anyhow!(
            "{}:{}:{}: {error}",
            path.display(),
            error.line(),
            error.column()
        )
    })
}

fn print_results(results: &regorus::QueryResults, format: EvalFormat) -> Result<()> {
    let document = serde_json::to_value(results).context("cannot encode the result")?;
    match format {
        EvalFormat::Json => println!("{}", serde_json::to_string_pretty(&document)?),
        EvalFormat::Pretty => {
            let single = match results.result.as_slice() {
                [only]
                    if only.expressions.len() == 1
                        && document["result"][0].get("bindings").is_none() =>
                {
                    Some(&document["result"][0]["expressions"][0]["value"])
                }
                _ => None,
            };
            match (results.result.is_empty(), single) {
                (true, _) => println!("undefined"),
                (false, Some(value)) => println!("{}", serde_json::to_string_pretty(value)?),
                (false, None) => println!("{}", serde_json::to_string_pretty(&document)?),
            }
        }
    }
    Ok(())
}
