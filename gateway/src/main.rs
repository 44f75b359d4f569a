//! `countersign`: parses the command line and hands over to the library.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    // Start-up time is measured from here, so the ready line tells the truth.
    let started = std::time::Instant::now();
    countersign::cli::main(started)
}
