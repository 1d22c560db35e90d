//! Schema migrations: `sqlx::migrate!` over one folder per backend (`migrations/sqlite`,
//! `migrations/postgres`), and adoption of databases created by agentkit's earlier
//! hand-written migration runner.
//!
//! The earlier runner kept its bookkeeping in `agentkit_migrations (version, applied_at)` and
//! ran the same statements as the migration files of the same version. When that table exists
//! and sqlx's table does not, [`adopt_legacy`] records the versions it lists as applied in
//! sqlx's table (with the checksums of the embedded files, as `sqlx migrate` would) before the
//! migrator runs, so nothing is applied twice and later migrations apply as usual.

use agentkit_core::{Error, Result};
use sqlx::migrate::{Migrate, MigrateError, Migrator};

/// The table sqlx records applied migrations in. Not sqlx's default `_sqlx_migrations`: a
/// PostgreSQL database may be shared with an application that runs its own sqlx migrations,
/// whose versions would collide with ours.
pub(crate) const TABLE: &str = "agentkit_sqlx_migrations";

/// The bookkeeping table of the earlier hand-written runner.
pub(crate) const LEGACY_TABLE: &str = "agentkit_migrations";

/// `migrator` recording into [`TABLE`].
pub(crate) fn named(mut migrator: Migrator) -> Migrator {
    migrator.dangerous_set_table_name(TABLE);
    migrator
}

/// An error of the migrator, naming the backend and what to do.
pub(crate) fn migrate_error(backend: &str, e: MigrateError) -> Error {
    let hint = match &e {
        MigrateError::VersionMissing(_) => {
            " (the database was migrated by a newer agentkit: upgrade agentkit)"
        }
        MigrateError::VersionMismatch(_) => {
            " (an applied migration file was changed after release: restore it)"
        }
        MigrateError::Dirty(_) => " (a migration failed half-way: repair the database by hand)",
        _ => "",
    };
    super::store_error(backend, &format!("applying schema migrations{hint}"), e)
}

/// Record the migrations the earlier runner applied (`versions`) as applied in [`TABLE`],
/// without running them. Call with the migrations locked and inside a transaction, only when
/// [`LEGACY_TABLE`] exists and [`TABLE`] does not.
pub(crate) async fn adopt_legacy<C: Migrate>(
    backend: &str,
    conn: &mut C,
    migrator: &Migrator,
    versions: &[i64],
) -> Result<()> {
    if let Some(v) = versions.iter().find(|v| !migrator.version_exists(**v)) {
        return Err(super::store_error(
            backend,
            "adopting the earlier migration bookkeeping",
            format!(
                "`{LEGACY_TABLE}` records version {v}, which this agentkit does not know (the \
                 database was written by a newer agentkit: upgrade agentkit)"
            ),
        ));
    }
    conn.ensure_migrations_table(TABLE)
        .await
        .map_err(|e| migrate_error(backend, e))?;
    for m in migrator.iter().filter(|m| versions.contains(&m.version)) {
        conn.skip(TABLE, m)
            .await
            .map_err(|e| migrate_error(backend, e))?;
    }
    Ok(())
}
