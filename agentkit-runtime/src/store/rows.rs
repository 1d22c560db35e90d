//! What the SQL stores share: mapping rows to runs and journal entries, JSON columns, and
//! the journal-append error. Both backends select JSON columns as text (PostgreSQL casts its
//! `JSONB` with `::text`), so one generic mapping serves both.

use agentkit_core::{Error, Result, Usage};
use sqlx::{ColumnIndex, Decode, Row, Type};

use crate::model::{EntryKind, JournalEntry, RunRecord, parse_status};

/// Rows per journal `INSERT` (9 parameters each, well under both backends' limits).
pub(crate) const CHUNK: usize = 500;

/// Encode a JSON column.
pub(crate) fn to_json(backend: &str, v: &impl serde::Serialize, what: &str) -> Result<String> {
    serde_json::to_string(v)
        .map_err(|e| Error::json(format!("{backend} store: encoding {what}"), e))
}

/// Decode a JSON column.
pub(crate) fn from_json<T: serde::de::DeserializeOwned>(
    backend: &str,
    s: &str,
    what: &str,
) -> Result<T> {
    serde_json::from_str(s).map_err(|e| Error::json(format!("{backend} store: decoding {what}"), e))
}

/// A column of `row`, with an error naming the backend, what was read and the column.
fn col<'r, R, T>(backend: &str, row: &'r R, what: &str, name: &str) -> Result<T>
where
    R: Row,
    for<'n> &'n str: ColumnIndex<R>,
    T: Decode<'r, R::Database> + Type<R::Database>,
{
    row.try_get(name)
        .map_err(|e| super::store_error(backend, &format!("reading {what} (column `{name}`)"), e))
}

/// A run from a row with every run column (JSON columns as text).
pub(crate) fn run_from_row<'r, R>(backend: &str, row: &'r R) -> Result<RunRecord>
where
    R: Row,
    for<'n> &'n str: ColumnIndex<R>,
    String: Decode<'r, R::Database> + Type<R::Database>,
    Option<String>: Decode<'r, R::Database> + Type<R::Database>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
    Option<i64>: Decode<'r, R::Database> + Type<R::Database>,
    f64: Decode<'r, R::Database> + Type<R::Database>,
{
    let what = "a run row";
    let status: String = col(backend, row, what, "status")?;
    let input: String = col(backend, row, what, "input")?;
    let output: Option<String> = col(backend, row, what, "output")?;
    let usage: String = col(backend, row, what, "usage")?;
    let version: i64 = col(backend, row, what, "version")?;
    let attempts: i64 = col(backend, row, what, "attempts")?;
    Ok(RunRecord {
        id: col(backend, row, what, "id")?,
        target: col(backend, row, what, "target")?,
        version: u32::try_from(version).unwrap_or(0),
        input: from_json(backend, &input, "a run input")?,
        status: parse_status(&status).ok_or_else(|| {
            Error::Workflow(format!(
                "{backend} store: unknown run status `{status}` (database written by a newer \
                 agentkit?)"
            ))
        })?,
        attempts: u32::try_from(attempts).unwrap_or(0),
        idempotency_key: col(backend, row, what, "idempotency_key")?,
        created_at: col(backend, row, what, "created_at")?,
        updated_at: col(backend, row, what, "updated_at")?,
        output: output
            .map(|o| from_json(backend, &o, "a run output"))
            .transpose()?,
        error: col(backend, row, what, "error")?,
        usage: from_json::<Usage>(backend, &usage, "run usage")?,
        cost_usd: col(backend, row, what, "cost_usd")?,
        owner: col(backend, row, what, "owner")?,
        lease_until: col(backend, row, what, "lease_until")?,
        wake_at: col(backend, row, what, "wake_at")?,
    })
}

/// A journal entry from a row with every journal column (JSON columns as text).
pub(crate) fn entry_from_row<'r, R>(backend: &str, row: &'r R) -> Result<JournalEntry>
where
    R: Row,
    for<'n> &'n str: ColumnIndex<R>,
    String: Decode<'r, R::Database> + Type<R::Database>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
    f64: Decode<'r, R::Database> + Type<R::Database>,
{
    let what = "a journal row";
    let seq: i64 = col(backend, row, what, "seq")?;
    let latency: i64 = col(backend, row, what, "latency_ms")?;
    let kind: String = col(backend, row, what, "kind")?;
    let value: String = col(backend, row, what, "value")?;
    let usage: String = col(backend, row, what, "usage")?;
    Ok(JournalEntry {
        run_id: col(backend, row, what, "run_id")?,
        seq: u64::try_from(seq).unwrap_or(0),
        key: col(backend, row, what, "key")?,
        kind: EntryKind::parse(&kind),
        value: from_json(backend, &value, "a journal value")?,
        latency_ms: u64::try_from(latency).unwrap_or(0),
        usage: from_json(backend, &usage, "journal usage")?,
        cost_usd: col(backend, row, what, "cost_usd")?,
        created_at: col(backend, row, what, "created_at")?,
    })
}

/// The error of a failed journal append: which run and key, and the likely causes.
pub(crate) fn append_error(chunk: &[JournalEntry], err: sqlx::Error) -> Error {
    let (key, run) = chunk
        .first()
        .map(|e| (e.key.clone(), e.run_id.clone()))
        .unwrap_or_default();
    Error::Journal {
        key,
        message: format!(
            "appending {} entries to the journal of run {run} failed (a key or seq already \
             recorded, or an unknown run): {err}",
            chunk.len()
        ),
    }
}
