//! A PostgreSQL database of its own for each test, on the server that
//! `CLINICEA_TEST_POSTGRES_URL` names (`.ci/run` sets and checks it; the README says how to run
//! the tests elsewhere). A test that needs PostgreSQL skips, saying why, only when the variable is
//! unset: a server that is named but does not answer fails the test.

use rand::Rng;
use sqlx::{Connection, Executor, PgConnection};

/// The variable naming the server, e.g. `postgres://root@127.0.0.1:5432/test`.
pub const POSTGRES_URL_VAR: &str = "CLINICEA_TEST_POSTGRES_URL";

/// What a PostgreSQL test prints to stderr when it skips.
const SKIPPED: &str = "skipped: CLINICEA_TEST_POSTGRES_URL is unset (see README)";

/// A database created for one test, dropped (with whatever is still connected to it) when this
/// is dropped.
pub struct PgDb {
    /// The database's URL: the server's, with its own database name.
    pub url: String,
    /// The server's URL, to connect to when dropping it.
    server: String,
    name: String,
}

/// A new empty database on the test server; `None` (after printing why) when the variable is
/// unset or empty.
///
/// # Panics
/// When the variable is set but the server cannot be reached or refuses to create a database.
pub async fn fresh_database() -> Option<PgDb> {
    let server = match std::env::var(POSTGRES_URL_VAR) {
        Ok(v) if !v.is_empty() => v,
        _ => {
            eprintln!("{SKIPPED}");
            return None;
        }
    };
    // The pid keeps parallel test binaries apart, the random part the tests of one binary.
    let name = format!(
        "cn_test_{}_{:016x}",
        std::process::id(),
        rand::thread_rng().gen::<u64>()
    );
    let mut url =
        url::Url::parse(&server).unwrap_or_else(|e| panic!("{POSTGRES_URL_VAR} is not a URL: {e}"));
    let shown = shown(&url);
    let mut conn = PgConnection::connect(&server)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {shown} ({POSTGRES_URL_VAR}): {e}"));
    conn.execute(format!("CREATE DATABASE \"{name}\"").as_str())
        .await
        .unwrap_or_else(|e| panic!("cannot create database {name} on {shown}: {e}"));
    let _ = conn.close().await;
    url.set_path(&name);
    Some(PgDb {
        url: url.to_string(),
        server,
        name,
    })
}

/// The server's URL without its password, for panic messages.
fn shown(url: &url::Url) -> String {
    let mut url = url.clone();
    let _ = url.set_password(None);
    url.to_string()
}

impl Drop for PgDb {
    fn drop(&mut self) {
        let (server, name) = (self.server.clone(), self.name.clone());
        // Drop runs inside the test's runtime, which cannot be blocked on: a thread of its own
        // with a small runtime does the dropping, and is waited for.
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
            Ok(Err(e)) => eprintln!("could not drop the test database {}: {e}", self.name),
            Err(_) => eprintln!("dropping the test database {} panicked", self.name),
        }
    }
}
