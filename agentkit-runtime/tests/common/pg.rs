//! A throwaway PostgreSQL server for the tests: started on 127.0.0.1 on a free port in a
//! temporary directory, stopped (and deleted) when dropped. `AGENTKIT_PG_URL` points the tests
//! at an existing server instead. Needs the Debian `postgresql` package
//! (`scripts/install-postgres.sh` installs it).
//!
//! One copy for both crates' tests: agentkit-runtime's `tests/common/mod.rs` declares it as
//! `mod pg;`, agentkit-server's as `#[path = "…/agentkit-runtime/tests/common/pg.rs"] mod pg;`.
//! It needs only `std` and `tempfile` (a dev-dependency of both), so sharing it adds no
//! dependency and no feature to either crate; database set-up that needs a client (`sqlx`)
//! stays in the runtime's `common`.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A PostgreSQL server for one test.
pub struct Pg {
    /// The URL of its `postgres` database.
    pub url: String,
    cluster: Option<(tempfile::TempDir, PathBuf, bool)>,
}

fn bin_dir() -> PathBuf {
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output()
        && out.status.success()
    {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if dir.join("initdb").exists() {
            return dir;
        }
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.path().join("bin"))
                .collect()
        })
        .unwrap_or_default();
    versions.sort();
    versions
        .pop()
        .filter(|b| b.join("initdb").exists())
        .expect("PostgreSQL server binaries not found: run scripts/install-postgres.sh")
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Run a PostgreSQL binary, as the `postgres` user when we are root (initdb refuses root).
fn run(as_postgres: bool, bin: &Path, args: &[&str]) {
    let out = if as_postgres {
        Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(bin)
            .args(args)
            .output()
    } else {
        Command::new(bin).args(args).output()
    }
    .unwrap();
    assert!(
        out.status.success(),
        "{} {args:?} failed: {}{}",
        bin.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A free port on 127.0.0.1, never one handed out before in this test process: tests run
/// at once, and a test that stops a server and starts another on the same port leaves it
/// free in between, where another test's `free_port` could take it (its client then talks to
/// the first test's server).
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut given = GIVEN
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

impl Pg {
    /// A fresh cluster (or the server at `AGENTKIT_PG_URL`).
    pub fn start() -> Self {
        if let Ok(url) = std::env::var("AGENTKIT_PG_URL") {
            return Self { url, cluster: None };
        }
        let bin = bin_dir();
        let root = is_root();
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        if root {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
            let owner = |flag: &str| -> u32 {
                let out = Command::new("id")
                    .args([flag, "postgres"])
                    .output()
                    .unwrap();
                String::from_utf8_lossy(&out.stdout).trim().parse().expect(
                    "no `postgres` user: install the Debian postgresql package (scripts/install-postgres.sh)",
                )
            };
            std::os::unix::fs::chown(&data, Some(owner("-u")), Some(owner("-g"))).unwrap();
        }
        let data_s = data.to_str().unwrap().to_owned();
        run(
            root,
            &bin.join("initdb"),
            &[
                "-D",
                &data_s,
                "-A",
                "trust",
                "-U",
                "agentkit",
                "--no-sync",
                "-E",
                "UTF8",
            ],
        );
        let port = free_port();
        let opts = format!(
            "-p {port} -k {data_s} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
        );
        let log = format!("{data_s}/server.log");
        run(
            root,
            &bin.join("pg_ctl"),
            &["-D", &data_s, "-o", &opts, "-l", &log, "-w", "start"],
        );
        Self {
            url: format!("postgres://agentkit@127.0.0.1:{port}/postgres"),
            cluster: Some((dir, bin, root)),
        }
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        if let Some((dir, bin, root)) = &self.cluster {
            let data = dir.path().join("data");
            let data_s = data.to_str().unwrap_or_default();
            let ctl = bin.join("pg_ctl");
            let args = ["-D", data_s, "-m", "immediate", "-w", "stop"];
            let _ = if *root {
                Command::new("runuser")
                    .args(["-u", "postgres", "--"])
                    .arg(&ctl)
                    .args(args)
                    .output()
            } else {
                Command::new(&ctl).args(args).output()
            };
        }
    }
}
