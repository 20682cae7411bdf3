//! A private PostgreSQL cluster started from the server binaries installed on the machine.
//!
//! Used by `callbackd dev` and by the tests when no `DATABASE_URL` is given and no local
//! server answers. It only uses TCP on 127.0.0.1 (no Unix socket), with trust
//! authentication for the `postgres` user, so it is for development and tests only.
//! When running as root, the server runs as the `postgres` system user (PostgreSQL refuses
//! to run as root).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "PostgreSQL server binaries (initdb, pg_ctl, postgres) were not found on PATH or in \
         /usr/lib/postgresql/*/bin; install them (Debian/Ubuntu: `apt-get install postgresql`, \
         Fedora: `dnf install postgresql-server`, macOS: `brew install postgresql`) or set \
         DATABASE_URL to a running server"
    )]
    BinariesNotFound,
    #[error(
        "running as root, PostgreSQL must run as the `postgres` system user, which does not \
         exist; create it (`useradd --system postgres`) or set DATABASE_URL"
    )]
    NoPostgresUser,
    #[error("{step} failed: {detail}")]
    Command { step: &'static str, detail: String },
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A running private cluster; stopped when dropped.
#[derive(Debug)]
pub struct PrivateCluster {
    bin_dir: PathBuf,
    data_dir: PathBuf,
    port: u16,
    stopped: bool,
}

impl PrivateCluster {
    /// Starts a cluster in `data_dir`, creating it with initdb when the folder holds none.
    /// `settings` are extra `name = value` lines for postgresql.conf.
    pub fn start(data_dir: &Path, settings: &[(&str, &str)]) -> Result<Self> {
        let bin_dir = find_server_binaries()?;
        let as_root = is_root();
        if as_root && !postgres_user_exists() {
            return Err(Error::NoPostgresUser);
        }
        std::fs::create_dir_all(data_dir)?;
        let data_dir = data_dir.canonicalize()?;
        if as_root {
            run(
                Command::new("chown")
                    .args(["-R", "postgres:postgres"])
                    .arg(&data_dir),
                "chown of the data folder",
            )?;
        }
        if !data_dir.join("PG_VERSION").exists() {
            run(
                server_command(&bin_dir, "initdb")
                    .arg("-D")
                    .arg(&data_dir)
                    .args([
                        "-U",
                        "postgres",
                        "-A",
                        "trust",
                        "-E",
                        "UTF8",
                        "--locale=C",
                        "--no-sync",
                    ]),
                "initdb",
            )?;
            let conf = data_dir.join("postgresql.conf");
            let mut text = std::fs::read_to_string(&conf)?;
            text.push_str("\ninclude_if_exists = 'callback.conf'\n");
            std::fs::write(&conf, text)?;
        }
        let port = free_port()?;
        let mut conf = format!(
            "port = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = ''\nmax_connections = 200\n"
        );
        for (name, value) in settings {
            conf.push_str(&format!("{name} = {value}\n"));
        }
        std::fs::write(data_dir.join("callback.conf"), conf)?;
        if as_root {
            run(
                Command::new("chown")
                    .arg("postgres:postgres")
                    .arg(data_dir.join("callback.conf"))
                    .arg(data_dir.join("postgresql.conf")),
                "chown of the configuration",
            )?;
        }
        run(
            server_command(&bin_dir, "pg_ctl")
                .arg("-D")
                .arg(&data_dir)
                .arg("-l")
                .arg(data_dir.join("server.log"))
                .args(["-w", "-t", "60", "start"]),
            "pg_ctl start",
        )?;
        let cluster = Self {
            bin_dir,
            data_dir,
            port,
            stopped: false,
        };
        cluster.wait_until_accepting(Duration::from_secs(30))?;
        Ok(cluster)
    }

    /// Connection URL of the `postgres` database.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Stops the cluster when the process `pid` has exited, even if it is killed: a small
    /// shell watchdog polls for it. For tests, whose process has no orderly end.
    pub fn stop_when_process_exits(mut self, pid: u32, remove_data: bool) -> Result<()> {
        let pg_ctl = self.bin_dir.join("pg_ctl");
        let data = self.data_dir.display().to_string();
        let cleanup = if remove_data {
            format!("; rm -rf '{data}'")
        } else {
            String::new()
        };
        let script = format!(
            "while [ -d /proc/{pid} ]; do sleep 1; done; '{}' -D '{data}' -m immediate stop >/dev/null 2>&1{cleanup}",
            pg_ctl.display()
        );
        let mut watchdog = Command::new("sh");
        watchdog.args(["-c", &script]);
        as_server_user(watchdog)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        self.stopped = true; // the watchdog owns it now
        Ok(())
    }

    /// Stops the cluster (fast shutdown: open sessions are ended).
    pub fn stop(mut self) -> Result<()> {
        self.stop_now()
    }

    fn stop_now(&mut self) -> Result<()> {
        if self.stopped {
            return Ok(());
        }
        self.stopped = true;
        run(
            server_command(&self.bin_dir, "pg_ctl")
                .arg("-D")
                .arg(&self.data_dir)
                .args(["-m", "fast", "-w", "stop"]),
            "pg_ctl stop",
        )
    }

    fn wait_until_accepting(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let pg_isready = self.bin_dir.join("pg_isready");
        loop {
            let ready = if pg_isready.exists() {
                Command::new(&pg_isready)
                    .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string()])
                    .status()
                    .map(|s| s.success())
                    .unwrap_or(false)
            } else {
                std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
            };
            if ready {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(Error::Command {
                    step: "waiting for the server",
                    detail: format!(
                        "not accepting connections after {timeout:?}; see {}",
                        self.data_dir.join("server.log").display()
                    ),
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        if let Err(error) = self.stop_now() {
            eprintln!("could not stop the private PostgreSQL cluster: {error}");
        }
    }
}

/// The folder holding initdb, pg_ctl and postgres: from PATH, else the newest
/// /usr/lib/postgresql/<version>/bin.
pub fn find_server_binaries() -> Result<PathBuf> {
    let has_all = |dir: &Path| {
        ["initdb", "pg_ctl", "postgres"]
            .iter()
            .all(|b| dir.join(b).is_file())
    };
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            if has_all(&dir) {
                return Ok(dir);
            }
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .filter(|(_, bin)| has_all(bin))
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, bin)| bin)
        .ok_or(Error::BinariesNotFound)
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    #[allow(unsafe_code)]
    unsafe {
        libc::geteuid() == 0
    }
}

fn postgres_user_exists() -> bool {
    Command::new("id")
        .arg("postgres")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn server_command(bin_dir: &Path, program: &str) -> Command {
    as_server_user(Command::new(bin_dir.join(program)))
}

/// Wraps a command to run as the `postgres` user when we are root.
fn as_server_user(command: Command) -> Command {
    if !is_root() {
        return command;
    }
    let mut wrapped = Command::new("runuser");
    wrapped
        .args(["-u", "postgres", "--"])
        .arg(command.get_program());
    wrapped.args(command.get_args());
    wrapped
}

fn run(command: &mut Command, step: &'static str) -> Result<()> {
    let output = command.stdin(Stdio::null()).output()?;
    if output.status.success() {
        return Ok(());
    }
    Err(Error::Command {
        step,
        detail: format!(
            "{}{}",
            String::from_utf8_lossy(&output.stderr).trim(),
            String::from_utf8_lossy(&output.stdout).trim()
        ),
    })
}

fn free_port() -> Result<u16> {
    let listener = TcpListener::bind(("127.0.0.1", 0))?;
    Ok(listener.local_addr()?.port())
}
