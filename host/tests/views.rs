//! Views of the abi-exerciser fixture (see host/fixtures/README.md, "Views"): materialized in
//! tables, changed in the same commit as the rows they derive from, per identity for
//! sender-bound views.

mod common;

use common::*;
use lightcone_host::{HostConfig, ModuleHost};
use lightcone_mvcc::{ReadTx, TxDelta, Value};

/// The `id` column of each row of a view over `item`, sorted.
fn ids(db: &lightcone_mvcc::Database, view: &str) -> Vec<u64> {
    let mut v: Vec<u64> = rows(db, view)
        .into_iter()
        .map(|r| match r[0] {
            Value::U64(id) => id,
            ref other => panic!("id column holds {other:?}"),
        })
        .collect();
    v.sort_unstable();
    v
}

/// Names of the tables a delta changes.
fn changed_tables(db: &lightcone_mvcc::Database, delta: &TxDelta) -> Vec<String> {
    let snap = db.snapshot();
    let mut names: Vec<String> =
        delta.tables.iter().map(|t| snap.table(t.table_id).unwrap().schema().name().to_string()).collect();
    names.sort();
    names
}

// Proves both anonymous views — one returning rows, one returning a query the host runs —
// follow inserts, updates and deletes of `item` within the reducer's own commit, and that a
// rolled-back reducer changes neither.
#[test]
fn anonymous_views_change_in_the_same_commit_as_their_inputs() {
    let (mut host, db) = publish("abi_exerciser");
    assert!(rows(&db, "high_score_items").is_empty());
    // seed_items(8): item i has id i+1, score 10*i, tag i%4.
    let out = call_ok(&mut host, "seed_items", "[8]");
    assert_eq!(ids(&db, "high_score_items"), [6, 7, 8], "score >= 50");
    assert_eq!(ids(&db, "tag_one_items"), [2, 6], "tag = 1 (the view's SQL)");
    assert_eq!(changed_tables(&db, &out.delta), ["high_score_items", "item", "tag_one_items"]);
    // A view row is the whole item, as the view function built it.
    let item_6 = rows(&db, "item").into_iter().find(|r| r[0] == Value::U64(6)).unwrap();
    assert!(rows(&db, "high_score_items").contains(&item_6));

    let out = call_ok(&mut host, "update_item_score", "[1, 99]");
    assert_eq!(ids(&db, "high_score_items"), [1, 6, 7, 8]);
    assert_eq!(changed_tables(&db, &out.delta), ["high_score_items", "item"], "tag_one_items unchanged");
    call_ok(&mut host, "delete_items_by_score_range", "[60, 100]");
    assert_eq!(ids(&db, "high_score_items"), [6]);
    call_ok(&mut host, "delete_items_by_tag", "[1]");
    assert_eq!(ids(&db, "tag_one_items"), Vec::<u64>::new());
    assert_eq!(ids(&db, "high_score_items"), Vec::<u64>::new(), "item 6 had tag 1");

    let before = db_state(&db);
    let out = call(&mut host, "insert_duplicate_code", r#"["dup"]"#);
    assert!(!out.is_committed());
    assert_eq!(db_state(&db), before, "a rolled-back reducer leaves the views alone");
    // A commit that does not touch `item` leaves the views' rows as they are.
    let out = call_ok(&mut host, "set_config", r#"["k", "v"]"#);
    assert_eq!(changed_tables(&db, &out.delta), ["config"]);
}

// Proves a sender-bound view holds rows only for identities that acquired it, one set per
// identity, kept while any of its readers remains; the hidden sender column is not part of the
// encoded row; acquiring an anonymous view is a no-op.
#[test]
fn sender_bound_views_hold_rows_per_acquired_identity() {
    let (mut host, db) = publish("abi_exerciser");
    let spec = host.spec().clone();
    let view = spec.views.iter().position(|v| v.name == "my_identity").unwrap();
    let (a, b) = ([1u8; 32], [2u8; 32]);
    assert!(rows(&db, "my_identity").is_empty());
    let (delta, _) = host.acquire_views(a, &[view]).unwrap();
    assert_eq!(changed_tables(&db, &delta), ["my_identity"]);
    assert_eq!(sorted_rows(&db, "my_identity"), vec![vec![u256_value(a), u256_value(a)]]);
    let (delta, _) = host.acquire_views(a, &[view]).unwrap();
    assert!(delta.is_empty(), "a second reader of the same identity changes nothing");
    host.acquire_views(b, &[view]).unwrap();
    assert_eq!(
        sorted_rows(&db, "my_identity"),
        vec![vec![u256_value(a), u256_value(a)], vec![u256_value(b), u256_value(b)]]
    );
    // Clients see the view's row type only: `WhoAmI { identity }`, 32 bytes.
    let table = spec.table_by_name("my_identity").unwrap();
    let mut encoded = Vec::new();
    table.codec.encode_row(&vec![u256_value(a), u256_value(b)], &mut encoded);
    assert_eq!(encoded, b.to_vec());

    host.release_views(a, &[view]).unwrap();
    assert_eq!(rows(&db, "my_identity").len(), 2, "a's other reader still holds it");
    let (delta, _) = host.release_views(a, &[view]).unwrap();
    assert_eq!(changed_tables(&db, &delta), ["my_identity"]);
    assert_eq!(sorted_rows(&db, "my_identity"), vec![vec![u256_value(b), u256_value(b)]]);
    let (delta, _) = host.release_views(a, &[view]).unwrap();
    assert!(delta.is_empty(), "releasing more than acquired is harmless");

    let anonymous = spec.views.iter().position(|v| v.anonymous).unwrap();
    let (delta, _) = host.acquire_views(a, &[anonymous]).unwrap();
    assert!(delta.is_empty());
}

// Proves a reopened host (a restart: view read sets forgotten) keeps the committed rows of
// anonymous views and refreshes them on the next commit that changes their inputs, and drops
// the sender-bound rows of readers from before the restart.
#[test]
fn views_persist_across_reopen_and_refresh_afterwards() {
    let (mut host, db) = publish("abi_exerciser");
    call_ok(&mut host, "seed_items", "[8]");
    let view = host.spec().views.iter().position(|v| v.name == "my_identity").unwrap();
    host.acquire_views([1; 32], &[view]).unwrap();
    assert_eq!(rows(&db, "my_identity").len(), 1);
    drop(host);
    let config = HostConfig { fuel_per_call: 200_000_000, database_identity: [9; 32] };
    let mut host = ModuleHost::open(engine(), db.clone(), None, config).expect("open");
    assert_eq!(ids(&db, "high_score_items"), [6, 7, 8]);
    assert!(rows(&db, "my_identity").is_empty(), "readers from before the restart are gone");
    call_ok(&mut host, "update_item_score", "[6, 0]");
    assert_eq!(ids(&db, "high_score_items"), [7, 8]);
    assert_eq!(ids(&db, "tag_one_items"), [2, 6]);
}

// Proves a procedure's own commit that changes a view's input is followed by a commit
// refreshing the view, listed in the outcome and announced to the commit observer after it.
#[test]
fn views_follow_a_procedures_commits() {
    let (mut host, db) = publish("abi_exerciser");
    call_ok(&mut host, "seed_items", "[8]");
    let seen: std::sync::Arc<std::sync::Mutex<Vec<Vec<String>>>> = Default::default();
    let seen2 = std::sync::Arc::clone(&seen);
    let db2 = db.clone();
    host.set_commit_observer(std::sync::Arc::new(move |d: &std::sync::Arc<TxDelta>| {
        seen2.lock().unwrap().push(changed_tables(&db2, d));
    }));
    let out = host
        .call_procedure("proc_with_tx_score", &caller(1), lightcone_host::ReducerArgs::Json("[1, 75]".into()))
        .unwrap();
    assert_eq!(out.result.as_deref().unwrap(), [1u8], "returned true");
    assert_eq!(ids(&db, "high_score_items"), [1, 6, 7, 8]);
    let commits: Vec<Vec<String>> = out.commits.iter().map(|d| changed_tables(&db, d)).collect();
    assert_eq!(commits, [vec!["item".to_string()], vec!["high_score_items".to_string()]]);
    assert_eq!(*seen.lock().unwrap(), commits, "both announced, in order");
}

/// Opens (or reopens) a database with a commit log in `dir`.
fn open_logged(
    dir: &std::path::Path,
) -> (std::sync::Arc<lightcone_mvcc::Database>, std::sync::Arc<lightcone_wal::CommitLog>) {
    let (db, log, _) = lightcone_snapshot::open_data_dir(dir, lightcone_wal::LogOptions::default(), |_| {})
        .expect("open data dir");
    (std::sync::Arc::new(db), std::sync::Arc::new(log))
}

fn column_names(db: &lightcone_mvcc::Database, table: &str) -> Vec<String> {
    let snap = db.snapshot();
    let id = snap.table_id(table).unwrap();
    snap.table(id).unwrap().schema().def.columns.iter().map(|c| c.name.clone()).collect()
}

// Proves a module update may change views freely, as SpacetimeDB's auto-migration allows —
// a view whose row type changed gets a new table, recomputed in the update's commit; a view
// that became a table is replaced by an empty table the new reducers write — while turning a
// table into a view is refused and changes nothing; and that all of it replays from the
// commit log after a restart.
#[test]
fn module_updates_migrate_views() {
    let dir = tempfile::tempdir().unwrap();
    let config = || HostConfig { fuel_per_call: 200_000_000, database_identity: [9; 32] };
    // Publishes fixture `name` over whatever `db` holds, logging to `log`.
    let publish_over = |db: &std::sync::Arc<lightcone_mvcc::Database>,
                        log: &std::sync::Arc<lightcone_wal::CommitLog>,
                        name: &str| {
        ModuleHost::publish(engine(), db.clone(), Some(log.clone()), &fixture(name), OWNER, config())
    };
    let (db, log) = open_logged(dir.path());
    let (mut host, _) = publish_over(&db, &log, "abi_exerciser").expect("publish v1");
    call_ok(&mut host, "seed_items", "[8]");
    assert_eq!(ids(&db, "high_score_items"), [6, 7, 8]);
    assert_eq!(ids(&db, "tag_one_items"), [2, 6]);
    let old_high = db.snapshot().table_id("high_score_items").unwrap();
    drop(host);

    let (mut host, report) = publish_over(&db, &log, "abi_exerciser_unstable")
        .expect("an update that reshapes a view and turns one into a table is allowed");
    assert!(!report.created);
    let mut created = report.tables_created.clone();
    created.sort();
    assert_eq!(created, ["high_score_items", "tag_one_items"]);
    let snap = db.snapshot();
    assert!(snap.table(old_high).is_err(), "the old view table is dropped");
    assert_ne!(snap.table_id("high_score_items").unwrap(), old_high);
    drop(snap);
    assert_eq!(column_names(&db, "high_score_items"), ["id", "score"]);
    assert_eq!(
        sorted_rows(&db, "high_score_items"),
        [6u64, 7, 8].map(|i| vec![Value::U64(i), Value::I32(10 * (i as i32 - 1))]).to_vec(),
        "recomputed by the new view in the update's commit"
    );
    assert_eq!(column_names(&db, "tag_one_items"), ["id"]);
    assert!(rows(&db, "tag_one_items").is_empty(), "a new, empty table");
    call_ok(&mut host, "note_tag_one_item", "[42]");
    call_ok(&mut host, "update_item_score", "[1, 99]");
    assert_eq!(ids(&db, "high_score_items"), [1, 6, 7, 8]);
    let messages = log_messages(&host);
    assert!(
        messages.iter().any(|m| m.contains("Dropping the table of view `high_score_items`")),
        "{messages:?}"
    );
    drop(host);

    // Back to the first version: `tag_one_items` would turn from a table into a view.
    let before = db_state(&db);
    let err = publish_over(&db, &log, "abi_exerciser").err().expect("refused");
    match err {
        lightcone_host::HostError::IncompatibleSchema(m) => {
            assert!(m.contains("table `tag_one_items` became a view"), "{m}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(db_state(&db), before, "a refused update changes nothing");
    let expected = db_state(&db);
    drop((db, log));

    // A restart replays the drops and creates from the log.
    let (db, log) = open_logged(dir.path());
    assert_eq!(db_state(&db), expected);
    let mut host = ModuleHost::open(engine(), db.clone(), Some(log), config()).expect("open");
    call_ok(&mut host, "note_tag_one_item", "[43]");
    assert_eq!(ids(&db, "tag_one_items"), [42, 43]);
}
