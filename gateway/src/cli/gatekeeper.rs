//! `countersign gatekeeper …`: Gatekeeper's `gator` checks without a cluster.
//!
//! - `verify PATH...` — runs Suite files like `gator verify` (Rego engine): Go-test-style
//!   output, `-v` for every test and case, `--run REGEX` to filter (`TEST//CASE`).
//! - `test -f FILE|DIR...` — reviews manifests like `gator test`: every ConstraintTemplate
//!   and Constraint among the inputs applies to every object; text, JSON or YAML output.
//!
//! Exit codes: **0** every case passed / no `deny` violation; **1** a case failed / a `deny`
//! violation was found (`warn` and `dryrun` ones are printed but pass); **2** usage or
//! input error (missing file, invalid YAML, a template that does not compile in `test`).

use std::{
    io::{IsTerminal, Read, Write},
    path::PathBuf,
    process::ExitCode,
};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand, ValueEnum};
use countersign_gatekeeper::{manifest, suite};

/// Exit code: all suites passed, or no `deny` violation.
const EXIT_OK: u8 = 0;
/// Exit code: a test or case failed, or a `deny` violation was found.
const EXIT_FAILED: u8 = 1;
/// Exit code: usage or input error; nothing was checked.
const EXIT_ERROR: u8 = 2;
/// Largest manifest stream read from standard input: the bound of an input file.
const STDIN_BYTES_MAX: u64 = manifest::INPUT_BYTES_MAX;

#[derive(Debug, Subcommand)]
pub enum GatekeeperCommand {
    /// Run Gatekeeper Suite files (`kind: Suite`) like `gator verify`.
    Verify(VerifyArgs),
    /// Review manifests against the templates and constraints among them, like `gator test`.
    Test(TestArgs),
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Suite file, directory (its YAML files), or `DIR/...` (every folder below).
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<String>,
    /// Print every test and case, not only failures.
    #[arg(short, long)]
    pub verbose: bool,
    /// Only run tests and cases whose names match: `REGEX` (test or case name) or
    /// `TEST_REGEX//CASE_REGEX`.
    #[arg(short = 'r', long = "run", value_name = "REGEX")]
    pub run: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// `apiVersion/Kind namespace/name: ["constraint"] Message: "..."` lines.
    Default,
    Json,
    Yaml,
}

#[derive(Debug, Args)]
pub struct TestArgs {
    /// A manifest file (.yaml, .yml, .json) or a directory of them; repeatable. `-` reads
    /// standard input; without any `-f`, standard input is read when it is not a terminal.
    #[arg(short = 'f', long = "filename", value_name = "FILE|DIR")]
    pub filenames: Vec<PathBuf>,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value = "default")]
    pub output: OutputFormat,
    /// Print only violations of `deny` constraints.
    #[arg(long)]
    pub deny_only: bool,
}

/// Runs a `gatekeeper` command; errors print on stderr and exit 2.
pub fn run(command: GatekeeperCommand) -> ExitCode {
    let result = match command {
        GatekeeperCommand::Verify(args) => verify(&args),
        GatekeeperCommand::Test(args) => test(&args),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

fn verify(args: &VerifyArgs) -> Result<u8> {
    let filter = suite::Filter::parse(args.run.as_deref().unwrap_or(""))?;
    let report = suite::verify(&args.paths, &filter).context("listing test files")?;
    if report.counts().suites == 0 {
        // gator passes silently here; say why nothing ran (stdout stays gator's).
        eprintln!(
            "note: no Suite file (kind: Suite, test.gatekeeper.sh) found in {}; a directory is \
             read without its sub-folders, DIR/... reads them all",
            args.paths.join(", ")
        );
    }
    let mut out = std::io::stdout().lock();
    out.write_all(report.render(args.verbose).as_bytes())?;
    out.flush()?;
    if report.passed() {
        Ok(EXIT_OK)
    } else {
        Ok(EXIT_FAILED)
    }
}

fn test(args: &TestArgs) -> Result<u8> {
    let stdin_path = PathBuf::from("-");
    let mut objects = Vec::new();
    let (files, read_stdin): (Vec<PathBuf>, bool) = if args.filenames.is_empty() {
        (Vec::new(), !std::io::stdin().is_terminal())
    } else {
        let files: Vec<PathBuf> = args
            .filenames
            .iter()
            .filter(|path| **path != stdin_path)
            .cloned()
            .collect();
        let read_stdin = files.len() != args.filenames.len();
        (files, read_stdin)
    };
    objects.extend(manifest::read_inputs(&files)?);
    if read_stdin {
        let mut text = String::new();
        std::io::stdin()
            .take(STDIN_BYTES_MAX + 1)
            .read_to_string(&mut text)
            .context("reading standard input")?;
        if text.len() as u64 > STDIN_BYTES_MAX {
            bail!(
                "standard input is larger than {STDIN_BYTES_MAX} bytes; pass the manifests as files with -f"
            );
        }
        objects.extend(manifest::read_stream(&stdin_path, &text)?);
    }
    if objects.is_empty() {
        bail!("no input data identified (give manifests with -f FILE|DIR)");
    }
    let report = manifest::test(&objects)?;
    let format = match args.output {
        OutputFormat::Default => manifest::OutputFormat::Text,
        OutputFormat::Json => manifest::OutputFormat::Json,
        OutputFormat::Yaml => manifest::OutputFormat::Yaml,
    };
    let mut rendered = report.render(format, args.deny_only);
    // gator prints JSON without a final newline; a shell prompt after it reads better.
    if format == manifest::OutputFormat::Json {
        rendered.push('\n');
    }
    let mut out = std::io::stdout().lock();
    out.write_all(rendered.as_bytes())?;
    out.flush()?;
    if report.has_deny() {
        Ok(EXIT_FAILED)
    } else {
        Ok(EXIT_OK)
    }
}
