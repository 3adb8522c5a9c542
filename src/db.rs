//! The SQL database: SQLite (embedded default) or PostgreSQL.
//!
//! Lectures and jobs live in the same database so that creating a lecture and
//! enqueueing its job is one transaction. Both backends go through sqlx's
//! `Any` driver with one schema (`migrations/`) written in types both
//! understand, and times stored as integer milliseconds. Where the two
//! differ (claiming), [`Dialect`] says which query to use.

use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Executor};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

#[derive(Debug, Clone)]
pub struct Database {
    pub pool: AnyPool,
    pub dialect: Dialect,
}

impl Database {
    pub async fn connect(url: &str) -> Result<Database, sqlx::Error> {
        sqlx::any::install_default_drivers();
        let (dialect, url) = if url.starts_with("sqlite:") {
            // Create the file on first start.
            let url = if url.contains("mode=") { url.to_string() } else { format!("{url}?mode=rwc") };
            (Dialect::Sqlite, url)
        } else {
            (Dialect::Postgres, url.to_string())
        };
        let options = AnyConnectOptions::from_str(&url)?;
        let pool = AnyPoolOptions::new()
            .max_connections(if dialect == Dialect::Sqlite { 8 } else { 16 })
            .acquire_timeout(Duration::from_secs(30))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if dialect == Dialect::Sqlite {
                        // Writers wait for each other instead of failing; WAL
                        // lets readers run while a worker writes progress.
                        conn.execute(
                            "PRAGMA busy_timeout = 30000; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;",
                        )
                        .await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await?;
        if dialect == Dialect::Sqlite {
            pool.execute("PRAGMA journal_mode = WAL").await?;
        }
        migrate(&pool, dialect).await?;
        Ok(Database { pool, dialect })
    }
}

/// Brings the schema up to date. PostgreSQL serializes processes that
/// migrate at once (sqlx takes an advisory lock); SQLite has no such lock,
/// so two processes started together on a new database (`vidpipe api` and
/// `vidpipe worker` side by side) can both try to apply one migration, and
/// the loser's fails ("table ... already exists") and rolls back. It tries
/// again: by then the winner has recorded the migration, which is skipped.
async fn migrate(pool: &AnyPool, dialect: Dialect) -> Result<(), sqlx::Error> {
    let migrator = sqlx::migrate!("./migrations");
    let mut tries = 0;
    loop {
        match migrator.run(pool).await {
            Ok(()) => return Ok(()),
            Err(e) if dialect == Dialect::Sqlite && tries < 20 => {
                tries += 1;
                tracing::debug!(error = %e, "another process is migrating the database; trying again");
                tokio::time::sleep(Duration::from_millis(100 + 50 * tries)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// A fresh SQLite database in a temporary directory, for unit tests; the
/// directory (and the database) goes when the guard drops.
#[cfg(test)]
pub async fn scratch() -> (tempfile::TempDir, Database) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let db = Database::connect(&format!("sqlite://{}", dir.path().join("test.db").display()))
        .await
        .expect("a scratch SQLite database");
    (dir, db)
}
