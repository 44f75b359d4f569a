//! The real `countersign` binary: the quickstart's printed curl commands work as printed,
//! SIGTERM drains and flushes, and a bad configuration is one clear error naming the key.

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use crate::support::bundle_path;

const BINARY: &str = env!("CARGO_BIN_EXE_countersign");

/// Reads the server's stdout until the curl examples end (the `audit verify` hint line).
fn read_banner(child: &mut Child) -> Vec<String> {
    let stdout = child.stdout.take().expect("piped stdout");
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    loop {
        let line = receiver
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("server did not print its banner; got {lines:#?}"));
        let done = line.starts_with("countersign audit verify");
        lines.push(line);
        if done {
            return lines;
        }
    }
}

/// The `curl` commands in the banner, continuation lines joined.
fn curl_commands(banner: &[String]) -> Vec<String> {
    let mut commands = Vec::new();
    let mut current: Option<String> = None;
    for line in banner {
        if let Some(command) = current.as_mut() {
            command.push(' ');
            command.push_str(line.trim_end_matches('\\').trim());
            if !line.ends_with('\\') {
                commands.push(current.take().unwrap());
            }
        } else if line.starts_with("curl ") {
            if line.ends_with('\\') {
                current = Some(line.trim_end_matches('\\').trim().to_owned());
            } else {
                commands.push(line.clone());
            }
        }
    }
    commands
}

fn run_curl(directory: &Path, command: &str) -> (String, String) {
    let output = Command::new("bash")
        .arg("-c")
        .arg(format!("{command} -w '\\n%{{http_code}}'"))
        .current_dir(directory)
        .output()
        .expect("curl runs");
    let text = String::from_utf8_lossy(&output.stdout).to_string();
    let (body, status) = text.rsplit_once('\n').unwrap_or((&text, ""));
    (status.to_owned(), body.to_owned())
}

fn terminate(child: &mut Child) -> std::process::ExitStatus {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    for _ in 0..300 {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    panic!("server did not exit within 15 s of SIGTERM");
}

#[test]
fn quickstart_curl_commands_work_as_printed_and_sigterm_flushes() {
    let directory = tempfile::TempDir::new().unwrap();
    let mut child = Command::new(BINARY)
        .args([
            "serve",
            "--dev",
            "--listen",
            "127.0.0.1:0",
            "--var",
            "var",
            "--bundle",
        ])
        .arg(bundle_path())
        .current_dir(directory.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let banner = read_banner(&mut child);
    assert!(
        banner[0].starts_with("countersign ready on https://127.0.0.1:")
            && banner[0].contains(" ms "),
        "{banner:#?}"
    );
    let commands = curl_commands(&banner);
    assert_eq!(commands.len(), 3, "{banner:#?}");

    let (status, body) = run_curl(directory.path(), &commands[0]);
    assert_eq!(status, "201", "{body}");
    assert!(body.contains("\"status\":\"posted\""), "{body}");
    // Printed once, works twice: the retry returns the identical response.
    let (status, replay) = run_curl(directory.path(), &commands[0]);
    assert_eq!((status.as_str(), replay.as_str()), ("201", body.as_str()));

    let (status, body) = run_curl(directory.path(), &commands[1]);
    assert_eq!(status, "403", "{body}");
    assert!(body.contains("account.credit_not_active"), "{body}");

    let (status, body) = run_curl(directory.path(), &commands[2]);
    assert_eq!(status, "200", "{body}");
    assert!(body.contains("\"balance\":\"2499750.00\""), "{body}");

    let exit = terminate(&mut child);
    assert!(exit.success(), "{exit:?}");

    // After a clean shutdown the chain verifies and the decision log holds every record.
    let output = Command::new(BINARY)
        .args(["audit", "verify", "--dev", "--var", "var"])
        .current_dir(directory.path())
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(output.status.success(), "{report}");
    let verified: usize = report
        .split_whitespace()
        .find_map(|word| word.parse().ok())
        .expect("record count in the report");
    let log = std::fs::read_to_string(directory.path().join("var/decision-log.jsonl")).unwrap();
    assert_eq!(log.lines().count(), verified, "{report}");
}

#[test]
fn invalid_configuration_is_one_error_naming_the_key() {
    let directory = tempfile::TempDir::new().unwrap();
    let config = directory.path().join("countersign.toml");
    std::fs::write(
        &config,
        "listen_address = \"127.0.0.1:0\"\n[tls]\nserver_cert = \"s.crt\"\nserver_key = \"s.key\"\nclient_ca_bundle = \"ca.crt\"\n[policy]\nbundle = \"policies\"\n[store]\nurl = \"sqlite://x.db\"\n[limits]\nbody_bytes_max = \"lots\"\n",
    )
    .unwrap();
    let output = Command::new(BINARY)
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("limits.body_bytes_max"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");

    // The environment overrides the file: fixing the key there gets past it to the next problem.
    let output = Command::new(BINARY)
        .args(["serve", "--config"])
        .arg(&config)
        .env("COUNTERSIGN__LIMITS__BODY_BYTES_MAX", "4096")
        .env("COUNTERSIGN__TLS__MIN_VERSION", "1.1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr.contains("tls.min_version"), "{stderr}");
}

#[test]
fn config_check_validates_without_touching_files_or_services() {
    let directory = tempfile::TempDir::new().unwrap();
    let config = directory.path().join("countersign.toml");
    // Every file it names is missing and the store is unreachable: `config check` reads none.
    std::fs::write(
        &config,
        "listen_address = \"127.0.0.1:0\"\n[tls]\nserver_cert = \"s.crt\"\nserver_key = \"s.key\"\nclient_ca_bundle = \"ca.crt\"\n[policy]\nbundle = \"policies\"\n[store]\nurl = \"sqlite://x.db\"\n",
    )
    .unwrap();
    let check = |env: &[(&str, &str)]| {
        Command::new(BINARY)
            .args(["config", "check", "--config"])
            .arg(&config)
            .envs(env.iter().copied())
            .output()
            .unwrap()
    };
    let output = check(&[(
        "COUNTERSIGN__STORE__URL",
        "postgres://gateway:hunter2@db.invalid/countersign",
    )]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert!(
        stdout.contains(": valid (store postgres://gateway:***@db.invalid/countersign"),
        "{stdout}"
    );
    assert!(!stdout.contains("hunter2"), "{stdout}");
    assert!(!directory.path().join("x.db").exists());

    let output = check(&[("COUNTERSIGN__ADMISSION__POLICIES", "[]")]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(stderr.contains("admission"), "{stderr}");
    assert!(output.stdout.is_empty());
}
