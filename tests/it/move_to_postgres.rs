//! A sled store copied into PostgreSQL with `migrate-store` goes on where it stopped: the queued
//! deliveries arrive under the `webhook-id`s planned on sled, the copied snapshots keep known
//! records known (nothing is sent again), and the checkpoint resumes polling for what is new.

use crate::support::*;
use std::collections::BTreeSet;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sled_store_moved_to_postgres_delivers_its_queue_under_the_same_ids_and_resends_nothing()
{
    let Some(db) = ScratchDatabase::from_env().await else {
        return;
    };
    let sb = sandbox_with_leads(5).await;
    let rx = Receiver::start().await;
    let config = |store: StoreSection| {
        Config::new(Clinicea::sandbox(&sb.base_url()).poll_interval("1s"))
            .webhook("hooks", &rx.url, |w| w.timeout("5s"))
            .rule(Rule::new("r", &["hooks"]).resource("leads").on(&["added"]))
            .listen()
            .store(store)
            .to_yaml()
    };
    let t = TestDir::new(&config(StoreSection::at("./data")));

    // On sled: one poll queues the leads; nothing is delivered before the move.
    let planned: BTreeSet<String> = {
        let engine = t.engine().await;
        let rep = poll_report(&engine).await.unwrap();
        assert!(rep.changes >= 5, "{rep:?}");
        store_outbox(&engine.store)
            .await
            .into_iter()
            .map(|e| e.webhook_id)
            .collect()
    };
    assert!(planned.len() >= 5, "{planned:?}");
    assert_eq!(rx.count(), 0);

    let out = cli(&t, &["migrate-store", "--to", &db.url]).await;
    assert!(out.status.success(), "{}", output_text(&out));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains(&format!("{} queued deliveries", planned.len())),
        "{said}"
    );
    // A second copy would merge two stores: refused, and the database is left as it is.
    let again = cli(&t, &["migrate-store", "--to", &db.url]).await;
    assert!(!again.status.success(), "{}", output_text(&again));
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("already holds"),
        "{}",
        output_text(&again)
    );

    // On PostgreSQL: the queue drains under the planned ids, and the next polls send nothing new.
    t.rewrite(&config(StoreSection::postgres(&db.url)));
    let notifier = Notifier::run(&t).start().await;
    assert!(
        eventually(Duration::from_secs(30), || rx.count() >= planned.len()).await,
        "{} of {} queued deliveries arrived",
        rx.count(),
        planned.len()
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let ids: Vec<String> = rx
        .received()
        .iter()
        .map(|r| r.header("webhook-id"))
        .collect();
    let distinct: BTreeSet<String> = ids.iter().cloned().collect();
    assert_eq!(distinct, planned, "the ids planned on sled, and only those");
    assert_eq!(
        ids.len(),
        planned.len(),
        "each delivered once, no re-sent lead"
    );

    // A lead added now is found by the resumed checkpoint and delivered.
    let lead = sb.sandbox.insert("leads", test_lead());
    let id = lead["ID"].as_str().unwrap().to_string();
    assert!(
        eventually(Duration::from_secs(20), || rx
            .received()
            .iter()
            .any(|r| r.data_id() == id))
        .await,
        "the new lead was not delivered after the move"
    );
    drop(notifier);
    drop(db);
}
