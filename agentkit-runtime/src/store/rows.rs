//! What the SQL stores share: mapping rows to runs and journal entries, JSON columns, and
//! the journal-append error. Both backends select JSON columns as text (PostgreSQL casts its
//! `JSONB` with `::text`), so one generic mapping serves both.

use agentkit_core::{Error, Result, Usage};
use sqlx::{ColumnIndex, Decode, Row, Type};

use serde_json::Value;

use super::InvalidStoredData;
use crate::model::{EntryKind, JournalEntry, RunRecord, parse_status};

/// Rows per journal `INSERT` (9 parameters each, well under both backends' limits).
pub(crate) const CHUNK: usize = 500;

/// Encode a JSON column.
pub(crate) fn to_json(backend: &str, v: &impl serde::Serialize, what: &str) -> Result<String> {
    serde_json::to_string(v)
        .map_err(|e| Error::json(format!("{backend} store: encoding {what}"), e))
}

/// Decode the JSON column `column` of `what` (written out only when it fails to decode).
fn decode_column<T: serde::de::DeserializeOwned>(
    backend: &str,
    s: &str,
    what: &dyn Fn() -> String,
    column: &str,
) -> Result<T> {
    serde_json::from_str(s).map_err(|e| {
        Error::json(
            format!("{backend} store: decoding the `{column}` of {}", what()),
            e,
        )
    })
}

/// Decode a JSON column.
pub(crate) fn from_json<T: serde::de::DeserializeOwned>(
    backend: &str,
    s: &str,
    what: &str,
) -> Result<T> {
    serde_json::from_str(s).map_err(|e| Error::json(format!("{backend} store: decoding {what}"), e))
}

/// The columns of one row, read by name, whatever the driver: sqlx rows ([`SqlxRow`]) for
/// reads and PostgreSQL, rusqlite rows for the SQLite writer. The row mappings below are
/// written once against it. Each method gives an error naming the backend, what was read
/// (`what`) and the column.
pub(crate) trait Columns {
    /// A text column.
    fn text(&self, backend: &str, what: &str, name: &str) -> Result<String>;
    /// A text column that may be NULL.
    fn opt_text(&self, backend: &str, what: &str, name: &str) -> Result<Option<String>>;
    /// An integer column.
    fn int(&self, backend: &str, what: &str, name: &str) -> Result<i64>;
    /// An integer column that may be NULL.
    fn opt_int(&self, backend: &str, what: &str, name: &str) -> Result<Option<i64>>;
    /// A floating-point column.
    fn real(&self, backend: &str, what: &str, name: &str) -> Result<f64>;
}

/// The error of a column that could not be read.
pub(crate) fn column_error(
    backend: &str,
    what: &str,
    name: &str,
    e: impl Into<agentkit_core::BoxError>,
) -> Error {
    super::store_error(backend, &format!("reading {what} (column `{name}`)"), e)
}

/// A sqlx row as [`Columns`].
pub(crate) struct SqlxRow<'r, R>(pub(crate) &'r R);

impl<'r, R> SqlxRow<'r, R>
where
    R: Row,
    for<'n> &'n str: ColumnIndex<R>,
{
    fn col<T>(&self, backend: &str, what: &str, name: &str) -> Result<T>
    where
        T: Decode<'r, R::Database> + Type<R::Database>,
    {
        self.0
            .try_get(name)
            .map_err(|e| column_error(backend, what, name, e))
    }
}

impl<'r, R> Columns for SqlxRow<'r, R>
where
    R: Row,
    for<'n> &'n str: ColumnIndex<R>,
    String: Decode<'r, R::Database> + Type<R::Database>,
    Option<String>: Decode<'r, R::Database> + Type<R::Database>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
    Option<i64>: Decode<'r, R::Database> + Type<R::Database>,
    f64: Decode<'r, R::Database> + Type<R::Database>,
{
    fn text(&self, backend: &str, what: &str, name: &str) -> Result<String> {
        self.col(backend, what, name)
    }
    fn opt_text(&self, backend: &str, what: &str, name: &str) -> Result<Option<String>> {
        self.col(backend, what, name)
    }
    fn int(&self, backend: &str, what: &str, name: &str) -> Result<i64> {
        self.col(backend, what, name)
    }
    fn opt_int(&self, backend: &str, what: &str, name: &str) -> Result<Option<i64>> {
        self.col(backend, what, name)
    }
    fn real(&self, backend: &str, what: &str, name: &str) -> Result<f64> {
        self.col(backend, what, name)
    }
}

/// A run row's columns as the database returned them, before any check.
#[derive(Debug, Clone)]
pub(crate) struct RawRun {
    pub(crate) id: String,
    pub(crate) target: String,
    pub(crate) version: i64,
    pub(crate) input: String,
    pub(crate) status: String,
    pub(crate) attempts: i64,
    pub(crate) idempotency_key: Option<String>,
    pub(crate) created_at: i64,
    pub(crate) updated_at: i64,
    pub(crate) output: Option<String>,
    pub(crate) error: Option<String>,
    pub(crate) usage: String,
    pub(crate) cost_usd: f64,
    pub(crate) owner: Option<String>,
    pub(crate) lease_until: Option<i64>,
    pub(crate) wake_at: Option<i64>,
    /// A JSON array of signal names, or NULL.
    pub(crate) waiting_for: Option<String>,
}

/// A journal row's columns as the database returned them, before any check.
#[derive(Debug, Clone)]
pub(crate) struct RawEntry {
    pub(crate) run_id: String,
    pub(crate) seq: i64,
    pub(crate) key: String,
    pub(crate) kind: String,
    pub(crate) value: String,
    pub(crate) latency_ms: i64,
    pub(crate) usage: String,
    pub(crate) cost_usd: f64,
    pub(crate) created_at: i64,
}

/// A stored integer that must fit `T` (counts, versions, sequence numbers: never negative).
fn fit<T: TryFrom<i64>>(backend: &str, what: &str, column: &'static str, value: i64) -> Result<T> {
    fit_named(backend, &|| what.to_owned(), column, value)
}

/// [`fit`], with what the error names written out only when there is an error.
fn fit_named<T: TryFrom<i64>>(
    backend: &str,
    what: &dyn Fn() -> String,
    column: &'static str,
    value: i64,
) -> Result<T> {
    T::try_from(value).map_err(|_| {
        InvalidStoredData::new(
            backend,
            &what(),
            column,
            format!(
                "is {value}, out of range for {}",
                std::any::type_name::<T>()
            ),
        )
        .into()
    })
}

/// A run from its raw columns: every value is checked, so a corrupt or foreign row gives an
/// error naming the run and the column, never a panic or a silently changed value.
pub(crate) fn run_from_raw(backend: &str, raw: RawRun) -> Result<RunRecord> {
    // What the errors name, written out only when there is one (this runs for every run
    // read or updated).
    let what = || format!("run {}", raw.id);
    let json =
        |s: &str, column: &str| -> Result<Value> { decode_column(backend, s, &what, column) };
    let status = parse_status(&raw.status).ok_or_else(|| {
        Error::from(InvalidStoredData::new(
            backend,
            &what(),
            "status",
            format!(
                "is `{}`, not a known run status (database written by a newer agentkit?)",
                raw.status
            ),
        ))
    })?;
    let version = fit_named(backend, &what, "version", raw.version)?;
    let attempts = fit_named(backend, &what, "attempts", raw.attempts)?;
    let input = json(&raw.input, "input")?;
    let output = raw
        .output
        .as_deref()
        .map(|o| json(o, "output"))
        .transpose()?;
    let usage = decode_column::<Usage>(backend, &raw.usage, &what, "usage")?;
    let waiting_for = raw
        .waiting_for
        .as_deref()
        .map(|w| decode_column::<Vec<String>>(backend, w, &what, "waiting_for"))
        .transpose()?;
    Ok(RunRecord {
        version,
        attempts,
        input,
        output,
        usage,
        status,
        id: raw.id,
        target: raw.target,
        idempotency_key: raw.idempotency_key,
        created_at: raw.created_at,
        updated_at: raw.updated_at,
        error: raw.error,
        cost_usd: raw.cost_usd,
        owner: raw.owner,
        lease_until: raw.lease_until,
        wake_at: raw.wake_at,
        waiting_for,
    })
}

/// A journal entry from its raw columns, checked like [`run_from_raw`].
pub(crate) fn entry_from_raw(backend: &str, raw: RawEntry) -> Result<JournalEntry> {
    let what = format!("journal entry {} of run {}", raw.seq, raw.run_id);
    Ok(JournalEntry {
        seq: fit(backend, &what, "seq", raw.seq)?,
        latency_ms: fit(backend, &what, "latency_ms", raw.latency_ms)?,
        kind: EntryKind::parse(&raw.kind),
        value: from_json(backend, &raw.value, &format!("the `value` of {what}"))?,
        usage: from_json(backend, &raw.usage, &format!("the `usage` of {what}"))?,
        run_id: raw.run_id,
        key: raw.key,
        cost_usd: raw.cost_usd,
        created_at: raw.created_at,
    })
}

/// A run from a row with every run column (JSON columns as text).
pub(crate) fn run_from_columns(backend: &str, row: &impl Columns) -> Result<RunRecord> {
    run_from_raw(backend, raw_run_from_columns(backend, row)?)
}

/// The columns of a run row, its JSON columns not parsed yet ([`run_from_raw`] does that):
/// the SQLite writer thread takes only these, so that the parsing happens on the caller's
/// task, not on the one thread every write waits for.
pub(crate) fn raw_run_from_columns(backend: &str, row: &impl Columns) -> Result<RawRun> {
    let what = "a run row";
    Ok(RawRun {
        id: row.text(backend, what, "id")?,
        target: row.text(backend, what, "target")?,
        version: row.int(backend, what, "version")?,
        input: row.text(backend, what, "input")?,
        status: row.text(backend, what, "status")?,
        attempts: row.int(backend, what, "attempts")?,
        idempotency_key: row.opt_text(backend, what, "idempotency_key")?,
        created_at: row.int(backend, what, "created_at")?,
        updated_at: row.int(backend, what, "updated_at")?,
        output: row.opt_text(backend, what, "output")?,
        error: row.opt_text(backend, what, "error")?,
        usage: row.text(backend, what, "usage")?,
        cost_usd: row.real(backend, what, "cost_usd")?,
        owner: row.opt_text(backend, what, "owner")?,
        lease_until: row.opt_int(backend, what, "lease_until")?,
        wake_at: row.opt_int(backend, what, "wake_at")?,
        waiting_for: row.opt_text(backend, what, "waiting_for")?,
    })
}

/// A journal entry from a row with every journal column (JSON columns as text).
pub(crate) fn entry_from_columns(backend: &str, row: &impl Columns) -> Result<JournalEntry> {
    let what = "a journal row";
    let raw = RawEntry {
        run_id: row.text(backend, what, "run_id")?,
        seq: row.int(backend, what, "seq")?,
        key: row.text(backend, what, "key")?,
        kind: row.text(backend, what, "kind")?,
        value: row.text(backend, what, "value")?,
        latency_ms: row.int(backend, what, "latency_ms")?,
        usage: row.text(backend, what, "usage")?,
        cost_usd: row.real(backend, what, "cost_usd")?,
        created_at: row.int(backend, what, "created_at")?,
    };
    entry_from_raw(backend, raw)
}

/// The error of a failed journal append: which run and key, and the likely causes.
#[cfg(feature = "postgres")]
pub(crate) fn append_error(chunk: &[JournalEntry], err: sqlx::Error) -> Error {
    let (key, run) = chunk
        .first()
        .map(|e| (e.key.clone(), e.run_id.as_str()))
        .unwrap_or_default();
    append_error_of(key, run, chunk.len(), err)
}

/// The statuses in which a run's executor may still append to its journal (a fenced append,
/// [`JournalStore::append_fenced`](super::JournalStore::append_fenced)): running, or waiting
/// for a signal one of its tool calls asked for while the calls beside it finish. As SQL.
pub(crate) const FENCE_STATUSES: &str = "('running', 'waiting_input', 'waiting_approval')";

/// The one run `entries` belong to (`None` when there are none); an error when they belong to
/// several (a fenced append checks one run).
pub(crate) fn one_run(entries: &[JournalEntry]) -> Result<Option<&str>> {
    let Some(first) = entries.first() else {
        return Ok(None);
    };
    if let Some(other) = entries.iter().find(|e| e.run_id != first.run_id) {
        return Err(Error::InvalidRequest(format!(
            "a fenced journal append takes the entries of one run, got runs {} and {}: append \
             each run's entries on their own",
            first.run_id, other.run_id
        )));
    }
    Ok(Some(&first.run_id))
}

/// The error a fenced append fails its write with when the run is no longer its owner's (see
/// [`is_fenced_out`]).
pub(crate) fn fenced_out(run_id: &str) -> Error {
    Error::Cancelled {
        run_id: run_id.to_owned(),
    }
}

/// Whether `e` is [`fenced_out`]'s.
pub(crate) fn is_fenced_out(e: &Error) -> bool {
    matches!(e, Error::Cancelled { .. })
}

/// [`append_error`] for `len` entries of run `run`, the first keyed `key`.
pub(crate) fn append_error_of(
    key: String,
    run: &str,
    len: usize,
    err: impl std::fmt::Display,
) -> Error {
    Error::Journal {
        key,
        message: format!(
            "appending {len} entries to the journal of run {run} failed (a key or seq already \
             recorded, or an unknown run): {err}"
        ),
    }
}

/// A document row read back.
pub(crate) fn doc_from_columns(
    backend: &str,
    row: &impl Columns,
    collection: &str,
) -> Result<crate::model::Doc> {
    let what = format!("a document of collection `{collection}`");
    let id = row.text(backend, &what, "id")?;
    let what = format!("document `{id}` of collection `{collection}`");
    let value = row.text(backend, &what, "value")?;
    let revision = row.int(backend, &what, "revision")?;
    Ok(crate::model::Doc {
        value: serde_json::from_str(&value).map_err(|e| {
            InvalidStoredData::new(backend, &what, "value", format!("is not JSON: {e}"))
        })?,
        revision: fit(backend, &what, "revision", revision)?,
        created_at: row.int(backend, &what, "created_at")?,
        updated_at: row.int(backend, &what, "updated_at")?,
        id,
    })
}

/// The document a write stored: the value it was given (stored as its JSON text) and the
/// row's `(revision, created_at, updated_at)` the write returned.
pub(crate) fn written_doc(
    backend: &str,
    collection: &str,
    id: String,
    value: Value,
    (revision, created_at, updated_at): (i64, i64, i64),
) -> Result<crate::model::Doc> {
    Ok(crate::model::Doc {
        revision: fit_named(
            backend,
            &|| format!("document `{id}` of collection `{collection}`"),
            "revision",
            revision,
        )?,
        id,
        value,
        created_at,
        updated_at,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    /// Text that is sometimes JSON of the right shape, sometimes not.
    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<String>(),
            Just("{\"input_tokens\":1,\"output_tokens\":2}".to_owned()),
            Just("\"hi\"".to_owned()),
            Just("1e400".to_owned()),
            Just("{\"input_tokens\":-1}".to_owned()),
            Just("[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]".to_owned()),
            "[a-z_]{0,16}",
        ]
    }

    fn int() -> impl Strategy<Value = i64> {
        prop_oneof![
            any::<i64>(),
            Just(i64::MIN),
            Just(-1i64),
            Just(0i64),
            Just(i64::from(u32::MAX) + 1)
        ]
    }

    fn status() -> impl Strategy<Value = String> {
        prop_oneof![
            proptest::sample::select(
                crate::model::ALL_STATUSES
                    .map(|s| s.as_str().to_owned())
                    .to_vec()
            ),
            any::<String>(),
        ]
    }

    prop_compose! {
        fn raw_run()(
            id in any::<String>(), target in any::<String>(), version in int(), input in text(),
            status in status(), attempts in int(), idempotency_key in any::<Option<String>>(),
            created_at in int(), updated_at in int(), output in proptest::option::of(text()),
            error in any::<Option<String>>(), usage in text(), cost_usd in any::<f64>(),
            owner in any::<Option<String>>(), lease_until in any::<Option<i64>>(),
            wake_at in any::<Option<i64>>(), waiting_for in proptest::option::of(prop_oneof![
                text(), Just("[\"approval/c1\",\"approval\"]".to_owned())
            ]),
        ) -> RawRun {
            RawRun {
                id, target, version, input, status, attempts, idempotency_key, created_at,
                updated_at, output, error, usage, cost_usd, owner, lease_until, wake_at,
                waiting_for,
            }
        }
    }

    prop_compose! {
        fn raw_entry()(
            run_id in any::<String>(), seq in int(), key in any::<String>(), kind in text(),
            value in text(), latency_ms in int(), usage in text(), cost_usd in any::<f64>(),
            created_at in int(),
        ) -> RawEntry {
            RawEntry { run_id, seq, key, kind, value, latency_ms, usage, cost_usd, created_at }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Any run row maps to a run or to an error; values that do not fit are errors.
        #[test]
        fn any_run_row_maps_without_panic(raw in raw_run()) {
            let fits = u32::try_from(raw.version).is_ok() && u32::try_from(raw.attempts).is_ok();
            match run_from_raw("sqlite", raw.clone()) {
                Ok(run) => {
                    prop_assert!(fits);
                    prop_assert_eq!(i64::from(run.version), raw.version);
                    prop_assert_eq!(i64::from(run.attempts), raw.attempts);
                    prop_assert_eq!(run.status.as_str(), raw.status.as_str());
                }
                Err(e) => {
                    let msg = e.to_string();
                    prop_assert!(msg.starts_with("sqlite store: "), "{}", msg);
                    prop_assert!(msg.contains(&raw.id), "{}", msg);
                }
            }
        }

        /// Any journal row maps to an entry or to an error naming the entry.
        #[test]
        fn any_journal_row_maps_without_panic(raw in raw_entry()) {
            let fits = raw.seq >= 0 && raw.latency_ms >= 0;
            match entry_from_raw("postgres", raw.clone()) {
                Ok(e) => {
                    prop_assert!(fits);
                    prop_assert_eq!(i64::try_from(e.seq).unwrap(), raw.seq);
                }
                Err(e) => {
                    let msg = e.to_string();
                    prop_assert!(msg.starts_with("postgres store: "), "{}", msg);
                    prop_assert!(msg.contains(&format!("journal entry {}", raw.seq)), "{}", msg);
                }
            }
        }
    }

    #[test]
    fn out_of_range_values_are_typed_errors_naming_run_and_column() {
        let raw = RawRun {
            id: "r1".into(),
            target: "t".into(),
            version: -3,
            input: "null".into(),
            status: "queued".into(),
            attempts: 0,
            idempotency_key: None,
            created_at: 0,
            updated_at: 0,
            output: None,
            error: None,
            usage: "{}".into(),
            cost_usd: 0.0,
            owner: None,
            lease_until: None,
            wake_at: None,
            waiting_for: None,
        };
        let err = run_from_raw("sqlite", raw).unwrap_err();
        assert_eq!(
            err.to_string(),
            "sqlite store: reading run r1: column `version` is -3, out of range for u32"
        );
        let agentkit_core::Error::Other { error, .. } = &err else {
            panic!("{err:?}")
        };
        let data = error.downcast_ref::<InvalidStoredData>().unwrap();
        assert_eq!(data.column, "version");
    }
}
