//! The PostgreSQL store: the same values as the sled store, one table per kind (the schema is in
//! `migrations/`, applied at open under PostgreSQL's own advisory lock, so replicas that start
//! together apply it once), shared by every replica of one database.
//!
//! # What makes several replicas safe
//!
//! * **A clinic is polled by one replica at a time.** Its lease ([`super::lease`]) names the
//!   replica; every write a poll makes (a page, a checkpoint, a baseline) checks the lease inside
//!   its own transaction (`SELECT ... FOR SHARE`, which also holds off a takeover until the commit)
//!   and is refused with [`StoreError::LeaseLost`] when the lease has expired or moved. So a replica
//!   that was partitioned and comes back cannot write over what the new owner stored.
//! * **A delivery is attempted by one replica at a time.** A worker claims an entry before its
//!   attempt ([`PgStore::outbox_claim`]: `FOR UPDATE SKIP LOCKED` on the row, then a claim until a
//!   deadline); the outcome clears the claim. A replica that dies mid-attempt leaves a claim that
//!   expires, and the entry is attempted again elsewhere under the same `webhook-id`.
//! * **Everything is durable at commit**: there is nothing to flush, and a page is one
//!   transaction, as on sled.
//! * **One change-id key for all**: the first replica stores it (`INSERT ... ON CONFLICT DO
//!   NOTHING`), every other one reads that one, so a change has the same `webhook-id` whichever
//!   replica detects it.

use super::store::{
    decode, encode, DestHealth, Due, Dump, Erased, JournalWrite, PageWrite, Result, StoreError,
    DEAD_LETTER, DIGEST_MEMBER, JOURNAL_ENTRY, OUTBOX_ENTRY, SLIM_JOURNAL,
};
use crate::ingest::state::{Baseline, Checkpoint, PollStatus};
use crate::model::IdKey;
use crate::outbox::entry::{AttemptLog, DeadLetter, DigestMember, JournalEntry, OutboxEntry};
use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Postgres, Row, Transaction};
use std::collections::{BTreeSet, HashMap};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

/// The schema, embedded: `src/outbox/migrations/*.sql`, applied in version order.
pub(crate) static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("src/outbox/migrations");

/// The most connections one replica keeps open: a fleet's pollers and workers share them.
const POOL_CONNECTIONS: u32 = 10;
/// How long a query waits for a connection (a new one, or a free one of the pool) before it fails.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);
/// How many ids one round trip reserves: the increment of the `ids` sequence.
const ID_BLOCK: u64 = 1000;
/// How many snapshots one statement of a long rewrite reads.
const REWRITE_BATCH: i64 = 1000;

/// How to reach a PostgreSQL store.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// `postgres://user[:password]@host[:port]/database[?sslmode=...]`.
    pub url: String,
    /// The replica whose leases fence this store's poll writes; `None` for commands that write
    /// no poll state (and for tests that poll without replicas).
    pub holder: Option<String>,
    /// How long a lease outlives its last renewal.
    pub lease: Duration,
}

/// A PostgreSQL store: a connection pool and what this process caches of it.
#[derive(Clone)]
pub struct PgStore {
    pool: PgPool,
    /// host:port/database (never the password).
    target: Arc<str>,
    id_key: Arc<IdKey>,
    /// The block of ids reserved and not handed out yet: [next, end).
    ids: Arc<tokio::sync::Mutex<(u64, u64)>>,
    /// Who claims deliveries and holds leases: the replica, or a one-off name for a command.
    pub(crate) owner: Arc<str>,
    /// Whether poll writes are fenced by this owner's leases.
    fenced: bool,
    /// How long a lease outlives its last renewal.
    pub(crate) lease: Duration,
}

/// Says what went wrong in a query without the values it carried: the server's message and
/// SQLSTATE (a constraint's detail, which can quote a row, is left out).
pub(crate) fn describe(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Database(db) => match db.code() {
            Some(code) => format!("{} (SQLSTATE {code})", db.message()),
            None => db.message().to_string(),
        },
        sqlx::Error::PoolTimedOut => format!(
            "no connection to the database within {ACQUIRE_TIMEOUT:?} (is it up, and are there connections to spare?)"
        ),
        other => other.to_string(),
    }
}

/// host:port/database of a URL, for messages; the URL's own text where it does not parse.
fn target_of(options: &PgConnectOptions) -> String {
    format!(
        "{}:{}/{}",
        options.get_host(),
        options.get_port(),
        options.get_database().unwrap_or("")
    )
}

/// Parses a store URL without repeating it in an error (it may hold a password).
pub(crate) fn connect_options(url: &str) -> Result<PgConnectOptions> {
    PgConnectOptions::from_str(url)
        .map(|o| o.application_name("clinicea-notifier"))
        .map_err(|e| StoreError::Connect {
            target: "(the URL)".into(),
            reason: format!("the URL is not a PostgreSQL URL: {}", describe(&e)),
        })
}

/// What a database's schema is to this binary (for `check`, which never changes it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Schema {
    /// No schema yet: the first start makes it.
    Empty,
    /// Applied up to `version`; `pending` migrations of this binary are still to run.
    Current {
        /// The newest version applied.
        version: i64,
        /// How many of this binary's migrations are not applied yet.
        pending: usize,
    },
}

/// Connects with a short timeout and reads which migrations are applied, changing nothing.
pub(crate) async fn probe(url: &str) -> Result<Schema> {
    let options = connect_options(url)?;
    let target = target_of(&options);
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(options)
        .await
        .map_err(|e| StoreError::Connect {
            target: target.clone(),
            reason: describe(&e),
        })?;
    let exists: bool = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
        .fetch_one(&pool)
        .await?;
    if !exists {
        pool.close().await;
        return Ok(Schema::Empty);
    }
    let applied: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
            .fetch_all(&pool)
            .await?;
    pool.close().await;
    schema_of(&applied)
}

/// Compares the versions applied in a database with the ones this binary carries.
fn schema_of(applied: &[i64]) -> Result<Schema> {
    let known: Vec<i64> = MIGRATOR.iter().map(|m| m.version).collect();
    let newest_known = known.iter().copied().max().unwrap_or(0);
    let newest = applied.iter().copied().max().unwrap_or(0);
    if newest > newest_known {
        return Err(StoreError::SchemaNewer {
            found: newest,
            known: newest_known,
        });
    }
    Ok(Schema::Current {
        version: newest,
        pending: known.iter().filter(|v| !applied.contains(v)).count(),
    })
}

/// The table of record versions: the snapshots, or the baseline's records kept apart.
fn records_table(baseline: bool) -> &'static str {
    if baseline {
        "baseline_snapshots"
    } else {
        "snapshots"
    }
}

fn seq_i64(seq: u64) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}

fn seq_u64(seq: i64) -> u64 {
    u64::try_from(seq).unwrap_or(0)
}

/// Decodes rows of `(seq bigint, value bytea)` into typed values, in the rows' order.
fn seq_values<T: for<'de> serde::Deserialize<'de>>(
    what: &'static str,
    rows: Vec<sqlx::postgres::PgRow>,
) -> Result<Vec<(u64, T)>> {
    rows.into_iter()
        .map(|r| {
            let seq: i64 = r.try_get(0)?;
            let v: Vec<u8> = r.try_get(1)?;
            Ok((seq_u64(seq), decode(what, &v)?))
        })
        .collect()
}

impl PgStore {
    /// Connects, applies the migrations this database lacks (refusing a schema newer than this
    /// binary's), and reads or makes the change-id key.
    pub(crate) async fn open(o: &PgOptions) -> Result<PgStore> {
        let options = connect_options(&o.url)?;
        let target = target_of(&options);
        let pool = PgPoolOptions::new()
            .max_connections(POOL_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(|e| StoreError::Connect {
                target: target.clone(),
                reason: describe(&e),
            })?;
        MIGRATOR.run(&pool).await.map_err(|e| match e {
            sqlx::migrate::MigrateError::VersionMissing(found) => StoreError::SchemaNewer {
                found,
                known: MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0),
            },
            other => StoreError::Migrate(other.to_string()),
        })?;
        let fresh = IdKey::random_bytes();
        sqlx::query("INSERT INTO meta (name, value) VALUES ('change_id_key', $1) ON CONFLICT (name) DO NOTHING")
            .bind(&fresh[..])
            .execute(&pool)
            .await?;
        let stored: Vec<u8> =
            sqlx::query_scalar("SELECT value FROM meta WHERE name = 'change_id_key'")
                .fetch_one(&pool)
                .await?;
        let bytes: [u8; IdKey::LEN] =
            stored
                .as_slice()
                .try_into()
                .map_err(|_| StoreError::Decode {
                    what: "change-id key",
                    source: serde_json::Error::io(std::io::Error::other(format!(
                        "the key in the meta table is {} bytes long, not {}",
                        stored.len(),
                        IdKey::LEN
                    ))),
                })?;
        let owner = o.holder.clone().unwrap_or_else(|| {
            format!(
                "{}-{}-{:08x}",
                crate::outbox::lease::host_name(),
                std::process::id(),
                rand::random::<u32>()
            )
        });
        Ok(PgStore {
            pool,
            target: target.into(),
            id_key: Arc::new(IdKey::from_bytes(&bytes)),
            ids: Arc::default(),
            owner: owner.into(),
            fenced: o.holder.is_some(),
            lease: o.lease,
        })
    }

    /// host:port/database.
    pub(crate) fn target(&self) -> &str {
        &self.target
    }

    /// The pool, for the lease queries.
    pub(crate) fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub(crate) fn id_key(&self) -> &IdKey {
        &self.id_key
    }

    /// Hands out the next id of the reserved block, reserving a new block when it is used up.
    pub(crate) async fn next_id(&self) -> Result<u64> {
        let mut block = self.ids.lock().await;
        if block.0 >= block.1 {
            let start: i64 = sqlx::query_scalar("SELECT nextval('ids')")
                .fetch_one(&self.pool)
                .await?;
            *block = (seq_u64(start), seq_u64(start) + ID_BLOCK);
        }
        let id = block.0;
        block.0 += 1;
        Ok(id)
    }

    /// Begins a transaction for a poll's write about `clinic`: when fenced, the clinic's lease
    /// must be this owner's and current, and it is held (`FOR SHARE`) until the commit.
    async fn begin_for(&self, clinic: &str) -> Result<Transaction<'static, Postgres>> {
        let mut tx = self.pool.begin().await?;
        if self.fenced {
            let held: Option<i32> = sqlx::query_scalar(
                "SELECT 1 FROM leases WHERE clinic = $1 AND owner = $2 AND expires_at > now() FOR SHARE",
            )
            .bind(clinic)
            .bind(&*self.owner)
            .fetch_optional(&mut *tx)
            .await?;
            if held.is_none() {
                return Err(StoreError::LeaseLost {
                    clinic: clinic.to_string(),
                });
            }
        }
        Ok(tx)
    }

    // --- checkpoints, poll status, baselines ----------------------------------------------

    async fn keyed_value(
        &self,
        table: &'static str,
        clinic: &str,
        resource: &str,
    ) -> Result<Option<Vec<u8>>> {
        Ok(sqlx::query_scalar(&format!(
            "SELECT value FROM {table} WHERE clinic = $1 AND resource = $2"
        ))
        .bind(clinic)
        .bind(resource)
        .fetch_optional(&self.pool)
        .await?)
    }

    async fn put_keyed(
        tx: &mut Transaction<'static, Postgres>,
        table: &'static str,
        clinic: &str,
        resource: &str,
        value: Vec<u8>,
    ) -> Result<()> {
        sqlx::query(&format!(
            "INSERT INTO {table} (clinic, resource, value) VALUES ($1, $2, $3) \
             ON CONFLICT (clinic, resource) DO UPDATE SET value = EXCLUDED.value"
        ))
        .bind(clinic)
        .bind(resource)
        .bind(value)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    pub(crate) async fn checkpoint(
        &self,
        clinic: &str,
        resource: &str,
    ) -> Result<Option<Checkpoint>> {
        self.keyed_value("checkpoints", clinic, resource)
            .await?
            .map(|v| decode("checkpoint", &v))
            .transpose()
    }

    pub(crate) async fn set_checkpoint(
        &self,
        clinic: &str,
        resource: &str,
        cp: &Checkpoint,
    ) -> Result<()> {
        self.set_first_checkpoint(clinic, resource, cp, None).await
    }

    pub(crate) async fn set_first_checkpoint(
        &self,
        clinic: &str,
        resource: &str,
        cp: &Checkpoint,
        baseline: Option<&Baseline>,
    ) -> Result<()> {
        let mut tx = self.begin_for(clinic).await?;
        Self::put_keyed(&mut tx, "checkpoints", clinic, resource, encode(cp)).await?;
        if let Some(b) = baseline {
            Self::put_keyed(&mut tx, "baselines", clinic, resource, encode(b)).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub(crate) async fn baseline(&self, clinic: &str, resource: &str) -> Result<Option<Baseline>> {
        self.keyed_value("baselines", clinic, resource)
            .await?
            .map(|v| decode("baseline", &v))
            .transpose()
    }

    pub(crate) async fn poll_status(&self, clinic: &str, resource: &str) -> Result<PollStatus> {
        Ok(self
            .keyed_value("poll_status", clinic, resource)
            .await?
            .map(|v| decode("poll status", &v))
            .transpose()?
            .unwrap_or_default())
    }

    /// Informational, so not fenced: the status of a poll that lost its lease is still true.
    pub(crate) async fn set_poll_status(
        &self,
        clinic: &str,
        resource: &str,
        st: &PollStatus,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        Self::put_keyed(&mut tx, "poll_status", clinic, resource, encode(st)).await?;
        tx.commit().await?;
        Ok(())
    }

    pub(crate) async fn commit_baseline_chunk(
        &self,
        clinic: &str,
        resource: &str,
        snapshots: &[(String, Vec<u8>)],
        progress: Option<&Baseline>,
    ) -> Result<()> {
        let mut tx = self.begin_for(clinic).await?;
        if !snapshots.is_empty() {
            let (ids, values): (Vec<&str>, Vec<&[u8]>) = snapshots
                .iter()
                .map(|(id, v)| (id.as_str(), v.as_slice()))
                .unzip();
            // The first version read is kept (see the sled store): DO NOTHING, also for a
            // second copy of an id within this chunk.
            sqlx::query(
                "INSERT INTO baseline_snapshots (clinic, resource, record_id, value) \
                 SELECT $1, $2, r, v FROM UNNEST($3::text[], $4::bytea[]) AS t(r, v) \
                 ON CONFLICT (clinic, resource, record_id) DO NOTHING",
            )
            .bind(clinic)
            .bind(resource)
            .bind(ids)
            .bind(values)
            .execute(&mut *tx)
            .await?;
        }
        if let Some(p) = progress {
            Self::put_keyed(&mut tx, "baselines", clinic, resource, encode(p)).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub(crate) async fn merge_baseline(&self, clinic: &str, resource: &str) -> Result<u64> {
        let mut tx = self.begin_for(clinic).await?;
        let moved = sqlx::query(
            "WITH gone AS (DELETE FROM baseline_snapshots WHERE clinic = $1 AND resource = $2 \
             RETURNING record_id, value) \
             INSERT INTO snapshots (clinic, resource, record_id, value) \
             SELECT $1, $2, record_id, value FROM gone \
             ON CONFLICT (clinic, resource, record_id) DO NOTHING",
        )
        .bind(clinic)
        .bind(resource)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(moved)
    }

    // --- snapshots and pages --------------------------------------------------------------

    pub(crate) async fn records_raw(
        &self,
        baseline: bool,
        clinic: &str,
        resource: &str,
        ids: &[&str],
    ) -> Result<HashMap<String, Vec<u8>>> {
        if ids.is_empty() {
            return Ok(HashMap::new());
        }
        let rows = sqlx::query(&format!(
            "SELECT record_id, value FROM {} WHERE clinic = $1 AND resource = $2 AND record_id = ANY($3)",
            records_table(baseline)
        ))
        .bind(clinic)
        .bind(resource)
        .bind(ids)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
    }

    pub(crate) async fn count_records(
        &self,
        baseline: bool,
        clinic: &str,
        resource: &str,
    ) -> Result<usize> {
        let n: i64 = sqlx::query_scalar(&format!(
            "SELECT count(*) FROM {} WHERE clinic = $1 AND resource = $2",
            records_table(baseline)
        ))
        .bind(clinic)
        .bind(resource)
        .fetch_one(&self.pool)
        .await?;
        Ok(usize::try_from(n).unwrap_or(0))
    }

    pub(crate) async fn commit_page(
        &self,
        clinic: &str,
        resource: &str,
        page: &PageWrite,
    ) -> Result<()> {
        let mut tx = self.begin_for(clinic).await?;
        if !page.snapshots.is_empty() {
            // One statement cannot update a row twice: a record that changed twice in one page
            // is written as its last version, as sled's inserts in order leave it.
            let mut last: HashMap<&str, &[u8]> = HashMap::new();
            for (id, v) in &page.snapshots {
                last.insert(id.as_str(), v.as_slice());
            }
            let (ids, values): (Vec<&str>, Vec<&[u8]>) = last.into_iter().unzip();
            sqlx::query(
                "INSERT INTO snapshots (clinic, resource, record_id, value) \
                 SELECT $1, $2, r, v FROM UNNEST($3::text[], $4::bytea[]) AS t(r, v) \
                 ON CONFLICT (clinic, resource, record_id) DO UPDATE SET value = EXCLUDED.value",
            )
            .bind(clinic)
            .bind(resource)
            .bind(ids)
            .bind(values)
            .execute(&mut *tx)
            .await?;
        }
        if !page.changes.is_empty() {
            insert_journal(&mut tx, clinic, resource, &page.changes).await?;
        }
        if !page.outbox.is_empty() {
            insert_outbox(&mut tx, &page.outbox).await?;
        }
        for d in &page.dead {
            insert_dead(&mut tx, d).await?;
        }
        if !page.digest.is_empty() {
            insert_digest(&mut tx, &page.digest).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    // --- change journal -------------------------------------------------------------------

    pub(crate) async fn changes(&self) -> Result<Vec<(u64, JournalEntry)>> {
        let rows = sqlx::query("SELECT seq, value FROM journal ORDER BY seq")
            .fetch_all(&self.pool)
            .await?;
        seq_values(JOURNAL_ENTRY, rows)
    }

    /// Forgets that a one-time upgrade was done (tests make an older version's store so).
    #[cfg(test)]
    pub(crate) async fn forget_upgrade(&self, upgrade: &str) -> Result<()> {
        sqlx::query("DELETE FROM meta WHERE name = $1")
            .bind(format!("upgrade:{upgrade}"))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// [`super::embedded::SledStore::slim_journal_once`] on this database: once, under the
    /// upgrade's transaction-scoped advisory lock (replicas starting together do not both do it),
    /// in one transaction, so a crash leaves the journal as it was and the next start does it.
    pub(crate) async fn slim_journal_once(&self) -> Result<usize> {
        let marker = format!("upgrade:{SLIM_JOURNAL}");
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('clinicea-notifier upgrade'))")
            .execute(&mut *tx)
            .await?;
        let done: Option<i32> = sqlx::query_scalar("SELECT 1 FROM meta WHERE name = $1")
            .bind(&marker)
            .fetch_optional(&mut *tx)
            .await?;
        if done.is_some() {
            return Ok(0);
        }
        let (mut rewritten, mut dropped, mut after) = (0, 0, i64::MIN);
        loop {
            let rows =
                sqlx::query("SELECT seq, value FROM journal WHERE seq > $1 ORDER BY seq LIMIT $2")
                    .bind(after)
                    .bind(REWRITE_BATCH)
                    .fetch_all(&mut *tx)
                    .await?;
            if rows.is_empty() {
                break;
            }
            let (mut seqs, mut values, mut gone) = (Vec::new(), Vec::new(), Vec::new());
            for r in rows {
                let (seq, v): (i64, Vec<u8>) = (r.try_get(0)?, r.try_get(1)?);
                after = seq;
                match JournalEntry::decode_any(&v, &self.id_key) {
                    Some((_, false)) => {}
                    Some((entry, true)) => {
                        seqs.push(seq);
                        values.push(encode(&entry));
                    }
                    None => gone.push(seq),
                }
            }
            if !seqs.is_empty() {
                rewritten += seqs.len();
                sqlx::query(
                    "UPDATE journal SET value = v.value \
                     FROM UNNEST($1::bigint[], $2::bytea[]) AS v(seq, value) \
                     WHERE journal.seq = v.seq",
                )
                .bind(&seqs)
                .bind(&values)
                .execute(&mut *tx)
                .await?;
            }
            if !gone.is_empty() {
                dropped += gone.len();
                sqlx::query("DELETE FROM journal WHERE seq = ANY($1)")
                    .bind(&gone)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        if dropped > 0 {
            tracing::warn!(
                dropped,
                "journal entries that could not be read in any known form were removed"
            );
        }
        sqlx::query(
            "INSERT INTO meta (name, value) VALUES ($1, 'done') ON CONFLICT (name) DO NOTHING",
        )
        .bind(&marker)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(rewritten + dropped)
    }

    pub(crate) async fn change_count(&self) -> Result<usize> {
        self.count("journal").await
    }

    async fn count(&self, table: &'static str) -> Result<usize> {
        let n: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
            .fetch_one(&self.pool)
            .await?;
        Ok(usize::try_from(n).unwrap_or(0))
    }

    pub(crate) async fn prune_changes_before(&self, cutoff: DateTime<Utc>) -> Result<usize> {
        let n =
            sqlx::query("DELETE FROM journal WHERE detected_at < to_timestamp($1::float8 / 1000)")
                .bind(cutoff.timestamp_millis() as f64)
                .execute(&self.pool)
                .await?
                .rows_affected();
        Ok(usize::try_from(n).unwrap_or(0))
    }

    /// The rewrite runs once per database, under a transaction-scoped advisory lock, so replicas
    /// starting together do not both do it.
    pub(crate) async fn upgrade_snapshots_once(
        &self,
        upgrade: &str,
        rewrite: impl Fn(&str, &str, &[u8]) -> Option<Vec<u8>>,
    ) -> Result<usize> {
        let marker = format!("upgrade:{upgrade}");
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('clinicea-notifier upgrade'))")
            .execute(&mut *tx)
            .await?;
        let done: Option<i32> = sqlx::query_scalar("SELECT 1 FROM meta WHERE name = $1")
            .bind(&marker)
            .fetch_optional(&mut *tx)
            .await?;
        if done.is_some() {
            return Ok(0);
        }
        let mut changed = 0;
        let mut after = (String::new(), String::new(), String::new());
        loop {
            let rows = sqlx::query(
                "SELECT clinic, resource, record_id, value FROM snapshots \
                 WHERE (clinic, resource, record_id) > ($1, $2, $3) \
                 ORDER BY clinic, resource, record_id LIMIT $4",
            )
            .bind(&after.0)
            .bind(&after.1)
            .bind(&after.2)
            .bind(REWRITE_BATCH)
            .fetch_all(&mut *tx)
            .await?;
            if rows.is_empty() {
                break;
            }
            for r in rows {
                let (clinic, resource, id): (String, String, String) =
                    (r.try_get(0)?, r.try_get(1)?, r.try_get(2)?);
                let v: Vec<u8> = r.try_get(3)?;
                if let Some(new) = rewrite(&resource, &id, &v) {
                    sqlx::query("UPDATE snapshots SET value = $4 WHERE clinic = $1 AND resource = $2 AND record_id = $3")
                        .bind(&clinic)
                        .bind(&resource)
                        .bind(&id)
                        .bind(new)
                        .execute(&mut *tx)
                        .await?;
                    changed += 1;
                }
                after = (clinic, resource, id);
            }
        }
        sqlx::query(
            "INSERT INTO meta (name, value) VALUES ($1, 'done') ON CONFLICT (name) DO NOTHING",
        )
        .bind(&marker)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(changed)
    }

    pub(crate) async fn erase_record(
        &self,
        clinic: &str,
        resource: &str,
        id: &str,
    ) -> Result<Erased> {
        let mut tx = self.pool.begin().await?;
        let mut erased = Erased::default();
        let by_record = |table: &str, returning: &str| {
            format!(
                "DELETE FROM {table} WHERE clinic = $1 AND resource = $2 AND record_id = $3{returning}"
            )
        };
        for (table, count) in [
            ("snapshots", &mut erased.snapshots),
            ("journal", &mut erased.changes),
        ] {
            *count = rows(
                sqlx::query(&by_record(table, ""))
                    .bind(clinic)
                    .bind(resource)
                    .bind(id)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected(),
            );
        }
        let mut seqs: Vec<i64> = sqlx::query_scalar(&by_record("outbox", " RETURNING seq"))
            .bind(clinic)
            .bind(resource)
            .bind(id)
            .fetch_all(&mut *tx)
            .await?;
        erased.outbox = seqs.len();
        let dead: Vec<i64> = sqlx::query_scalar(&by_record("dead", " RETURNING seq"))
            .bind(clinic)
            .bind(resource)
            .bind(id)
            .fetch_all(&mut *tx)
            .await?;
        erased.dead = dead.len();
        seqs.extend(dead);
        erased.digest = rows(
            sqlx::query(&by_record("digest_members", ""))
                .bind(clinic)
                .bind(resource)
                .bind(id)
                .execute(&mut *tx)
                .await?
                .rows_affected(),
        );
        erased.attempts = rows(
            sqlx::query("DELETE FROM attempts WHERE seq = ANY($1)")
                .bind(&seqs)
                .execute(&mut *tx)
                .await?
                .rows_affected(),
        );
        tx.commit().await?;
        Ok(erased)
    }

    // --- digests --------------------------------------------------------------------------

    pub(crate) async fn digest_members(&self) -> Result<Vec<DigestMember>> {
        let rows = sqlx::query("SELECT seq, value FROM digest_members ORDER BY destination, seq")
            .fetch_all(&self.pool)
            .await?;
        Ok(seq_values(DIGEST_MEMBER, rows)?
            .into_iter()
            .map(|(_, m)| m)
            .collect())
    }

    /// Deletes the members and inserts the entry in one transaction; when the delete finds fewer
    /// rows than asked for (another replica flushed them), rolls back and says `false`.
    pub(crate) async fn flush_digest(
        &self,
        destination: &str,
        seqs: &[u64],
        entry: &OutboxEntry,
    ) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let wanted: Vec<i64> = seqs.iter().map(|s| seq_i64(*s)).collect();
        let deleted =
            sqlx::query("DELETE FROM digest_members WHERE destination = $1 AND seq = ANY($2)")
                .bind(destination)
                .bind(&wanted)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        if rows(deleted) != wanted.len() {
            tx.rollback().await?;
            return Ok(false);
        }
        insert_outbox(&mut tx, std::slice::from_ref(entry)).await?;
        tx.commit().await?;
        Ok(true)
    }

    // --- outbox ---------------------------------------------------------------------------

    pub(crate) async fn outbox_entries(
        &self,
        destination: &str,
    ) -> Result<Vec<(u64, OutboxEntry)>> {
        let rows = sqlx::query("SELECT seq, value FROM outbox WHERE destination = $1 ORDER BY seq")
            .bind(destination)
            .fetch_all(&self.pool)
            .await?;
        seq_values(OUTBOX_ENTRY, rows)
    }

    /// Only the entries no replica holds a live claim on: the others are being attempted.
    pub(crate) async fn outbox_due(&self, destination: &str) -> Result<Vec<Result<Due>>> {
        let rows = sqlx::query(
            "SELECT seq, next_attempt_ms FROM outbox WHERE destination = $1 \
             AND (claimed_until IS NULL OR claimed_until < now()) ORDER BY seq",
        )
        .bind(destination)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|r| {
                let seq: i64 = r.try_get(0)?;
                let at_ms: i64 = r.try_get(1)?;
                Ok(Ok(Due {
                    seq: seq_u64(seq),
                    at_ms,
                }))
            })
            .collect()
    }

    pub(crate) async fn all_outbox(&self) -> Result<Vec<OutboxEntry>> {
        // Byte order of the destination, as sled's keys sort.
        let values: Vec<Vec<u8>> =
            sqlx::query_scalar("SELECT value FROM outbox ORDER BY destination COLLATE \"C\", seq")
                .fetch_all(&self.pool)
                .await?;
        values.iter().map(|v| decode(OUTBOX_ENTRY, v)).collect()
    }

    pub(crate) async fn outbox_counts(&self) -> Result<HashMap<String, (u64, u64)>> {
        let rows = sqlx::query(
            "SELECT destination, count(*) FILTER (WHERE attempts = 0), count(*) FILTER (WHERE attempts > 0) \
             FROM outbox GROUP BY destination",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|r| {
                let (d, first, retry): (String, i64, i64) =
                    (r.try_get(0)?, r.try_get(1)?, r.try_get(2)?);
                Ok((d, (seq_u64(first), seq_u64(retry))))
            })
            .collect()
    }

    pub(crate) async fn outbox_destinations(&self) -> Result<BTreeSet<String>> {
        let names: Vec<String> = sqlx::query_scalar("SELECT DISTINCT destination FROM outbox")
            .fetch_all(&self.pool)
            .await?;
        Ok(names.into_iter().collect())
    }

    #[cfg(test)]
    pub(crate) async fn outbox_get(
        &self,
        destination: &str,
        seq: u64,
    ) -> Result<Option<OutboxEntry>> {
        let v: Option<Vec<u8>> =
            sqlx::query_scalar("SELECT value FROM outbox WHERE destination = $1 AND seq = $2")
                .bind(destination)
                .bind(seq_i64(seq))
                .fetch_optional(&self.pool)
                .await?;
        v.map(|v| decode(OUTBOX_ENTRY, &v)).transpose()
    }

    /// Claims an entry for `hold`: the row is locked `FOR UPDATE SKIP LOCKED` (a replica claiming
    /// it at the same instant gets nothing, without waiting), and taken only when no live claim
    /// of another owner is on it.
    pub(crate) async fn outbox_claim(
        &self,
        destination: &str,
        seq: u64,
        hold: Duration,
    ) -> Result<Option<OutboxEntry>> {
        let v: Option<Vec<u8>> = sqlx::query_scalar(
            "UPDATE outbox SET claimed_by = $3, claimed_until = now() + $4 * interval '1 millisecond' \
             WHERE (destination, seq) IN ( \
                 SELECT destination, seq FROM outbox WHERE destination = $1 AND seq = $2 \
                 AND (claimed_until IS NULL OR claimed_until < now() OR claimed_by = $3) \
                 FOR UPDATE SKIP LOCKED) \
             RETURNING value",
        )
        .bind(destination)
        .bind(seq_i64(seq))
        .bind(&*self.owner)
        .bind(hold.as_millis() as f64)
        .fetch_optional(&self.pool)
        .await?;
        v.map(|v| decode(OUTBOX_ENTRY, &v)).transpose()
    }

    pub(crate) async fn outbox_put(&self, entry: &OutboxEntry) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        insert_outbox(&mut tx, std::slice::from_ref(entry)).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The entry and its attempt logs in one statement: a delivery costs two round trips in
    /// all (the claim and this), which on a small machine shared with the database server is
    /// what bounds the delivery rate (see bench/README.md).
    pub(crate) async fn delivered(&self, destination: &str, seq: u64) -> Result<()> {
        sqlx::query(
            "WITH gone AS (DELETE FROM outbox WHERE destination = $1 AND seq = $2) \
             DELETE FROM attempts WHERE seq = $2",
        )
        .bind(destination)
        .bind(seq_i64(seq))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub(crate) async fn outbox_len(&self) -> Result<usize> {
        self.count("outbox").await
    }

    pub(crate) async fn outbox_to_dead(&self, d: &DeadLetter) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM outbox WHERE destination = $1 AND seq = $2")
            .bind(&d.entry.destination)
            .bind(seq_i64(d.entry.seq))
            .execute(&mut *tx)
            .await?;
        insert_dead(&mut tx, d).await?;
        tx.commit().await?;
        Ok(())
    }

    // --- attempts log ---------------------------------------------------------------------

    pub(crate) async fn log_attempt(&self, seq: u64, log: &AttemptLog) -> Result<()> {
        sqlx::query(
            "INSERT INTO attempts (seq, attempt, value) VALUES ($1, $2, $3) \
             ON CONFLICT (seq, attempt) DO UPDATE SET value = EXCLUDED.value",
        )
        .bind(seq_i64(seq))
        .bind(i32::try_from(log.attempt).unwrap_or(i32::MAX))
        .bind(encode(log))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub(crate) async fn attempts(&self, seq: u64) -> Result<Vec<AttemptLog>> {
        let values: Vec<Vec<u8>> =
            sqlx::query_scalar("SELECT value FROM attempts WHERE seq = $1 ORDER BY attempt")
                .bind(seq_i64(seq))
                .fetch_all(&self.pool)
                .await?;
        values.iter().map(|v| decode("attempt log", v)).collect()
    }

    pub(crate) async fn forget_attempts(&self, seq: u64) -> Result<()> {
        sqlx::query("DELETE FROM attempts WHERE seq = $1")
            .bind(seq_i64(seq))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    // --- destination health ---------------------------------------------------------------

    pub(crate) async fn failing_destinations(&self) -> Result<Vec<(String, DestHealth)>> {
        let rows = sqlx::query(
            "SELECT destination, value FROM dest_health ORDER BY destination COLLATE \"C\"",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|r| {
                let d: String = r.try_get(0)?;
                let v: Vec<u8> = r.try_get(1)?;
                Ok((d, decode("destination health", &v)?))
            })
            .collect()
    }

    pub(crate) async fn set_destination_failing(
        &self,
        destination: &str,
        health: Option<&DestHealth>,
    ) -> Result<()> {
        match health {
            Some(h) => sqlx::query(
                "INSERT INTO dest_health (destination, value) VALUES ($1, $2) \
                 ON CONFLICT (destination) DO UPDATE SET value = EXCLUDED.value",
            )
            .bind(destination)
            .bind(encode(h)),
            None => sqlx::query("DELETE FROM dest_health WHERE destination = $1").bind(destination),
        }
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    // --- dead letters ---------------------------------------------------------------------

    pub(crate) async fn dead_entries(&self) -> Result<Vec<(u64, DeadLetter)>> {
        let rows = sqlx::query("SELECT seq, value FROM dead ORDER BY seq")
            .fetch_all(&self.pool)
            .await?;
        seq_values(DEAD_LETTER, rows)
    }

    pub(crate) async fn dead_get(&self, seq: u64) -> Result<Option<DeadLetter>> {
        let v: Option<Vec<u8>> = sqlx::query_scalar("SELECT value FROM dead WHERE seq = $1")
            .bind(seq_i64(seq))
            .fetch_optional(&self.pool)
            .await?;
        v.map(|v| decode(DEAD_LETTER, &v)).transpose()
    }

    pub(crate) async fn dead_to_outbox(&self, entry: &OutboxEntry) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM dead WHERE seq = $1")
            .bind(seq_i64(entry.seq))
            .execute(&mut *tx)
            .await?;
        insert_outbox(&mut tx, std::slice::from_ref(entry)).await?;
        tx.commit().await?;
        Ok(())
    }

    pub(crate) async fn dead_remove(&self, seq: u64) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        for table in ["dead", "attempts"] {
            sqlx::query(&format!("DELETE FROM {table} WHERE seq = $1"))
                .bind(seq_i64(seq))
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub(crate) async fn dead_len(&self) -> Result<usize> {
        self.count("dead").await
    }

    pub(crate) async fn purge_dead(&self, cutoff_ms: Option<i64>) -> Result<usize> {
        let mut tx = self.pool.begin().await?;
        let seqs: Vec<i64> = sqlx::query_scalar(
            "DELETE FROM dead WHERE $1::bigint IS NULL OR died_ms < $1 RETURNING seq",
        )
        .bind(cutoff_ms)
        .fetch_all(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM attempts WHERE seq = ANY($1)")
            .bind(&seqs)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(seqs.len())
    }

    // --- copying a store in ----------------------------------------------------------------

    /// Whether the database holds anything a poll or a delivery wrote (a store to copy into must
    /// not: the copy is one way, into an empty store).
    pub(crate) async fn is_empty(&self) -> Result<bool> {
        let any: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM checkpoints) OR EXISTS (SELECT 1 FROM snapshots) \
             OR EXISTS (SELECT 1 FROM outbox) OR EXISTS (SELECT 1 FROM dead) \
             OR EXISTS (SELECT 1 FROM journal) OR EXISTS (SELECT 1 FROM digest_members)",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(!any)
    }

    /// Writes a [`Dump`] into this (empty) store in one transaction, the change-id key included,
    /// and moves the id sequence past every id the dump holds; returns how many rows it wrote.
    pub(crate) async fn import(&self, d: &Dump) -> Result<u64> {
        const BATCH: usize = 1000;
        let mut tx = self.pool.begin().await?;
        let mut rows = 0u64;
        sqlx::query("UPDATE meta SET value = $1 WHERE name = 'change_id_key'")
            .bind(&d.id_key)
            .execute(&mut *tx)
            .await?;
        for (name, value) in &d.meta {
            sqlx::query("INSERT INTO meta (name, value) VALUES ($1, $2) ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value")
                .bind(name)
                .bind(value)
                .execute(&mut *tx)
                .await?;
            rows += 1;
        }
        for (table, clinic, resource, value) in &d.keyed {
            Self::put_keyed(&mut tx, table, clinic, resource, value.clone()).await?;
            rows += 1;
        }
        for chunk in d.records.chunks(BATCH) {
            for baseline in [false, true] {
                let mine: Vec<_> = chunk.iter().filter(|r| r.0 == baseline).collect();
                if mine.is_empty() {
                    continue;
                }
                let clinics: Vec<&str> = mine.iter().map(|r| r.1.as_str()).collect();
                let resources: Vec<&str> = mine.iter().map(|r| r.2.as_str()).collect();
                let ids: Vec<&str> = mine.iter().map(|r| r.3.as_str()).collect();
                let values: Vec<&[u8]> = mine.iter().map(|r| r.4.as_slice()).collect();
                rows += sqlx::query(&format!(
                    "INSERT INTO {} (clinic, resource, record_id, value)                      SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::bytea[])",
                    records_table(baseline)
                ))
                .bind(clinics)
                .bind(resources)
                .bind(ids)
                .bind(values)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            }
        }
        for chunk in d.journal.chunks(BATCH) {
            for (seq, clinic, resource, id, at, value) in chunk {
                sqlx::query(
                    "INSERT INTO journal (seq, clinic, resource, record_id, detected_at, value)                      VALUES ($1, $2, $3, $4, to_timestamp($5::float8 / 1000), $6)",
                )
                .bind(seq_i64(*seq))
                .bind(clinic)
                .bind(resource)
                .bind(id)
                .bind(at.timestamp_millis() as f64)
                .bind(value)
                .execute(&mut *tx)
                .await?;
                rows += 1;
            }
        }
        for chunk in d.outbox.chunks(BATCH) {
            insert_outbox(&mut tx, chunk).await?;
            rows += chunk.len() as u64;
        }
        for (seq, attempt, value) in &d.attempts {
            sqlx::query("INSERT INTO attempts (seq, attempt, value) VALUES ($1, $2, $3)")
                .bind(seq_i64(*seq))
                .bind(i32::try_from(*attempt).unwrap_or(i32::MAX))
                .bind(value)
                .execute(&mut *tx)
                .await?;
            rows += 1;
        }
        for dead in &d.dead {
            insert_dead(&mut tx, dead).await?;
            rows += 1;
        }
        for (name, value) in &d.dest_health {
            sqlx::query("INSERT INTO dest_health (destination, value) VALUES ($1, $2)")
                .bind(name)
                .bind(value)
                .execute(&mut *tx)
                .await?;
            rows += 1;
        }
        for chunk in d.digest.chunks(BATCH) {
            insert_digest(&mut tx, chunk).await?;
            rows += chunk.len() as u64;
        }
        // Past every id in the dump (and past any block this process reserved meanwhile).
        sqlx::query("SELECT setval('ids', GREATEST($1, (SELECT last_value FROM ids) + $2), false)")
            .bind(seq_i64(d.next_id.max(1)))
            .bind(seq_i64(ID_BLOCK))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(rows)
    }
}

fn rows(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

async fn insert_journal(
    tx: &mut Transaction<'static, Postgres>,
    clinic: &str,
    resource: &str,
    changes: &[JournalWrite],
) -> Result<()> {
    let seqs: Vec<i64> = changes.iter().map(|c| seq_i64(c.seq)).collect();
    let ids: Vec<&str> = changes.iter().map(|c| c.record_id.as_str()).collect();
    let at: Vec<f64> = changes
        .iter()
        .map(|c| c.detected_at.timestamp_millis() as f64)
        .collect();
    let values: Vec<&[u8]> = changes.iter().map(|c| c.value.as_slice()).collect();
    sqlx::query(
        "INSERT INTO journal (seq, clinic, resource, record_id, detected_at, value) \
         SELECT s, $1, $2, r, to_timestamp(d / 1000), v \
         FROM UNNEST($3::bigint[], $4::text[], $5::float8[], $6::bytea[]) AS t(s, r, d, v) \
         ON CONFLICT (seq) DO UPDATE SET value = EXCLUDED.value",
    )
    .bind(clinic)
    .bind(resource)
    .bind(seqs)
    .bind(ids)
    .bind(at)
    .bind(values)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Inserts entries (or replaces them, freeing any claim: a put is an attempt's end).
async fn insert_outbox(
    tx: &mut Transaction<'static, Postgres>,
    entries: &[OutboxEntry],
) -> Result<()> {
    let mut cols = (
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
    );
    for e in entries {
        cols.0.push(e.destination.as_str());
        cols.1.push(seq_i64(e.seq));
        cols.2.push(e.clinic.as_str());
        cols.3.push(e.resource.as_str());
        cols.4.push(e.record_id.as_str());
        cols.5.push(i32::try_from(e.attempts).unwrap_or(i32::MAX));
        cols.6.push(e.next_attempt_ms);
        cols.7.push(encode(e));
    }
    sqlx::query(
        "INSERT INTO outbox (destination, seq, clinic, resource, record_id, attempts, next_attempt_ms, value) \
         SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::int[], $7::bigint[], $8::bytea[]) \
         ON CONFLICT (destination, seq) DO UPDATE SET clinic = EXCLUDED.clinic, resource = EXCLUDED.resource, \
             record_id = EXCLUDED.record_id, attempts = EXCLUDED.attempts, \
             next_attempt_ms = EXCLUDED.next_attempt_ms, value = EXCLUDED.value, \
             claimed_by = NULL, claimed_until = NULL",
    )
    .bind(cols.0)
    .bind(cols.1)
    .bind(cols.2)
    .bind(cols.3)
    .bind(cols.4)
    .bind(cols.5)
    .bind(cols.6)
    .bind(cols.7)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Inserts digest members (a page re-committed after a crash writes the same rows again).
async fn insert_digest(
    tx: &mut Transaction<'static, Postgres>,
    members: &[DigestMember],
) -> Result<()> {
    let mut cols = (
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
    );
    for m in members {
        cols.0.push(m.destination.as_str());
        cols.1.push(seq_i64(m.seq));
        cols.2.push(m.clinic.as_str());
        cols.3.push(m.recipient.as_str());
        cols.4.push(m.resource.as_str());
        cols.5.push(m.record_id.as_str());
        cols.6.push(m.created_ms);
        cols.7.push(encode(m));
    }
    sqlx::query(
        "INSERT INTO digest_members (destination, seq, clinic, recipient, resource, record_id, created_ms, value) \
         SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[], $7::bigint[], $8::bytea[]) \
         ON CONFLICT (destination, seq) DO UPDATE SET value = EXCLUDED.value",
    )
    .bind(cols.0)
    .bind(cols.1)
    .bind(cols.2)
    .bind(cols.3)
    .bind(cols.4)
    .bind(cols.5)
    .bind(cols.6)
    .bind(cols.7)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn insert_dead(tx: &mut Transaction<'static, Postgres>, d: &DeadLetter) -> Result<()> {
    sqlx::query(
        "INSERT INTO dead (seq, destination, clinic, resource, record_id, died_ms, value) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) \
         ON CONFLICT (seq) DO UPDATE SET destination = EXCLUDED.destination, died_ms = EXCLUDED.died_ms, value = EXCLUDED.value",
    )
    .bind(seq_i64(d.entry.seq))
    .bind(&d.entry.destination)
    .bind(&d.entry.clinic)
    .bind(&d.entry.resource)
    .bind(&d.entry.record_id)
    .bind(d.died_ms)
    .bind(encode(d))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

// --- operator alerts ----------------------------------------------------------------------
//
// The tables `dest_streaks` and `incidents` (migration 20261203000002_alerts).

impl PgStore {
    /// Every destination's run of failed attempts since its last success.
    pub(crate) async fn failure_streaks(
        &self,
    ) -> Result<Vec<(String, super::store::FailureStreak)>> {
        let rows = sqlx::query(
            "SELECT destination, since_ms, failures, reason FROM dest_streaks \
             ORDER BY destination COLLATE \"C\"",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|r| {
                let since_ms: i64 = r.try_get(1)?;
                let failures: i64 = r.try_get(2)?;
                Ok((
                    r.try_get(0)?,
                    super::store::FailureStreak {
                        since: DateTime::from_timestamp_millis(since_ms).unwrap_or_default(),
                        failures: u64::try_from(failures).unwrap_or(0),
                        reason: r.try_get(3)?,
                    },
                ))
            })
            .collect()
    }

    /// Counts one failed attempt in one statement: the first starts the streak at `at`, a later
    /// one adds to it (whichever replica made it).
    pub(crate) async fn note_failure(
        &self,
        destination: &str,
        at: DateTime<Utc>,
        reason: &str,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO dest_streaks (destination, since_ms, failures, reason) VALUES ($1, $2, 1, $3) \
             ON CONFLICT (destination) DO UPDATE SET failures = dest_streaks.failures + 1, \
             reason = EXCLUDED.reason",
        )
        .bind(destination)
        .bind(at.timestamp_millis())
        .bind(reason)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Ends a destination's run of failures.
    pub(crate) async fn clear_failure_streak(&self, destination: &str) -> Result<()> {
        sqlx::query("DELETE FROM dest_streaks WHERE destination = $1")
            .bind(destination)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Every incident's state, by key.
    pub(crate) async fn incidents(&self) -> Result<Vec<(String, super::store::IncidentState)>> {
        let rows = sqlx::query("SELECT key, value FROM incidents ORDER BY key COLLATE \"C\"")
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter()
            .map(|r| {
                let v: Vec<u8> = r.try_get(1)?;
                Ok((r.try_get(0)?, decode("incident", &v)?))
            })
            .collect()
    }

    /// Moves an incident from `expected` to `next` and queues `outbox` in one transaction, when
    /// the stored state is still `expected` (the row is locked while it is compared, so two
    /// replicas cannot both move it).
    pub(crate) async fn incident_transition(
        &self,
        key: &str,
        expected: Option<&super::store::IncidentState>,
        next: &super::store::IncidentState,
        outbox: &[OutboxEntry],
    ) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let stored: Option<Vec<u8>> =
            sqlx::query_scalar("SELECT value FROM incidents WHERE key = $1 FOR UPDATE")
                .bind(key)
                .fetch_optional(&mut *tx)
                .await?;
        let moved = match (stored, expected) {
            (None, None) => sqlx::query(
                "INSERT INTO incidents (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
            )
            .bind(key)
            .bind(encode(next))
            .execute(&mut *tx)
            .await?
            .rows_affected()
                == 1,
            (Some(stored), Some(expected)) if stored == encode(expected) => {
                sqlx::query("UPDATE incidents SET value = $2 WHERE key = $1")
                    .bind(key)
                    .bind(encode(next))
                    .execute(&mut *tx)
                    .await?;
                true
            }
            _ => false,
        };
        if !moved {
            tx.rollback().await?;
            return Ok(false);
        }
        if !outbox.is_empty() {
            insert_outbox(&mut tx, outbox).await?;
        }
        tx.commit().await?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_schema_newer_than_the_binary_is_refused_and_pending_ones_are_counted() {
        let newest = MIGRATOR.iter().map(|m| m.version).max().unwrap();
        assert!(matches!(
            schema_of(&[newest, newest + 1]),
            Err(StoreError::SchemaNewer { found, known }) if found == newest + 1 && known == newest
        ));
        assert_eq!(
            schema_of(&[]).unwrap(),
            Schema::Current {
                version: 0,
                pending: MIGRATOR.iter().count()
            }
        );
        assert_eq!(
            schema_of(&[newest]).unwrap(),
            Schema::Current {
                version: newest,
                pending: MIGRATOR.iter().count() - 1
            }
        );
    }

    #[test]
    fn a_bad_url_is_an_error_that_does_not_repeat_it() {
        let e = connect_options("postgres://u:s3cret@h:99999/db")
            .unwrap_err()
            .to_string();
        assert!(!e.contains("s3cret"), "{e}");
        assert!(e.contains("not a PostgreSQL URL"), "{e}");
    }
}
