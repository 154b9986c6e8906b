//! What a page's writes cost sled, apart from everything else a poll does: 100,000 records in
//! pages of 100, written as bench B's ceiling writes them (one 450-byte value per record, one
//! `apply_batch` per page) and as a poll writes them (a snapshot, a journal entry and an outbox
//! entry per record), the latter both as the store does it (one transaction over three trees,
//! whose every insert reads the key first) and as one tree with prefixed keys and one
//! `apply_batch` (no reads), with the journal entry slim (300 bytes) or whole (1,000 bytes).
//!
//! `cargo bench --bench store_writes` (BENCH_ROUNDS, default 3). Each round runs every mode once,
//! in turn, in a fresh temporary folder; the table gives each mode's median and its ratio to the
//! ceiling's median of the same run. It answers one question: whether the write path is where the
//! gap to the ceiling is, and which write shape is faster.

use sled::Transactional;
use std::time::Instant;

/// Records per run.
const RECORDS: u64 = 100_000;
/// Records per page (one batch or transaction each), unless `BENCH_PAGE` says otherwise.
const PAGE_DEFAULT: u64 = 100;

/// How the writes of one page are made.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// One value per record in one tree, one batch per page (bench B's ceiling).
    Ceiling,
    /// Snapshot, journal and outbox in three trees, one transaction per page (the store before it
    /// wrote a page as ordered inserts under a marker).
    ThreeTreeTransaction { journal_bytes: usize },
    /// The same three values in one tree with prefixed keys, one batch per page.
    OneTreeBatch { journal_bytes: usize },
    /// As the store does it, but the page's journal entries as one value.
    PagedJournal { journal_bytes: usize },
}

impl Mode {
    fn name(self) -> String {
        match self {
            Mode::Ceiling => "ceiling: 1 value/record, batch".into(),
            Mode::ThreeTreeTransaction { journal_bytes } => {
                format!("3 trees, transaction, journal {journal_bytes} B")
            }
            Mode::OneTreeBatch { journal_bytes } => {
                format!("1 tree, batch, journal {journal_bytes} B")
            }
            Mode::PagedJournal { journal_bytes } => {
                format!("3 trees, transaction, journal {journal_bytes} B, 1 value/page")
            }
        }
    }
}

/// Writes `RECORDS` records the way `mode` does; returns records per second.
fn run(mode: Mode, page_size: u64) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let db = sled::Config::new()
        .path(dir.path())
        .cache_capacity(64 << 20)
        .flush_every_ms(Some(500))
        .open()
        .unwrap();
    let (snaps, journal, outbox) = (
        db.open_tree("snapshots").unwrap(),
        db.open_tree("changes").unwrap(),
        db.open_tree("outbox").unwrap(),
    );
    let snapshot = vec![b's'; 450];
    let entry = vec![b'o'; 1200];
    let snap_key = |id: u64| format!("default\0leads\0L-{id:08}").into_bytes();
    let outbox_key = |seq: u64| [b"hooks\0".as_slice(), &seq.to_be_bytes()].concat();
    let t = Instant::now();
    for page in 0..RECORDS / page_size {
        let ids = (page * page_size)..((page + 1) * page_size);
        match mode {
            Mode::Ceiling => {
                let mut b = sled::Batch::default();
                for id in ids {
                    b.insert(format!("L-{id:08}").as_bytes(), snapshot.clone());
                }
                snaps.apply_batch(b).unwrap();
            }
            Mode::ThreeTreeTransaction { journal_bytes } => {
                let j = vec![b'j'; journal_bytes];
                (&snaps, &journal, &outbox)
                    .transaction(|(s, jt, o)| {
                        for id in ids.clone() {
                            s.insert(snap_key(id), snapshot.clone())?;
                            jt.insert(&(id * 2).to_be_bytes(), j.clone())?;
                            o.insert(outbox_key(id * 2 + 1), entry.clone())?;
                        }
                        Ok::<(), sled::transaction::ConflictableTransactionError<()>>(())
                    })
                    .unwrap();
            }
            Mode::PagedJournal { journal_bytes } => {
                let j = vec![b'j'; journal_bytes * page_size as usize];
                (&snaps, &journal, &outbox)
                    .transaction(|(s, jt, o)| {
                        for id in ids.clone() {
                            s.insert(snap_key(id), snapshot.clone())?;
                            o.insert(outbox_key(id * 2 + 1), entry.clone())?;
                        }
                        jt.insert(&page.to_be_bytes(), j.clone())?;
                        Ok::<(), sled::transaction::ConflictableTransactionError<()>>(())
                    })
                    .unwrap();
            }
            Mode::OneTreeBatch { journal_bytes } => {
                let j = vec![b'j'; journal_bytes];
                let mut b = sled::Batch::default();
                for id in ids {
                    b.insert([b"s".as_slice(), &snap_key(id)].concat(), snapshot.clone());
                    b.insert(
                        [b"j".as_slice(), &(id * 2).to_be_bytes()].concat(),
                        j.clone(),
                    );
                    b.insert(
                        [b"o".as_slice(), &outbox_key(id * 2 + 1)].concat(),
                        entry.clone(),
                    );
                }
                snaps.apply_batch(b).unwrap();
            }
        }
    }
    db.flush().unwrap();
    RECORDS as f64 / t.elapsed().as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let page_size: u64 = std::env::var("BENCH_PAGE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(PAGE_DEFAULT);
    let modes = [
        Mode::Ceiling,
        Mode::ThreeTreeTransaction {
            journal_bytes: 1000,
        },
        Mode::ThreeTreeTransaction { journal_bytes: 300 },
        Mode::OneTreeBatch { journal_bytes: 300 },
        Mode::PagedJournal { journal_bytes: 300 },
    ];
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); modes.len()];
    for round in 0..rounds {
        for (i, m) in modes.iter().enumerate() {
            let r = run(*m, page_size);
            eprintln!("round {round}: {:<40} {r:>9.0} records/s", m.name());
            rates[i].push(r);
        }
    }
    let ceiling = median(rates[0].clone());
    println!("| writes per page of {page_size} ({RECORDS} records, median of {rounds}) | records/s | of the ceiling |");
    println!("|---|---|---|");
    for (m, r) in modes.iter().zip(rates) {
        let r = median(r);
        println!("| {} | {r:.0} | {:.2} |", m.name(), r / ceiling);
    }
}
