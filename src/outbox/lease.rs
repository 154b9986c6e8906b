//! Clinic leases on the PostgreSQL store: which replica polls which clinic, until when.
//!
//! A lease is a row of the `leases` table (clinic, owner, expires_at), not an advisory lock held
//! on a session. A session lock is lost only when the server notices its connection is gone,
//! which for a partitioned replica can take as long as TCP keepalive does (minutes, by default),
//! while the replica itself cannot tell it still holds it; and a pool that hands the session's
//! connection to another task would carry the lock along. A row with an expiry decided by the
//! database's clock bounds the time exactly: a replica that stops renewing loses its clinics
//! `lease` after its last renewal, whatever the network does, and the poll writes it might still
//! attempt are refused by the fence in the same transaction ([`super::postgres`]).
//!
//! The replicas alive are the rows of `replicas` renewed within one lease; each takes a fair
//! share, `ceil(clinics / replicas)`, and gives back what it holds beyond it, so a new replica
//! gets clinics within a couple of renewals and a dead one's are taken as soon as they expire.

use super::postgres::PgStore;
use super::store::Result;
use std::time::Duration;

/// The hostname (a pod's name on Kubernetes), for naming a replica.
pub(crate) fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "replica".into())
}

/// A replica's own name: host, process id and a random tag (a restarted pod is a new replica).
pub fn replica_name() -> String {
    format!(
        "{}-{}-{:06x}",
        host_name(),
        std::process::id(),
        rand::random::<u32>() & 0xff_ffff
    )
}

/// Who holds a clinic, as `status` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRow {
    /// The clinic.
    pub clinic: String,
    /// The replica that holds it.
    pub owner: String,
    /// Milliseconds until it expires (negative: expired, free to take).
    pub expires_in_ms: i64,
}

/// How many times per lease a replica renews its leases and looks for clinics to take.
pub(crate) const TICKS_PER_LEASE: u32 = 6;

/// How long a renewal holds a lease in the database: two thirds of the lease, so that a dead
/// replica's clinics expire within that and are taken within one more tick, and polled again
/// within the lease. A live replica renews four times before its hold runs out.
pub(crate) fn hold_of(lease: Duration) -> Duration {
    lease * 2 / 3
}

/// How often a replica renews and rebalances.
pub(crate) fn tick_of(lease: Duration) -> Duration {
    lease / TICKS_PER_LEASE
}

/// A fair share of `clinics` among `replicas` (at least one replica: this one).
pub(crate) fn fair_share(clinics: usize, replicas: usize) -> usize {
    clinics.div_ceil(replicas.max(1))
}

fn ms(d: Duration) -> f64 {
    d.as_millis() as f64
}

impl PgStore {
    /// Marks this replica alive and returns how many replicas are (those seen within one hold,
    /// this one included); rows of replicas gone for ten holds are removed.
    pub(crate) async fn heartbeat(&self) -> Result<usize> {
        let lease = ms(hold_of(self.lease));
        sqlx::query(
            "INSERT INTO replicas (id, seen_at) VALUES ($1, now()) \
             ON CONFLICT (id) DO UPDATE SET seen_at = now()",
        )
        .bind(&*self.owner)
        .execute(self.pool())
        .await?;
        sqlx::query("DELETE FROM replicas WHERE seen_at < now() - $1 * interval '1 millisecond'")
            .bind(lease * 10.0)
            .execute(self.pool())
            .await?;
        let live: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM replicas WHERE seen_at > now() - $1 * interval '1 millisecond'",
        )
        .bind(lease)
        .fetch_one(self.pool())
        .await?;
        Ok(usize::try_from(live).unwrap_or(1).max(1))
    }

    /// Extends every lease this replica holds by [`hold_of`] the lease; returns the clinics it
    /// holds.
    pub(crate) async fn renew_leases(&self) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar(
            "UPDATE leases SET expires_at = now() + $2 * interval '1 millisecond' \
             WHERE owner = $1 AND expires_at > now() RETURNING clinic",
        )
        .bind(&*self.owner)
        .bind(ms(hold_of(self.lease)))
        .fetch_all(self.pool())
        .await?)
    }

    /// Takes up to `want` of `candidates` that nobody holds (or whose lease has expired); returns
    /// the ones taken. Two replicas taking the same clinic at once: one gets it.
    pub(crate) async fn acquire_leases(
        &self,
        candidates: &[String],
        want: usize,
    ) -> Result<Vec<String>> {
        if want == 0 || candidates.is_empty() {
            return Ok(Vec::new());
        }
        Ok(sqlx::query_scalar(
            "WITH free AS ( \
                 SELECT c FROM UNNEST($1::text[]) AS c \
                 WHERE NOT EXISTS (SELECT 1 FROM leases l WHERE l.clinic = c AND l.expires_at > now()) \
                 LIMIT $3) \
             INSERT INTO leases (clinic, owner, expires_at) \
             SELECT c, $2, now() + $4 * interval '1 millisecond' FROM free \
             ON CONFLICT (clinic) DO UPDATE SET owner = EXCLUDED.owner, expires_at = EXCLUDED.expires_at \
             WHERE leases.expires_at <= now() \
             RETURNING clinic",
        )
        .bind(candidates)
        .bind(&*self.owner)
        .bind(i64::try_from(want).unwrap_or(i64::MAX))
        .bind(ms(hold_of(self.lease)))
        .fetch_all(self.pool())
        .await?)
    }

    /// Gives back leases this replica holds (its pollers of them have stopped).
    pub(crate) async fn release_leases(&self, clinics: &[String]) -> Result<()> {
        sqlx::query("DELETE FROM leases WHERE owner = $1 AND clinic = ANY($2)")
            .bind(&*self.owner)
            .bind(clinics)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Gives back every lease and leaves the replicas (a clean stop: others take over at once).
    pub(crate) async fn leave(&self) -> Result<()> {
        sqlx::query("DELETE FROM leases WHERE owner = $1")
            .bind(&*self.owner)
            .execute(self.pool())
            .await?;
        sqlx::query("DELETE FROM replicas WHERE id = $1")
            .bind(&*self.owner)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Every lease, by clinic.
    pub async fn leases(&self) -> Result<Vec<LeaseRow>> {
        let rows: Vec<(String, String, f64)> = sqlx::query_as(
            "SELECT clinic, owner, extract(epoch FROM expires_at - now())::float8 * 1000 \
             FROM leases ORDER BY clinic COLLATE \"C\"",
        )
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .into_iter()
            .map(|(clinic, owner, ms)| LeaseRow {
                clinic,
                owner,
                expires_in_ms: ms as i64,
            })
            .collect())
    }

    /// This store's owner name (the replica).
    pub fn owner(&self) -> &str {
        &self.owner
    }
}

#[cfg(test)]
mod tests {
    use super::fair_share;

    #[test]
    fn a_fair_share_covers_every_clinic() {
        assert_eq!(fair_share(50, 3), 17);
        assert_eq!(fair_share(50, 2), 25);
        assert_eq!(fair_share(50, 0), 50);
        assert_eq!(fair_share(0, 3), 0);
        assert!(3 * fair_share(50, 3) >= 50);
    }
}
