//! A throwaway PostgreSQL database: made empty on a server, dropped (with whatever is still
//! connected to it) when the handle is dropped. The store's tests, the integration tests and the
//! benchmark each take one per run, on the server [`SERVER_VAR`] names, so runs never see one
//! another's rows and a failed run leaves nothing behind.
//!
//! A test skips, saying why, only when the variable is unset: a server that is named but does
//! not answer fails it (`.ci/run` sets the variable and checks the server first, so CI never
//! skips).

use sqlx::{Connection, Executor, PgConnection};

/// The variable naming the server, e.g. `postgres://root@127.0.0.1:5432/test`.
pub const SERVER_VAR: &str = "CLINICEA_TEST_POSTGRES_URL";

/// A database of its own; dropped with this handle.
pub struct ScratchDatabase {
    /// The database's URL: the server's, with this database's name as its path.
    pub url: String,
    /// The server's URL, connected to again to drop the database.
    server: String,
    name: String,
}

impl ScratchDatabase {
    /// A new empty database on the server [`SERVER_VAR`] names, or `None` (after printing why to
    /// stderr) when the variable is unset or empty.
    ///
    /// # Panics
    /// When the variable is set but is not a URL, the server cannot be reached, or it refuses to
    /// create a database: a named server that fails is a failure, not a skip.
    pub async fn from_env() -> Option<ScratchDatabase> {
        match std::env::var(SERVER_VAR) {
            Ok(server) if !server.is_empty() => Some(Self::on(&server, "cn_test").await),
            _ => {
                eprintln!(
                    "skipped: {SERVER_VAR} is unset (see README: the PostgreSQL tests), so the \
                     PostgreSQL half of this test did not run"
                );
                None
            }
        }
    }

    /// A new empty database on `server`, named `PREFIX_PID_RANDOM` (the pid keeps parallel test
    /// binaries apart, the random part the tests of one binary).
    ///
    /// # Panics
    /// As [`ScratchDatabase::from_env`]; the messages never show the server's password.
    pub async fn on(server: &str, prefix: &str) -> ScratchDatabase {
        let name = format!(
            "{prefix}_{}_{:016x}",
            std::process::id(),
            rand::random::<u64>()
        );
        let mut url = url::Url::parse(server)
            .unwrap_or_else(|e| panic!("the PostgreSQL server URL is not a URL: {e}"));
        let shown = without_password(&url);
        let mut conn = PgConnection::connect(server)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to {shown}: {e}"));
        conn.execute(format!("CREATE DATABASE \"{name}\"").as_str())
            .await
            .unwrap_or_else(|e| panic!("cannot create database {name} on {shown}: {e}"));
        let _ = conn.close().await;
        url.set_path(&name);
        ScratchDatabase {
            url: url.to_string(),
            server: server.to_string(),
            name,
        }
    }
}

/// A URL without its password, for messages.
fn without_password(url: &url::Url) -> String {
    let mut url = url.clone();
    let _ = url.set_password(None);
    url.to_string()
}

impl Drop for ScratchDatabase {
    fn drop(&mut self) {
        let (server, name) = (self.server.clone(), self.name.clone());
        // Drop may run inside an async runtime, which cannot be blocked on: a thread of its own
        // with a small runtime drops the database, and is waited for.
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            rt.block_on(async {
                let mut conn = PgConnection::connect(&server).await?;
                conn.execute(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)").as_str())
                    .await?;
                conn.close().await?;
                Ok::<(), sqlx::Error>(())
            })
        })
        .join();
        match dropped {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("could not drop the scratch database {}: {e}", self.name),
            Err(_) => eprintln!("dropping the scratch database {} panicked", self.name),
        }
    }
}
