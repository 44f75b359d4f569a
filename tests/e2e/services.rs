//! PostgreSQL and a Kafka-protocol broker for tests, in two kinds.
//!
//! - **Shared** services, provisioned by `tests/run` and named by `DATABASE_URL` and
//!   `KAFKA_BROKERS`: [`shared_database_url`], [`shared_kafka_brokers`], and
//!   [`fresh_database`] for a database of a test's own on the shared server.
//! - **Private** instances a test owns and may stop, start again and restart — fault tests:
//!   [`PgCluster`] (a PostgreSQL cluster) and [`Broker`] (a tansu broker). They live in a
//!   temporary directory under `COUNTERSIGN_SERVICES_DIR` (set by `tests/run`, which also
//!   sweeps instances a killed test left behind) or the system temp dir, on a free port, and
//!   are torn down on drop.
//!
//! A missing service is never a silent pass: with `CI=true` a test that needs one panics with
//! what to do; elsewhere the `*_if_available` / `shared_*` functions print a note and return
//! `None`, and the test returns (a quick local `cargo test` without PostgreSQL or tansu).
//!
//! Everything here blocks (`std::process::Command`, bounded polling): every wait has a bound
//! named below, so a service that does not come up fails the test instead of hanging CI. From
//! a `#[tokio::test]`, a call blocks the runtime's thread for its duration (PostgreSQL starts
//! and stops in well under a second): use `flavor = "multi_thread"` when the gateway under test
//! must keep serving meanwhile, or call it inside `tokio::task::spawn_blocking`.
#![allow(dead_code)] // The lead wires tests in one by one; not every helper has a user yet.

use std::{
    fs::{File, OpenOptions},
    io::Write,
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::OnceLock,
    thread,
    time::{Duration, Instant},
};

use tempfile::TempDir;
use uuid::Uuid;

/// `pg_ctl -w -t`: how long pg_ctl waits for the server to accept connections or to stop.
const PG_CTL_WAIT_S: u64 = 60;
/// Outer bound on any one PostgreSQL command (initdb, pg_ctl, pg_isready); above
/// `PG_CTL_WAIT_S` so that pg_ctl's own timeout reports first.
const PG_COMMAND_TIMEOUT_MS: u64 = 90_000;
/// Until a started tansu accepts connections on its own socket.
const BROKER_READY_TIMEOUT_MS: u64 = 30_000;
/// Between two readiness polls, and between two waits on a child process.
const POLL_INTERVAL_MS: u64 = 25;
/// A fresh free port per attempt: another process can take a port between our pick and the
/// server's bind.
const START_ATTEMPTS_MAX: u32 = 5;
/// `start_again` must reuse its port (the URL a test holds stays valid), so it retries on the
/// same port this many times, `RESTART_RETRY_DELAY_MS` apart.
const RESTART_ATTEMPTS_MAX: u32 = 20;
const RESTART_RETRY_DELAY_MS: u64 = 250;
/// Bound on connecting to the shared server and creating a database there.
const FRESH_DATABASE_TIMEOUT_MS: u64 = 30_000;
/// Lines of a service log quoted in a panic message.
const LOG_TAIL_LINES_MAX: usize = 40;

// ---------------------------------------------------------------------------------------------
// Shared services (tests/run)
// ---------------------------------------------------------------------------------------------

/// `DATABASE_URL` of the shared PostgreSQL server (a superuser: create databases and roles
/// freely, e.g. with [`fresh_database`]). `None` (after a note on stderr) when it is not set
/// outside CI; panics when it is not set and `CI=true`.
pub fn shared_database_url() -> Option<String> {
    required_service(
        "DATABASE_URL",
        std::env::var("DATABASE_URL").ok(),
        running_in_ci(),
    )
}

/// `KAFKA_BROKERS` of the shared broker (`host:port[,host:port]`, for `bootstrap.servers`).
/// Same rule as [`shared_database_url`].
pub fn shared_kafka_brokers() -> Option<String> {
    required_service(
        "KAFKA_BROKERS",
        std::env::var("KAFKA_BROKERS").ok(),
        running_in_ci(),
    )
}

/// Creates a uniquely named database on the server of `admin_url` (which must be allowed to
/// `CREATE DATABASE`) and returns the URL of that database: the same URL with only the
/// database name changed. Each test gets a clean schema without dropping anyone else's.
pub async fn fresh_database(admin_url: &str) -> String {
    use sqlx::Connection as _;

    let name = format!("countersign_test_{}", Uuid::new_v4().simple());
    let create = async {
        let mut admin = sqlx::PgConnection::connect(admin_url).await?;
        // The name is ours (a UUID), not input: safe to format into the statement.
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(r#"CREATE DATABASE "{name}""#)))
            .execute(&mut admin)
            .await?;
        admin.close().await
    };
    match tokio::time::timeout(Duration::from_millis(FRESH_DATABASE_TIMEOUT_MS), create).await {
        Ok(Ok(())) => database_url(admin_url, &name),
        Ok(Err(error)) => panic!("creating database {name} on the server of {admin_url}: {error}"),
        Err(_) => panic!(
            "creating database {name} on the server of {admin_url}: no answer within \
             {FRESH_DATABASE_TIMEOUT_MS} ms"
        ),
    }
}

/// The rule for a service a test needs, on its inputs: the variable's value when set; when
/// not, a panic under CI (a test that needs a service fails there, it never skips), else
/// `None` and a note.
fn required_service(variable: &str, value: Option<String>, in_ci: bool) -> Option<String> {
    let value = value.filter(|value| !value.trim().is_empty());
    if value.is_none() {
        missing_service(&format!("{variable} is not set"), in_ci);
    }
    value
}

/// Panics under CI; elsewhere prints a note, and the caller's test returns.
fn missing_service(what: &str, in_ci: bool) {
    assert!(
        !in_ci,
        "{what} and CI=true: this test needs that service. Run the tests with `bash tests/run`, \
         which provisions it (README, \"Tests\")."
    );
    eprintln!(
        "note: {what}, so this test returns without running; `bash tests/run` provisions the \
         service (with CI=true this is a failure)"
    );
}

fn running_in_ci() -> bool {
    std::env::var("CI")
        .map(|value| value.eq_ignore_ascii_case("true") || value == "1")
        .unwrap_or(false)
}

/// `admin_url` with its database (the path) replaced by `database`, keeping the query.
fn database_url(admin_url: &str, database: &str) -> String {
    let (without_query, query) = match admin_url.split_once('?') {
        Some((without_query, query)) => (without_query, Some(query)),
        None => (admin_url, None),
    };
    let authority_start = without_query
        .find("://")
        .map(|index| index + 3)
        .unwrap_or_else(|| panic!("not a URL: {admin_url}"));
    let base = match without_query[authority_start..].find('/') {
        Some(path_start) => &without_query[..authority_start + path_start],
        None => without_query,
    };
    match query {
        Some(query) => format!("{base}/{database}?{query}"),
        None => format!("{base}/{database}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Private PostgreSQL cluster
// ---------------------------------------------------------------------------------------------

/// A PostgreSQL cluster of one test: `initdb` in a temporary directory, served on
/// 127.0.0.1 on a free port (unix socket in that directory, `trust` authentication,
/// `fsync` on so durability tests mean something). When the test runs as root — CI does —
/// PostgreSQL's commands run as the `postgres` OS user, because PostgreSQL refuses root.
///
/// The data directory and the port survive [`stop`](Self::stop) /
/// [`start_again`](Self::start_again), so [`url`](Self::url) stays valid and committed data
/// is still there. Drop stops the server without a checkpoint and deletes the directory.
pub struct PgCluster {
    bindir: PathBuf,
    port: u16,
    running: bool,
    // Last field: removed after `Drop::drop` stopped the server.
    directory: TempDir,
}

impl PgCluster {
    /// Starts a private cluster; panics (with PostgreSQL's log) if it cannot.
    pub fn start() -> PgCluster {
        let bindir = pg_bindir().unwrap_or_else(|| {
            panic!(
                "PostgreSQL server binaries not found: set COUNTERSIGN_PG_BINDIR (tests/run does) \
                 or install PostgreSQL 15 (/usr/lib/postgresql/15/bin)"
            )
        });
        let directory = tempfile::Builder::new()
            .prefix("pg-")
            .tempdir_in(services_root())
            .expect("creating the cluster's temporary directory");
        if running_as_root() {
            let (uid, gid) = postgres_user_ids();
            std::os::unix::fs::chown(directory.path(), Some(uid), Some(gid))
                .expect("giving the cluster directory to the postgres user");
        }
        let mut cluster = PgCluster {
            bindir,
            port: 0,
            running: false,
            directory,
        };
        // `--no-sync` only skips flushing initdb's bootstrap files of a throwaway cluster;
        // the server runs with fsync on.
        let data = cluster.data_dir();
        let initdb = cluster.postgres_command(
            "initdb",
            &[
                "-D",
                path_str(&data),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-instructions",
                "--no-sync",
            ],
        );
        if let Err(error) = run_bounded(initdb, &cluster.command_log(), PG_COMMAND_TIMEOUT_MS) {
            panic!("initdb failed: {error}\n{}", cluster.logs());
        }
        let mut failures = Vec::new();
        for _ in 0..START_ATTEMPTS_MAX {
            cluster.port = free_port();
            match cluster.try_start() {
                Ok(()) => return cluster,
                Err(error) => failures.push(format!("port {}: {error}", cluster.port)),
            }
        }
        panic!(
            "PostgreSQL did not start ({START_ATTEMPTS_MAX} attempts): {}\n{}",
            failures.join("; "),
            cluster.logs()
        );
    }

    /// [`start`](Self::start) when PostgreSQL's binaries are there; else `None` after a note,
    /// or a panic under `CI=true`.
    pub fn start_if_available() -> Option<PgCluster> {
        if pg_bindir().is_some() {
            return Some(PgCluster::start());
        }
        missing_service(
            "PostgreSQL server binaries not found (COUNTERSIGN_PG_BINDIR, /usr/lib/postgresql)",
            running_in_ci(),
        );
        None
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres`, a superuser.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn is_running(&self) -> bool {
        self.running
    }

    pub fn data_dir(&self) -> PathBuf {
        self.directory.path().join("data")
    }

    /// The server's log (`pg_ctl -l`).
    pub fn log_path(&self) -> PathBuf {
        self.directory.path().join("postgres.log")
    }

    /// A clean shutdown (`pg_ctl stop -m fast`): sessions are terminated, open transactions
    /// roll back, a checkpoint is written. Connections then fail until `start_again`.
    pub fn stop(&mut self) {
        self.pg_ctl_stop("fast");
    }

    /// A crash-like stop (`pg_ctl stop -m immediate`): no shutdown checkpoint, so the next
    /// start replays the WAL. Every transaction whose COMMIT returned survives (fsync is on);
    /// the others do not.
    pub fn stop_immediately(&mut self) {
        self.pg_ctl_stop("immediate");
    }

    /// Starts the stopped server again on the same data directory and port; retries for a
    /// few seconds if the port is still held, then panics with the log.
    pub fn start_again(&mut self) {
        assert!(!self.running, "start_again on a running cluster");
        let mut last_error = String::new();
        for _ in 0..RESTART_ATTEMPTS_MAX {
            match self.try_start() {
                Ok(()) => return,
                Err(error) => last_error = error,
            }
            thread::sleep(Duration::from_millis(RESTART_RETRY_DELAY_MS));
        }
        panic!(
            "PostgreSQL did not start again on port {}: {last_error}\n{}",
            self.port,
            self.logs()
        );
    }

    /// [`stop`](Self::stop) then [`start_again`](Self::start_again).
    pub fn restart(&mut self) {
        self.stop();
        self.start_again();
    }

    fn try_start(&mut self) -> Result<(), String> {
        let data = self.data_dir();
        let log = self.log_path();
        let directory = self.directory.path().to_owned();
        // pg_ctl hands -o to the shell: quote the socket directory. Parallel tests may run
        // several clusters at once: keep each one small.
        let options = format!(
            "-c listen_addresses=127.0.0.1 -p {} -k '{}' -c fsync=on -c max_connections=50 \
             -c shared_buffers=32MB",
            self.port,
            path_str(&directory)
        );
        let wait_s = PG_CTL_WAIT_S.to_string();
        let pg_ctl = self.postgres_command(
            "pg_ctl",
            &[
                "-D",
                path_str(&data),
                "-l",
                path_str(&log),
                "-w",
                "-t",
                &wait_s,
                "-o",
                &options,
                "start",
            ],
        );
        let started = run_bounded(pg_ctl, &self.command_log(), PG_COMMAND_TIMEOUT_MS);
        // Also when pg_ctl gave up: a postmaster that came up late must not linger.
        self.running = data.join("postmaster.pid").exists();
        started?;
        // pg_ctl -w checked the server through its own socket; check the TCP listener too.
        let port = self.port.to_string();
        let mut pg_isready = Command::new(self.bindir.join("pg_isready"));
        pg_isready.args([
            "-q",
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-t",
            "10",
        ]);
        if let Err(error) = run_bounded(pg_isready, &self.command_log(), PG_COMMAND_TIMEOUT_MS) {
            self.pg_ctl_stop("immediate");
            return Err(format!("pg_isready on 127.0.0.1:{port}: {error}"));
        }
        Ok(())
    }

    fn pg_ctl_stop(&mut self, mode: &str) {
        if let Err(error) = self.try_pg_ctl_stop(mode) {
            panic!("pg_ctl stop -m {mode} failed: {error}\n{}", self.logs());
        }
    }

    fn try_pg_ctl_stop(&mut self, mode: &str) -> Result<(), String> {
        let data = self.data_dir();
        let wait_s = PG_CTL_WAIT_S.to_string();
        let pg_ctl = self.postgres_command(
            "pg_ctl",
            &[
                "-D",
                path_str(&data),
                "-m",
                mode,
                "-w",
                "-t",
                &wait_s,
                "stop",
            ],
        );
        run_bounded(pg_ctl, &self.command_log(), PG_COMMAND_TIMEOUT_MS)?;
        self.running = false;
        Ok(())
    }

    /// `bindir/program args…`, as the postgres OS user when we are root.
    fn postgres_command(&self, program: &str, args: &[&str]) -> Command {
        let program = self.bindir.join(program);
        let mut command = if !running_as_root() {
            let mut command = Command::new(&program);
            command.args(args);
            command
        } else if let Some(runuser) = find_on_path("runuser") {
            let mut command = Command::new(runuser);
            command
                .args(["-u", "postgres", "--"])
                .arg(&program)
                .args(args);
            command
        } else {
            let line = std::iter::once(path_str(&program))
                .chain(args.iter().copied())
                .map(shell_quote)
                .collect::<Vec<_>>()
                .join(" ");
            let mut command = Command::new("su");
            command.args(["-s", "/bin/sh", "postgres", "-c", &format!("exec {line}")]);
            command
        };
        // The postgres user may not be allowed into our working directory.
        command.current_dir(self.directory.path());
        command
    }

    /// initdb, pg_ctl and pg_isready output.
    fn command_log(&self) -> PathBuf {
        self.directory.path().join("commands.log")
    }

    fn logs(&self) -> String {
        format!(
            "{}\n{}",
            log_tail("commands", &self.command_log()),
            log_tail("postgres", &self.log_path())
        )
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if !self.running {
            return;
        }
        // Never panic here (a panic while unwinding aborts): fall back to killing the
        // postmaster, whose pid is the first line of postmaster.pid.
        if let Err(error) = self.try_pg_ctl_stop("immediate") {
            eprintln!("PgCluster drop: pg_ctl stop failed ({error}); killing the postmaster");
            let postmaster = std::fs::read_to_string(self.data_dir().join("postmaster.pid"))
                .ok()
                .and_then(|content| content.lines().next().map(str::to_owned));
            // Only if that pid is still a postgres: a stale pid file may name a reused pid.
            if let Some(pid) = postmaster.filter(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/comm"))
                    .is_ok_and(|name| name.trim() == "postgres")
            }) {
                let _ = Command::new("kill").args(["-KILL", &pid]).status();
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Private Kafka-protocol broker
// ---------------------------------------------------------------------------------------------

/// A tansu broker of one test on 127.0.0.1, on a free port, with in-memory storage.
///
/// What survives [`stop`](Self::stop) + [`start_again`](Self::start_again): the address
/// only. The storage is in memory, so topics, records and consumer-group offsets are gone;
/// a test of a broker outage therefore checks that the producer side (the audit relay)
/// publishes again what was not acknowledged before the outage — from its outbox — and
/// re-creates the topic if it needs to; it cannot expect records delivered before the outage
/// to be readable after it.
pub struct Broker {
    binary: PathBuf,
    port: u16,
    child: Option<Child>,
    // Last field: removed after `Drop::drop` killed the broker.
    directory: TempDir,
}

impl Broker {
    /// Starts a private broker; panics (with its log) if it cannot.
    pub fn start() -> Broker {
        let binary = tansu_bin().unwrap_or_else(|| {
            panic!(
                "tansu not found: set COUNTERSIGN_TANSU_BIN (tests/run does, and builds tansu \
                 into ~/.cache/countersign-tools when missing)"
            )
        });
        let directory = tempfile::Builder::new()
            .prefix("tansu-")
            .tempdir_in(services_root())
            .expect("creating the broker's temporary directory");
        let mut broker = Broker {
            binary,
            port: 0,
            child: None,
            directory,
        };
        let mut failures = Vec::new();
        for _ in 0..START_ATTEMPTS_MAX {
            broker.port = free_port();
            match broker.try_start() {
                Ok(()) => return broker,
                Err(error) => failures.push(format!("port {}: {error}", broker.port)),
            }
        }
        panic!(
            "tansu did not start ({START_ATTEMPTS_MAX} attempts): {}\n{}",
            failures.join("; "),
            log_tail("tansu", &broker.log_path())
        );
    }

    /// [`start`](Self::start) when the tansu binary is there; else `None` after a note, or a
    /// panic under `CI=true`.
    pub fn start_if_available() -> Option<Broker> {
        if tansu_bin().is_some() {
            return Some(Broker::start());
        }
        missing_service(
            "tansu not found (COUNTERSIGN_TANSU_BIN, ~/.cache/countersign-tools/bin/tansu)",
            running_in_ci(),
        );
        None
    }

    /// `127.0.0.1:PORT`, for `bootstrap.servers`.
    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    pub fn log_path(&self) -> PathBuf {
        self.directory.path().join("tansu.log")
    }

    /// Freezes the broker (SIGSTOP): connections stay open but nothing is answered, as with
    /// a hung broker or a partition. Unlike [`stop`](Self::stop) its data survives, so a
    /// test can reconcile everything published before, during and after the outage.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Thaws a [`pause`](Self::pause)d broker (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let child = self.child.as_ref().expect("the broker is running");
        let status = Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill {signal} failed");
    }

    /// Kills the broker (SIGKILL: an outage, not a shutdown). Its in-memory data is gone.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_file(self.pid_file());
    }

    /// Starts the broker again on the same port, empty; retries for a few seconds if the
    /// port is still held, then panics with the log.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "start_again on a running broker");
        let mut last_error = String::new();
        for _ in 0..RESTART_ATTEMPTS_MAX {
            match self.try_start() {
                Ok(()) => return,
                Err(error) => last_error = error,
            }
            thread::sleep(Duration::from_millis(RESTART_RETRY_DELAY_MS));
        }
        panic!(
            "tansu did not start again on port {}: {last_error}\n{}",
            self.port,
            log_tail("tansu", &self.log_path())
        );
    }

    /// [`stop`](Self::stop) then [`start_again`](Self::start_again).
    pub fn restart(&mut self) {
        self.stop();
        self.start_again();
    }

    fn try_start(&mut self) -> Result<(), String> {
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .map_err(|error| format!("opening the log: {error}"))?;
        let _ = writeln!(log, "== starting on port {}", self.port);
        let stderr = log
            .try_clone()
            .map_err(|error| format!("log handle: {error}"))?;
        let listener = format!("tcp://127.0.0.1:{}", self.port);
        let child = Command::new(&self.binary)
            .args(["broker", "--storage-engine", "memory://tansu/"])
            .args(["--listener-url", &listener])
            .args(["--advertised-listener-url", &listener])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(stderr)
            .spawn()
            .map_err(|error| format!("spawning {}: {error}", self.binary.display()))?;
        // For tests/run's sweep, should this process die without dropping us.
        let _ = std::fs::write(self.pid_file(), child.id().to_string());
        self.child = Some(child);
        let ready = self.wait_until_ready();
        if ready.is_err() {
            self.stop();
        }
        ready
    }

    /// Ready = still running, and the port accepts connections on tansu's own socket: a
    /// connect alone could reach another process holding the port while ours failed to bind
    /// (tansu then exits shortly after).
    fn wait_until_ready(&mut self) -> Result<(), String> {
        let address = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        let deadline = Instant::now() + Duration::from_millis(BROKER_READY_TIMEOUT_MS);
        let child = self.child.as_mut().expect("a started child");
        loop {
            if let Some(status) = child.try_wait().map_err(|error| error.to_string())? {
                return Err(format!("tansu exited: {status}"));
            }
            if TcpStream::connect_timeout(&address, Duration::from_millis(250)).is_ok()
                && listening_socket_owned_by(child.id(), self.port)
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "not accepting connections after {BROKER_READY_TIMEOUT_MS} ms"
                ));
            }
            thread::sleep(Duration::from_millis(POLL_INTERVAL_MS));
        }
    }

    fn pid_file(&self) -> PathBuf {
        self.directory.path().join("tansu.pid")
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
}

// ---------------------------------------------------------------------------------------------
// Plumbing
// ---------------------------------------------------------------------------------------------

/// COUNTERSIGN_PG_BINDIR, else PostgreSQL 15 at its Debian path, else the newest
/// /usr/lib/postgresql/*/bin: the first that has initdb and pg_ctl.
fn pg_bindir() -> Option<PathBuf> {
    let has_server =
        |directory: &Path| directory.join("initdb").is_file() && directory.join("pg_ctl").is_file();
    if let Some(bindir) = std::env::var_os("COUNTERSIGN_PG_BINDIR").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(bindir)).filter(|bindir| has_server(bindir));
    }
    let preferred = PathBuf::from("/usr/lib/postgresql/15/bin");
    if has_server(&preferred) {
        return Some(preferred);
    }
    let mut installed: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let major = entry
                .file_name()
                .to_str()?
                .split('.')
                .next()?
                .parse()
                .ok()?;
            Some((major, entry.path().join("bin")))
        })
        .filter(|(_, bindir)| has_server(bindir))
        .collect();
    installed.sort();
    installed.pop().map(|(_, bindir)| bindir)
}

/// COUNTERSIGN_TANSU_BIN, else the cache tests/run installs into.
fn tansu_bin() -> Option<PathBuf> {
    if let Some(binary) = std::env::var_os("COUNTERSIGN_TANSU_BIN").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(binary)).filter(|binary| binary.is_file());
    }
    let cache = match std::env::var_os("COUNTERSIGN_TOOLS").filter(|v| !v.is_empty()) {
        Some(tools) => PathBuf::from(tools),
        None => PathBuf::from(std::env::var_os("HOME")?).join(".cache/countersign-tools"),
    };
    Some(cache.join("bin/tansu")).filter(|binary| binary.is_file())
}

/// Where private instances live: tests/run's COUNTERSIGN_SERVICES_DIR (swept at its exit),
/// else the system temp dir.
fn services_root() -> PathBuf {
    std::env::var_os("COUNTERSIGN_SERVICES_DIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
}

/// A port nothing listens on now (the kernel's pick for port 0). The server binds it a
/// moment later; callers retry on another port if that race is lost.
fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .expect("binding 127.0.0.1:0 for a free port")
        .port()
}

fn running_as_root() -> bool {
    static ROOT: OnceLock<bool> = OnceLock::new();
    *ROOT.get_or_init(|| command_stdout(Command::new("id").arg("-u")).trim() == "0")
}

fn postgres_user_ids() -> (u32, u32) {
    let id = |flag: &str| -> u32 {
        let output = command_stdout(Command::new("id").args([flag, "postgres"]));
        output.trim().parse().unwrap_or_else(|_| {
            panic!(
                "running as root, PostgreSQL needs the `postgres` OS user (`id {flag} postgres` \
                 said {output:?})"
            )
        })
    };
    (id("-u"), id("-g"))
}

fn command_stdout(command: &mut Command) -> String {
    let output = command
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|error| panic!("running {command:?}: {error}"));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Runs `command` with its output appended to `log`, killing it after `timeout_ms`.
fn run_bounded(mut command: Command, log: &Path, timeout_ms: u64) -> Result<(), String> {
    let mut stdout = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|error| format!("opening {}: {error}", log.display()))?;
    let _ = writeln!(stdout, "$ {command:?}");
    let stderr: File = stdout
        .try_clone()
        .map_err(|error| format!("log handle: {error}"))?;
    let mut child = command
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .map_err(|error| format!("spawning {command:?}: {error}"))?;
    let deadline = Instant::now() + Duration::from_millis(timeout_ms);
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => return Err(format!("{command:?}: {status}")),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{command:?}: killed after {timeout_ms} ms"));
            }
            Ok(None) => thread::sleep(Duration::from_millis(POLL_INTERVAL_MS)),
            Err(error) => return Err(format!("{command:?}: {error}")),
        }
    }
}

/// Whether process `pid` owns the listening TCP socket on `port`, from /proc (Linux). Without
/// /proc this cannot be told, and the caller's liveness check has to do.
fn listening_socket_owned_by(pid: u32, port: u16) -> bool {
    let Ok(ipv4) = std::fs::read_to_string("/proc/net/tcp") else {
        return true;
    };
    let ipv6 = std::fs::read_to_string("/proc/net/tcp6").unwrap_or_default();
    let port_suffix = format!(":{port:04X}");
    let inodes: Vec<String> = ipv4
        .lines()
        .chain(ipv6.lines())
        .skip(1)
        .filter_map(|line| {
            // Fields: sl, local_address, rem_address, st (0A = LISTEN), …, inode (10th).
            let fields: Vec<&str> = line.split_whitespace().collect();
            let ours = fields.get(3) == Some(&"0A")
                && fields
                    .get(1)
                    .is_some_and(|local| local.ends_with(&port_suffix));
            if ours {
                fields.get(9).map(|inode| inode.to_string())
            } else {
                None
            }
        })
        .collect();
    let Ok(descriptors) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    descriptors.flatten().any(|descriptor| {
        std::fs::read_link(descriptor.path())
            .map(|target| {
                let target = target.to_string_lossy();
                inodes
                    .iter()
                    .any(|inode| target == format!("socket:[{inode}]"))
            })
            .unwrap_or(false)
    })
}

fn find_on_path(program: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|directory| directory.join(program))
        .find(|candidate| candidate.is_file())
}

fn shell_quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

fn path_str(path: &Path) -> &str {
    path.to_str()
        .unwrap_or_else(|| panic!("not UTF-8: {}", path.display()))
}

fn log_tail(name: &str, path: &Path) -> String {
    let content = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = content.lines().collect();
    let tail = &lines[lines.len().saturating_sub(LOG_TAIL_LINES_MAX)..];
    format!(
        "----- {name} ({}, last {} lines)\n{}",
        path.display(),
        tail.len(),
        tail.join("\n")
    )
}

// ---------------------------------------------------------------------------------------------
// The harness's own tests
// ---------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use sqlx::{Connection as _, PgConnection};

    use super::*;

    #[test]
    fn a_missing_service_fails_in_ci_and_is_a_note_elsewhere() {
        let check = |value: Option<&str>, in_ci: bool| {
            std::panic::catch_unwind(|| {
                required_service("DATABASE_URL", value.map(str::to_owned), in_ci)
            })
        };
        let url = "postgres://postgres@127.0.0.1:5432/postgres";
        assert_eq!(check(Some(url), true).unwrap().as_deref(), Some(url));
        assert_eq!(check(Some(url), false).unwrap().as_deref(), Some(url));
        assert_eq!(check(None, false).unwrap(), None);
        assert_eq!(check(Some("  "), false).unwrap(), None);
        assert!(check(None, true).is_err(), "CI must fail, not skip");
        assert!(check(Some(""), true).is_err(), "an empty value is missing");
    }

    #[test]
    fn database_url_changes_only_the_database() {
        let check = |admin: &str, expected: &str| assert_eq!(database_url(admin, "db1"), expected);
        check(
            "postgres://postgres@127.0.0.1:5432/postgres",
            "postgres://postgres@127.0.0.1:5432/db1",
        );
        check("postgres://u:p@host:1", "postgres://u:p@host:1/db1");
        check(
            "postgres://u@host:1/postgres?sslmode=disable&application_name=x",
            "postgres://u@host:1/db1?sslmode=disable&application_name=x",
        );
        check(
            "postgresql://h/?sslmode=disable",
            "postgresql://h/db1?sslmode=disable",
        );
    }

    async fn connect(url: &str) -> Result<PgConnection, sqlx::Error> {
        match tokio::time::timeout(Duration::from_secs(10), PgConnection::connect(url)).await {
            Ok(result) => result,
            Err(_) => panic!("connecting to {url}: no answer within 10 s"),
        }
    }

    async fn rows(url: &str) -> Vec<String> {
        let mut connection = connect(url).await.expect("connecting");
        let rows: Vec<(String,)> = sqlx::query_as("SELECT note FROM notes ORDER BY id")
            .fetch_all(&mut connection)
            .await
            .expect("reading notes");
        connection.close().await.expect("closing");
        rows.into_iter().map(|(note,)| note).collect()
    }

    async fn insert(url: &str, note: &str) {
        let mut connection = connect(url).await.expect("connecting");
        sqlx::query("INSERT INTO notes (note) VALUES ($1)")
            .bind(note)
            .execute(&mut connection)
            .await
            .expect("inserting a note");
        connection.close().await.expect("closing");
    }

    #[tokio::test]
    async fn pg_cluster_keeps_committed_rows_across_stop_crash_and_restart() {
        let Some(mut cluster) = PgCluster::start_if_available() else {
            return;
        };
        let directory = cluster.directory.path().to_owned();
        let url = fresh_database(&cluster.url()).await;
        assert!(
            url.contains(&format!(":{}/countersign_test_", cluster.port())),
            "{url}"
        );

        let mut connection = connect(&url)
            .await
            .expect("connecting to the fresh database");
        sqlx::raw_sql("CREATE TABLE notes (id bigserial PRIMARY KEY, note text NOT NULL)")
            .execute(&mut connection)
            .await
            .expect("creating a table");
        let (fsync,): (String,) = sqlx::query_as("SHOW fsync")
            .fetch_one(&mut connection)
            .await
            .unwrap();
        assert_eq!(fsync, "on", "durability tests need fsync on");
        connection.close().await.unwrap();
        insert(&url, "before stop").await;

        cluster.stop();
        assert!(!cluster.is_running());
        assert!(
            connect(&url).await.is_err(),
            "a stopped cluster must refuse connections"
        );

        cluster.start_again();
        assert_eq!(rows(&url).await, ["before stop"]);
        insert(&url, "before crash").await;

        cluster.stop_immediately();
        cluster.start_again();
        assert_eq!(rows(&url).await, ["before stop", "before crash"]);

        cluster.restart();
        assert_eq!(rows(&url).await, ["before stop", "before crash"]);

        let port = cluster.port();
        drop(cluster);
        assert!(!directory.exists(), "drop removes the cluster's directory");
        assert!(
            TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err(),
            "drop stops the server"
        );
    }

    /// Metadata over the Kafka protocol: proves a Kafka client reaches this broker, at the
    /// address it advertises.
    fn advertised_broker_ports(brokers: &str) -> Result<Vec<u16>, String> {
        use rdkafka::{
            ClientConfig,
            producer::{BaseProducer, Producer as _},
        };

        let producer: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("socket.connection.setup.timeout.ms", "2000")
            .create()
            .map_err(|error| error.to_string())?;
        let metadata = producer
            .client()
            .fetch_metadata(None, Duration::from_secs(5))
            .map_err(|error| error.to_string())?;
        Ok(metadata
            .brokers()
            .iter()
            .map(|broker| broker.port() as u16)
            .collect())
    }

    #[test]
    fn broker_stops_and_starts_again_on_the_same_port() {
        let Some(mut broker) = Broker::start_if_available() else {
            return;
        };
        let directory = broker.directory.path().to_owned();
        let port = broker.port();
        assert_eq!(broker.brokers(), format!("127.0.0.1:{port}"));
        assert_eq!(advertised_broker_ports(&broker.brokers()).unwrap(), [port]);

        broker.stop();
        assert!(!broker.is_running());
        assert!(
            TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err(),
            "a stopped broker must refuse connections"
        );

        broker.start_again();
        assert_eq!(broker.port(), port, "same address after start_again");
        assert_eq!(advertised_broker_ports(&broker.brokers()).unwrap(), [port]);

        broker.restart();
        assert_eq!(advertised_broker_ports(&broker.brokers()).unwrap(), [port]);

        drop(broker);
        assert!(!directory.exists(), "drop removes the broker's directory");
        assert!(
            TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err(),
            "drop kills the broker"
        );
    }
}
