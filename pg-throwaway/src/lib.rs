//! Throwaway PostgreSQL databases, the one helper the server's tests and xtask (contract tests,
//! other-language clients, the benchmark, the cluster) make them with: a database of a random
//! name created on the server of an admin URL (a role that may create databases), and dropped,
//! with its connections ended, when the handle is dropped.
//!
//! The calls are blocking. Each runs on a thread of its own with a runtime of its own, so they
//! may be made from plain code (xtask) and from inside an async test alike.

use anyhow::{Context, Result};
use sqlx::{Connection, PgConnection};
use std::future::Future;

/// A database made for one test or one run; dropped when this goes out of scope.
#[derive(Debug)]
pub struct Throwaway {
    admin_url: String,
    name: String,
    url: String,
}

impl Throwaway {
    /// Creates `{prefix}_{random}` on the server of `admin_url`
    /// (`postgres://USER:PASSWORD@HOST:PORT/DATABASE`).
    pub fn create(admin_url: &str, prefix: &str) -> Result<Throwaway> {
        ensure_identifier(prefix)?;
        let name = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
        let url = sibling_url(admin_url, &name)?;
        execute(admin_url, &format!("CREATE DATABASE {name}"))
            .with_context(|| format!("creating the throwaway database {name}"))?;
        Ok(Throwaway {
            admin_url: admin_url.to_string(),
            name,
            url,
        })
    }

    /// The database's URL: the admin URL with this database's name.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Refuses new connections to this database and ends the open ones, as if the database
    /// server had gone away.
    pub fn make_unreachable(&self) -> Result<()> {
        let name = &self.name;
        execute(
            &self.admin_url,
            &format!(
                "ALTER DATABASE {name} ALLOW_CONNECTIONS false; \
                 SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
            ),
        )
    }

    /// Undoes [`Throwaway::make_unreachable`]: the database takes connections again.
    pub fn make_reachable(&self) -> Result<()> {
        execute(
            &self.admin_url,
            &format!("ALTER DATABASE {} ALLOW_CONNECTIONS true", self.name),
        )
    }
}

impl Drop for Throwaway {
    fn drop(&mut self) {
        let _ = execute(
            &self.admin_url,
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
    }
}

/// Runs SQL (one or more statements, no results) on a new connection to `url`.
pub fn execute(url: &str, sql: &str) -> Result<()> {
    let (url, sql) = (url.to_string(), sql.to_string());
    blocking(async move {
        let mut conn = PgConnection::connect(&url).await?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut conn)
            .await?;
        conn.close().await?;
        Ok(())
    })
}

/// The first column of the first row of `query` (a number: a count, a flag as 0/1) on `url`.
pub fn query_i64(url: &str, query: &str) -> Result<i64> {
    let (url, query) = (url.to_string(), query.to_string());
    blocking(async move {
        let mut conn = PgConnection::connect(&url).await?;
        let value: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(query))
            .fetch_one(&mut conn)
            .await?;
        conn.close().await?;
        Ok(value)
    })
}

/// `postgres://u:p@host:port/admin?x` with the database `name` in place of `admin`.
fn sibling_url(admin_url: &str, name: &str) -> Result<String> {
    let (head, query) = match admin_url.split_once('?') {
        Some((head, query)) => (head, Some(query)),
        None => (admin_url, None),
    };
    let authority_start = head.find("://").map_or(0, |i| i + 3);
    let server = match head[authority_start..].find('/') {
        Some(slash) => &head[..authority_start + slash],
        None => head,
    };
    anyhow::ensure!(
        server.len() > authority_start,
        "the PostgreSQL admin URL names no server"
    );
    Ok(match query {
        Some(query) => format!("{server}/{name}?{query}"),
        None => format!("{server}/{name}"),
    })
}

fn ensure_identifier(prefix: &str) -> Result<()> {
    anyhow::ensure!(
        prefix.starts_with(|c: char| c.is_ascii_lowercase())
            && prefix
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
        "a throwaway database prefix is lower-case letters, digits and `_`, not {prefix:?}"
    );
    Ok(())
}

/// Runs `work` to completion on a thread and runtime of its own.
fn blocking<T: Send + 'static>(
    work: impl Future<Output = Result<T>> + Send + 'static,
) -> Result<T> {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("a runtime for the PostgreSQL call")?
            .block_on(work)
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the PostgreSQL call panicked"))?
}

#[cfg(test)]
mod tests {
    use super::{ensure_identifier, sibling_url};

    #[test]
    fn the_database_name_replaces_the_admin_database() {
        for (admin, expected) in [
            (
                "postgres://u:p@127.0.0.1:5432/postgres",
                "postgres://u:p@127.0.0.1:5432/t1",
            ),
            (
                "postgres://u:p@h/postgres?sslmode=require",
                "postgres://u:p@h/t1?sslmode=require",
            ),
            ("postgres://u@h:5432", "postgres://u@h:5432/t1"),
            ("postgres://u:a%2Fb@h/postgres", "postgres://u:a%2Fb@h/t1"),
        ] {
            assert_eq!(sibling_url(admin, "t1").unwrap(), expected, "{admin}");
        }
        assert!(sibling_url("postgres:///postgres", "t1").is_err());
    }

    #[test]
    fn prefixes_are_plain_identifiers() {
        assert!(ensure_identifier("lc_test").is_ok());
        for bad in ["", "1x", "Lc", "lc-test", "lc;drop", "lc test"] {
            assert!(ensure_identifier(bad).is_err(), "{bad:?}");
        }
    }
}
