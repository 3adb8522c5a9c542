//! Shared by the test crates: a fresh PostgreSQL database per test.

/// A new database on the server named by VIDPIPE_TEST_POSTGRES_URL (default:
/// the local one), as a URL. Unreachable: `None` with a loud message outside
/// CI, a failure in CI (`.ci/run` sets `CI`).
pub async fn fresh_database() -> Option<String> {
    let admin_url = std::env::var("VIDPIPE_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    sqlx::any::install_default_drivers();
    let admin = match sqlx::AnyPool::connect(&admin_url).await {
        Ok(pool) => pool,
        Err(e) if std::env::var_os("CI").is_none() => {
            eprintln!("SKIPPED: PostgreSQL at {admin_url} unreachable ({e}); set VIDPIPE_TEST_POSTGRES_URL");
            return None;
        }
        Err(e) => panic!("PostgreSQL at {admin_url} unreachable in CI: {e}"),
    };
    let name = format!("vidpipe_test_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(&format!("CREATE DATABASE {name}")).execute(&admin).await.unwrap();
    let (base, _) = admin_url.rsplit_once('/').unwrap();
    Some(format!("{base}/{name}"))
}
