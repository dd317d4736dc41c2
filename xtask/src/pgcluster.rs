//! PostgreSQL clusters of xtask's own, made with the installed server programs (`initdb`,
//! `pg_ctl`, `pg_basebackup`) in a temporary folder, on a free loopback port, with `trust`
//! authentication on loopback only; stopped and removed when dropped. `cargo xtask chaos`
//! stops one under load; `cargo xtask cluster` makes a primary and a streaming replica of it.

use crate::util::capture;
use anyhow::{Context, Result, bail, ensure};
use std::path::PathBuf;
use std::process::Command;

pub struct Cluster {
    dir: PathBuf,
    port: u16,
    bin: PathBuf,
}

impl Cluster {
    /// A new, empty cluster (a primary).
    pub fn create() -> Result<Cluster> {
        let cluster = Cluster::folder()?;
        cluster.as_owner(&format!(
            "{} -D {} -A trust -U postgres -E UTF8 --no-sync",
            cluster.bin.join("initdb").display(),
            cluster.data().display()
        ))?;
        Ok(cluster)
    }

    /// A streaming replica of the running `primary`: a base backup of it (`pg_basebackup -R`,
    /// which also writes the standby's connection to the primary), not started yet.
    pub fn replica_of(primary: &Cluster) -> Result<Cluster> {
        let cluster = Cluster::folder()?;
        cluster.as_owner(&format!(
            "{} -h 127.0.0.1 -p {} -U postgres -D {} -R -X stream -c fast --no-sync",
            cluster.bin.join("pg_basebackup").display(),
            primary.port,
            cluster.data().display()
        ))?;
        Ok(cluster)
    }

    fn folder() -> Result<Cluster> {
        let bin = postgres_bin()?;
        let dir = std::env::temp_dir().join(format!("lc-pg-{}", crate::util::random_hex(6)?));
        std::fs::create_dir_all(&dir)?;
        let port = crate::util::free_port()?;
        let cluster = Cluster { dir, port, bin };
        if crate::util::is_root() {
            // PostgreSQL refuses to run as root: the cluster belongs to the postgres user.
            let mut chown = Command::new("chown");
            chown.args(["postgres:postgres"]).arg(&cluster.dir);
            crate::util::run(chown)?;
        }
        Ok(cluster)
    }

    pub fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of database `postgres` as the superuser.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    pub fn start(&self) -> Result<()> {
        self.as_owner(&format!(
            "{} -D {} -l {} -w -o '-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off' start",
            self.bin.join("pg_ctl").display(),
            self.data().display(),
            self.dir.join("postgres.log").display(),
            self.port,
            self.dir.display()
        ))
    }

    pub fn stop(&self) -> Result<()> {
        self.as_owner(&format!(
            "{} -D {} -m fast -w stop",
            self.bin.join("pg_ctl").display(),
            self.data().display()
        ))
    }

    fn as_owner(&self, command: &str) -> Result<()> {
        let mut shell = if crate::util::is_root() {
            let mut su = Command::new("su");
            su.args(["postgres", "-s", "/bin/sh", "-c", command]);
            su
        } else {
            let mut sh = Command::new("sh");
            sh.args(["-c", command]);
            sh
        };
        shell.current_dir(&self.dir);
        let output = capture(shell)?;
        if !output.status.success() {
            bail!(
                "`{command}` failed: {}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The folder of the installed PostgreSQL's server programs (`initdb`, `pg_ctl`).
fn postgres_bin() -> Result<PathBuf> {
    let debian = PathBuf::from("/usr/lib/postgresql/15/bin");
    if debian.join("initdb").exists() {
        return Ok(debian);
    }
    let mut config = Command::new("pg_config");
    config.arg("--bindir");
    let output = capture(config).context("PostgreSQL's pg_config is not installed")?;
    let bin = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    ensure!(
        bin.join("initdb").exists(),
        "no initdb in {} (install PostgreSQL's server packages)",
        bin.display()
    );
    Ok(bin)
}
