use clap::Parser;
use linked_customer_server::cli::{self, Cli};
use std::process::ExitCode;

#[actix_web::main]
async fn main() -> ExitCode {
    return_large_blocks_to_the_system();
    private_files();
    let cli = Cli::parse();
    let _logs = linked_customer_server::telemetry::init_logging();
    match cli::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Large blocks (an argon2 check's 19 MiB) are mapped for each use and unmapped when freed.
/// By default glibc raises its mapping threshold after the first such block is freed, and from
/// then on serves them from per-thread arenas that keep the memory: a burst of password checks
/// left the server at several times its usual size for good (BENCHMARKS.md, "Memory").
/// Setting the threshold explicitly turns that adjustment off.
fn return_large_blocks_to_the_system() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `mallopt` only sets an allocator parameter (under the allocator's own lock), and
    // this runs first thing, before the server's threads start.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}

/// Whatever the server writes (the SQLite database and its `-wal` and `-shm` among them) is
/// readable by its owner only: it holds password hashes and customer records.
fn private_files() {
    // SAFETY: `umask` only sets the process's file-creation mask; it cannot fail.
    unsafe {
        libc::umask(0o077);
    }
}
