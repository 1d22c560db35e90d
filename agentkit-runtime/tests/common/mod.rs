//! What agentkit-runtime's PostgreSQL tests share: a throwaway server ([`Pg`], in `pg.rs`,
//! which agentkit-server's tests include too) and a fresh database on it.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    dead_code,
    unreachable_pub,
    unused_imports
)]

mod pg;

pub use pg::Pg;

#[cfg(feature = "postgres")]
impl Pg {
    /// A fresh, empty database `agentkit_<name>_<pid>` on this server (dropped first if a
    /// previous run left it); returns its URL.
    pub async fn fresh_db(&self, name: &str) -> String {
        let admin = agentkit_runtime::PostgresStore::connect(&self.url)
            .await
            .unwrap();
        let db = format!("agentkit_{name}_{}", std::process::id());
        for sql in [
            format!("DROP DATABASE IF EXISTS {db}"),
            format!("CREATE DATABASE {db}"),
        ] {
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .execute(admin.pool())
                .await
                .unwrap();
        }
        admin.pool().close().await;
        format!("{}/{db}", self.url.rsplit_once('/').unwrap().0)
    }
}
