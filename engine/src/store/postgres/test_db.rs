//! Throwaway databases for tests: [`TestDatabase::create`] makes `shop_test_<random>` on the
//! server [`ADMIN_URL`] names (or `SHOP_TEST_POSTGRES` says) and drops it when dropped.
//!
//! Where PostgreSQL is unreachable a test prints a loud `SKIPPED: ...` and passes, unless
//! `SHOP_REQUIRE_POSTGRES=1` (CI), where it fails. This module is test support: it must never
//! be used by the engine itself.

use super::bridge::{connect, run_on, runtime};
use std::sync::atomic::{AtomicU64, Ordering};

/// The server and maintenance database test databases are created from.
pub const ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
/// Names another server than [`ADMIN_URL`] (same form).
pub const ADMIN_URL_ENV: &str = "SHOP_TEST_POSTGRES";
/// Set to `1` to make an unreachable server fail tests instead of skipping them.
pub const REQUIRE_ENV: &str = "SHOP_REQUIRE_POSTGRES";

/// A database that exists until this is dropped.
pub struct TestDatabase {
    admin: String,
    name: String,
    /// The database's URL.
    pub url: String,
}

fn admin_url() -> String {
    std::env::var(ADMIN_URL_ENV).unwrap_or_else(|_| ADMIN_URL.to_owned())
}

fn on_admin(admin: &str, sql: String) -> Result<(), String> {
    let config: tokio_postgres::Config = admin.parse().map_err(|e| format!("{e}"))?;
    let runtime = runtime().map_err(|e| e.to_string())?;
    run_on(&runtime.handle(), async move {
        let client = connect(&config).await?;
        Ok(client.batch_execute(&sql).await?)
    })
    .map_err(|e| e.to_string())
}

impl TestDatabase {
    /// Creates a fresh database; `None` (after printing why) when the server is unreachable
    /// and not required. `test` names the caller in that message.
    ///
    /// # Panics
    /// When the server is unreachable and `SHOP_REQUIRE_POSTGRES=1`.
    pub fn create(test: &str) -> Option<TestDatabase> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let admin = admin_url();
        let name = format!(
            "shop_test_{}_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
            rand::random::<u32>()
        );
        match on_admin(&admin, format!("CREATE DATABASE {name}")) {
            Ok(()) => {}
            Err(error) if std::env::var(REQUIRE_ENV).is_ok_and(|v| v == "1") => {
                panic!("{test}: PostgreSQL at {admin} is required ({REQUIRE_ENV}=1) and failed: {error}")
            }
            Err(error) => {
                eprintln!(
                    "\n**********\nSKIPPED: {test}: PostgreSQL at {admin} is unreachable ({error})\n**********\n"
                );
                return None;
            }
        }
        let url = match admin.rsplit_once('/') {
            Some((server, _)) => format!("{server}/{name}"),
            None => format!("{admin}/{name}"),
        };
        Some(TestDatabase { admin, name, url })
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // FORCE ends the connections an engine under test may still hold.
        if let Err(error) = on_admin(&self.admin, format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name)) {
            eprintln!("could not drop the test database {}: {error}", self.name);
        }
    }
}
