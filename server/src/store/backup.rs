//! SQLite backups. `backup` copies the database into a new file while the server runs
//! (`VACUUM INTO`: one read transaction, so one consistent snapshot, compacted, and no writer
//! kept waiting); `restore` puts a backup's content into a database with SQLite's backup API in
//! one write transaction, so that a running server reads the old content or the restored one,
//! never a mix. PostgreSQL has its own tools for both (docs/operating.md, "Backups").

use super::Creation;
use anyhow::{Context, Result, bail};
use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Copies the database at `database` into `file`, which must not exist: written beside it
/// under another name, checked, and only then given its name. Answers the backup's pages.
pub fn backup(database: &Path, file: &Path) -> Result<u64> {
    if !database.exists() {
        return Err(super::sqlite::missing(database));
    }
    if file.symlink_metadata().is_ok() {
        bail!(
            "{} exists already: a backup never replaces a file",
            file.display()
        );
    }
    let partial = Partial::beside(file)?;
    let source = Connection::open_with_flags(
        database,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .with_context(|| format!("could not open {}", database.display()))?;
    schema(&source, database)?;
    let target = partial
        .0
        .to_str()
        .context("the backup's path is not UTF-8")?;
    source
        .execute("VACUUM INTO ?1", [target])
        .with_context(|| format!("could not write {}", partial.0.display()))?;
    let pages = check(&partial.0)?;
    std::fs::File::open(&partial.0)?.sync_all()?;
    // A hard link gives the file its name only if the name is still free; then the partial
    // name goes.
    std::fs::hard_link(&partial.0, file)
        .with_context(|| format!("could not write {}", file.display()))?;
    drop(partial);
    sync_parent(file)?;
    Ok(pages)
}

/// Replaces the content of the database at `database` (created if missing) with the backup in
/// `file`, after checking that the backup is whole and of a schema this binary knows. Waits up
/// to `lock_timeout` for another writer (an import) to finish.
pub fn restore(file: &Path, database: &Path, lock_timeout: Duration) -> Result<()> {
    if !file.exists() {
        bail!("there is no backup file {}", file.display());
    }
    if database.exists() && std::fs::canonicalize(file)? == std::fs::canonicalize(database)? {
        bail!("{} is the database itself", file.display());
    }
    check(file)?;
    let source = Connection::open_with_flags(
        file,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .with_context(|| format!("could not open {}", file.display()))?;
    if !database.exists() {
        super::sqlite::create_private(database)?;
    }
    let mut target = Connection::open(database)
        .with_context(|| format!("could not open {}", database.display()))?;
    target.busy_timeout(lock_timeout)?;
    let started = Instant::now();
    {
        let copy = Backup::new(&source, &mut target)?;
        loop {
            // Every page in one step: one write transaction.
            match copy.step(-1)? {
                StepResult::Done => break,
                StepResult::More => {}
                StepResult::Busy | StepResult::Locked if started.elapsed() < lock_timeout => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                _ => bail!(
                    "{} stayed locked by another writer (an import?) for {lock_timeout:?}: \
                     nothing was restored; try again when it is done",
                    database.display()
                ),
            }
        }
    }
    target.pragma_update(None, "journal_mode", "WAL")?;
    Ok(())
}

/// Checks that `file` is a whole SQLite database of this server's schema ([`schema`]); answers
/// its pages.
fn check(file: &Path) -> Result<u64> {
    let conn = Connection::open_with_flags(
        file,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .with_context(|| format!("could not open {}", file.display()))?;
    let integrity: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .with_context(|| format!("{} is not an SQLite database", file.display()))?;
    if integrity != "ok" {
        bail!("{} is damaged: {integrity}", file.display());
    }
    schema(&conn, file)?;
    let pages: i64 = conn.query_row("PRAGMA page_count", [], |r| r.get(0))?;
    Ok(pages.unsigned_abs())
}

/// Checks that the database of `conn` (at `file`) has this server's schema, no newer than this
/// binary knows.
fn schema(conn: &Connection, file: &Path) -> Result<()> {
    super::check_schema(
        super::sqlite::applied(conn)?,
        &super::sqlite::MIGRATOR,
        Creation::MustExist,
        &format!("sqlite://{}", file.display()),
    )
}

/// A file being written, removed unless it was given its name.
struct Partial(PathBuf);

impl Partial {
    fn beside(file: &Path) -> Result<Partial> {
        let name = file
            .file_name()
            .with_context(|| format!("{} names no file", file.display()))?;
        let mut partial_name = std::ffi::OsString::from(".");
        partial_name.push(name);
        partial_name.push(format!(".partial-{}", std::process::id()));
        let partial = file.with_file_name(partial_name);
        let _ = std::fs::remove_file(&partial);
        Ok(Partial(partial))
    }
}

impl Drop for Partial {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Makes a new name in `file`'s folder durable.
fn sync_parent(file: &Path) -> Result<()> {
    let parent = match file.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    std::fs::File::open(parent)?.sync_all()?;
    Ok(())
}
