//! Scenario tests: access control (private tables, row-level security), sharing, query sets,
//! unsubscribe and refused queries.

use std::collections::BTreeMap;

use lightcone_incremental_eval::{ClientAuth, ClientId, EvalError, Registry, TxUpdates};
use lightcone_mvcc::{
    ColumnDef, ColumnType, Database, IndexDef, ReadTx, Row, TableDef, TableId, Value, U256,
};

struct Db {
    db: Database,
    person: TableId,
    pet: TableId,
    vault: TableId,
}

fn u(v: u32) -> Value {
    Value::U32(v)
}

fn id(v: u128) -> Value {
    Value::U256(U256::from_u128(v))
}

/// person(id pk, owner u256, age), pet(id pk, person indexed, kind), vault(id, secret) private.
fn setup() -> Db {
    let db = Database::new();
    let mut tx = db.begin();
    let person = tx
        .create_table(
            TableDef::new(
                "person",
                vec![
                    ColumnDef::new("id", ColumnType::U32),
                    ColumnDef::new("owner", ColumnType::U256),
                    ColumnDef::new("age", ColumnType::U32),
                ],
            )
            .with_primary_key(0),
        )
        .unwrap();
    let pet = tx
        .create_table(
            TableDef::new(
                "pet",
                vec![
                    ColumnDef::new("id", ColumnType::U32),
                    ColumnDef::new("person", ColumnType::U32),
                    ColumnDef::new("kind", ColumnType::U32),
                ],
            )
            .with_primary_key(0)
            .with_index(IndexDef::btree([1], false)),
        )
        .unwrap();
    let mut vault_def = TableDef::new(
        "vault",
        vec![ColumnDef::new("id", ColumnType::U32), ColumnDef::new("secret", ColumnType::U32)],
    );
    vault_def.public = false;
    let vault = tx.create_table(vault_def).unwrap();
    tx.commit();
    Db { db, person, pet, vault }
}

fn owner() -> ClientAuth {
    ClientAuth { sender: U256::from_u128(999), is_owner: true }
}

fn user(n: u128) -> ClientAuth {
    ClientAuth { sender: U256::from_u128(n), is_owner: false }
}

/// Runs `f` in a transaction, commits and evaluates.
fn commit(d: &Db, reg: &Registry, f: impl FnOnce(&mut lightcone_mvcc::WriteTx<'_>)) -> TxUpdates {
    let mut tx = d.db.begin();
    f(&mut tx);
    let delta = tx.commit();
    reg.eval(&d.db.snapshot(), &delta)
}

/// Per table: rows inserted (+) and deleted (−) for `client`, as signed counts.
fn changes(up: &TxUpdates, client: u64) -> BTreeMap<(String, Row), i64> {
    let mut out = BTreeMap::new();
    for c in up.clients().filter(|c| c.client == ClientId(client)) {
        for (_, deltas) in c.query_sets() {
            for d in deltas {
                for r in &d.inserts {
                    *out.entry((d.table_name.clone(), r.clone())).or_default() += 1;
                }
                for r in &d.deletes {
                    *out.entry((d.table_name.clone(), r.clone())).or_default() -= 1;
                }
            }
        }
    }
    out
}

/// The unique (primary-key) index of a table.
fn pk(tx: &lightcone_mvcc::WriteTx<'_>, table: TableId) -> lightcone_mvcc::IndexId {
    let view = tx.table(table).unwrap();
    let schema = view.schema();
    let pos = schema.def.indexes.iter().position(|i| i.unique).unwrap();
    schema.index_ids[pos]
}

fn person_row(i: u32, owner: u128, age: u32) -> Row {
    vec![u(i), id(owner), u(age)]
}

// Proves a filter subscription's initial rows and deltas (insert, update, delete) are exact.
#[test]
fn filter_subscription_follows_commits() {
    let d = setup();
    let mut reg = Registry::new();
    commit(&d, &reg, |tx| {
        tx.insert(d.person, person_row(1, 1, 20)).unwrap();
        tx.insert(d.person, person_row(2, 1, 40)).unwrap();
    });
    let init = reg
        .subscribe(&d.db.snapshot(), ClientId(1), 0, &["SELECT * FROM person WHERE age > 30"], &owner())
        .unwrap();
    assert_eq!(init.len(), 1);
    assert_eq!(init[0].table_name, "person");
    assert_eq!(init[0].rows, vec![person_row(2, 1, 40)]);
    let up = commit(&d, &reg, |tx| {
        tx.insert(d.person, person_row(3, 1, 50)).unwrap();
        tx.insert(d.person, person_row(4, 1, 10)).unwrap();
        // Update person 1 into the result, person 2 out of it.
        tx.update_by_unique(pk(tx, d.person), person_row(1, 1, 31)).unwrap();
        tx.update_by_unique(pk(tx, d.person), person_row(2, 1, 5)).unwrap();
    });
    let expected: BTreeMap<_, _> = [
        (("person".to_string(), person_row(3, 1, 50)), 1),
        (("person".to_string(), person_row(1, 1, 31)), 1),
        (("person".to_string(), person_row(2, 1, 40)), -1),
    ]
    .into_iter()
    .collect();
    assert_eq!(changes(&up, 1), expected);
    // A commit touching nothing subscribed produces nothing.
    let up = commit(&d, &reg, |tx| {
        tx.insert(d.pet, vec![u(1), u(1), u(0)]).unwrap();
    });
    assert!(up.is_empty());
}

// Proves 1,000 identical subscriptions (spelled with different spacing) compile once, share
// one query, and get one shared delta listed for each of them.
#[test]
fn identical_subscriptions_share_one_query() {
    let d = setup();
    let mut reg = Registry::new();
    let snap = d.db.snapshot();
    for c in 0..1000u64 {
        let sql = if c % 2 == 0 {
            "SELECT * FROM person WHERE age = 7"
        } else {
            "SELECT *  FROM person\nWHERE age = 7;"
        };
        reg.subscribe(&snap, ClientId(c), 0, &[sql], &user(c as u128)).unwrap();
    }
    assert_eq!(reg.template_count(), 1, "normalized text compiles once");
    assert_eq!(reg.query_count(), 1);
    let up = commit(&d, &reg, |tx| {
        tx.insert(d.person, person_row(1, 1, 7)).unwrap();
        tx.insert(d.person, person_row(2, 1, 8)).unwrap();
    });
    assert_eq!(up.deltas.len(), 1);
    assert_eq!(up.deltas[0].inserts, vec![person_row(1, 1, 7)]);
    assert_eq!(up.entries.len(), 1000);
    assert_eq!(up.clients().count(), 1000);
    assert!(up.entries.iter().all(|e| e.delta == 0));
}

// Proves a non-owner cannot subscribe to a private table, alone or in a join, and gets
// upstream's wording; the owner can.
#[test]
fn private_tables_are_owner_only() {
    let d = setup();
    let mut reg = Registry::new();
    let snap = d.db.snapshot();
    for sql in ["SELECT * FROM vault", "SELECT person.* FROM person JOIN vault ON person.id = vault.id"] {
        let err = reg.subscribe(&snap, ClientId(1), 0, &[sql], &user(1)).unwrap_err();
        assert!(matches!(err, EvalError::PrivateTable { .. }), "{err}");
        assert!(err.to_string().starts_with("`vault` is not a valid table"), "{err}");
    }
    assert_eq!(reg.query_count(), 0);
    reg.subscribe(&snap, ClientId(2), 0, &["SELECT * FROM vault"], &owner()).unwrap();
    let up = commit(&d, &reg, |tx| {
        tx.insert(d.vault, vec![u(1), u(42)]).unwrap();
    });
    assert_eq!(changes(&up, 2).len(), 1);
}

// Proves row-level security hides other identities' rows from non-owners in initial rows and
// in deltas, including through a join (another person's row must not make a pet appear),
// while the owner sees everything.
#[test]
fn row_level_security_leaks_nothing() {
    let d = setup();
    let mut reg = Registry::new();
    reg.add_rls_filter(&d.db.snapshot(), "SELECT * FROM person WHERE owner = :sender").unwrap();
    commit(&d, &reg, |tx| {
        tx.insert(d.person, person_row(1, 1, 30)).unwrap();
        tx.insert(d.person, person_row(2, 2, 30)).unwrap();
        tx.insert(d.pet, vec![u(10), u(1), u(0)]).unwrap();
        tx.insert(d.pet, vec![u(20), u(2), u(0)]).unwrap();
    });
    let snap = d.db.snapshot();
    let q_person = "SELECT * FROM person";
    let q_pets = "SELECT pet.* FROM pet JOIN person ON pet.person = person.id";
    let init_a = reg.subscribe(&snap, ClientId(1), 0, &[q_person, q_pets], &user(1)).unwrap();
    let init_b = reg.subscribe(&snap, ClientId(2), 0, &[q_person, q_pets], &user(2)).unwrap();
    let init_o = reg.subscribe(&snap, ClientId(3), 0, &[q_person, q_pets], &owner()).unwrap();
    let rows = |init: &Vec<lightcone_incremental_eval::TableRows>, t: &str| {
        let mut r: Vec<Row> =
            init.iter().filter(|x| x.table_name == t).flat_map(|x| x.rows.clone()).collect();
        r.sort();
        r
    };
    assert_eq!(rows(&init_a, "person"), vec![person_row(1, 1, 30)]);
    assert_eq!(rows(&init_a, "pet"), vec![vec![u(10), u(1), u(0)]]);
    assert_eq!(rows(&init_b, "person"), vec![person_row(2, 2, 30)]);
    assert_eq!(rows(&init_b, "pet"), vec![vec![u(20), u(2), u(0)]]);
    assert_eq!(rows(&init_o, "person").len(), 2);
    assert_eq!(rows(&init_o, "pet").len(), 2);
    // Owner-independent queries are per identity here (the filter uses :sender), owners share.
    assert_eq!(reg.query_count(), 6);

    // Person 3 (identity 2) arrives with a pet; a pet of person 1 arrives; person 2 moves to
    // identity 1 (so its pet becomes visible to A and disappears for B).
    let up = commit(&d, &reg, |tx| {
        tx.insert(d.person, person_row(3, 2, 50)).unwrap();
        tx.insert(d.pet, vec![u(30), u(3), u(0)]).unwrap();
        tx.insert(d.pet, vec![u(11), u(1), u(0)]).unwrap();
        let person_pk = pk(tx, d.person);
        tx.update_by_unique(person_pk, person_row(2, 1, 30)).unwrap();
    });
    let a = changes(&up, 1);
    let expect_a: BTreeMap<_, _> = [
        (("person".to_string(), person_row(2, 1, 30)), 1),
        (("pet".to_string(), vec![u(11), u(1), u(0)]), 1),
        (("pet".to_string(), vec![u(20), u(2), u(0)]), 1),
    ]
    .into_iter()
    .collect();
    assert_eq!(a, expect_a);
    let b = changes(&up, 2);
    let expect_b: BTreeMap<_, _> = [
        (("person".to_string(), person_row(3, 2, 50)), 1),
        (("person".to_string(), person_row(2, 2, 30)), -1),
        (("pet".to_string(), vec![u(30), u(3), u(0)]), 1),
        (("pet".to_string(), vec![u(20), u(2), u(0)]), -1),
    ]
    .into_iter()
    .collect();
    assert_eq!(b, expect_b);
    let o = changes(&up, 3);
    // The owner: person 3 and both pets in; person 2 updated (pet 20 unchanged: nets to 0).
    assert_eq!(o.len(), 5, "{o:?}");
    // Filters are fixed while subscriptions read the table.
    let err = reg.add_rls_filter(&d.db.snapshot(), "SELECT * FROM person WHERE age > 1").unwrap_err();
    assert!(matches!(err, EvalError::RlsInUse { .. }));
}

// Proves a mandatory filter holds every reader to its own rows — the owner included, unlike
// RLS — in initial rows and deltas, and combines with RLS (both must pass).
#[test]
fn mandatory_filter_applies_to_the_owner_too() {
    let d = setup();
    let mut reg = Registry::new();
    reg.add_mandatory_filter(&d.db.snapshot(), "SELECT * FROM person WHERE owner = :sender").unwrap();
    reg.add_rls_filter(&d.db.snapshot(), "SELECT * FROM person WHERE age > 18").unwrap();
    commit(&d, &reg, |tx| {
        tx.insert(d.person, person_row(1, 1, 30)).unwrap();
        tx.insert(d.person, person_row(2, 999, 30)).unwrap();
        tx.insert(d.person, person_row(3, 1, 10)).unwrap();
    });
    let snap = d.db.snapshot();
    let q = "SELECT * FROM person";
    let rows = |init: Vec<lightcone_incremental_eval::TableRows>| {
        let mut r: Vec<Row> = init.into_iter().flat_map(|x| x.rows).collect();
        r.sort();
        r
    };
    let init_user = reg.subscribe(&snap, ClientId(1), 0, &[q], &user(1)).unwrap();
    let init_owner = reg.subscribe(&snap, ClientId(2), 0, &[q], &owner()).unwrap();
    assert_eq!(rows(init_user), vec![person_row(1, 1, 30)], "own rows, and RLS still applies");
    assert_eq!(rows(init_owner), vec![person_row(2, 999, 30)], "the owner sees only its own rows");
    let up = commit(&d, &reg, |tx| {
        tx.insert(d.person, person_row(4, 1, 40)).unwrap();
        tx.insert(d.person, person_row(5, 999, 5)).unwrap();
        tx.insert(d.person, person_row(6, 7, 50)).unwrap();
    });
    let one =
        |r: Row| -> BTreeMap<(String, Row), i64> { [(("person".to_string(), r), 1)].into_iter().collect() };
    assert_eq!(changes(&up, 1), one(person_row(4, 1, 40)));
    assert_eq!(changes(&up, 2), one(person_row(5, 999, 5)), "RLS does not bind the owner");
    let err = reg.add_mandatory_filter(&d.db.snapshot(), "SELECT * FROM person WHERE age > 1").unwrap_err();
    assert!(matches!(err, EvalError::RlsInUse { .. }));
}

// Proves unsubscribe returns the dropped rows, stops deltas, and frees the shared query;
// unknown clients and query sets are typed errors.
#[test]
fn unsubscribe_and_remove_client() {
    let d = setup();
    let mut reg = Registry::new();
    commit(&d, &reg, |tx| {
        tx.insert(d.person, person_row(1, 1, 30)).unwrap();
    });
    let snap = d.db.snapshot();
    reg.subscribe(&snap, ClientId(1), 7, &["SELECT * FROM person"], &owner()).unwrap();
    reg.subscribe(&snap, ClientId(1), 8, &["SELECT * FROM pet"], &owner()).unwrap();
    reg.subscribe(&snap, ClientId(2), 7, &["SELECT * FROM person"], &owner()).unwrap();
    assert!(matches!(
        reg.subscribe(&snap, ClientId(1), 7, &["SELECT * FROM pet"], &owner()),
        Err(EvalError::QuerySetInUse { .. })
    ));
    let dropped = reg.unsubscribe(Some(&snap), ClientId(1), 7).unwrap();
    assert_eq!(dropped[0].rows, vec![person_row(1, 1, 30)]);
    assert_eq!(reg.query_count(), 2);
    let up = commit(&d, &reg, |tx| {
        tx.insert(d.person, person_row(2, 1, 30)).unwrap();
    });
    assert!(changes(&up, 1).is_empty());
    assert_eq!(changes(&up, 2).len(), 1);
    assert!(matches!(reg.unsubscribe(None, ClientId(1), 7), Err(EvalError::UnknownQuerySet { .. })));
    assert!(matches!(reg.unsubscribe(None, ClientId(9), 7), Err(EvalError::UnknownClient(_))));
    assert!(reg.remove_client(ClientId(1)));
    assert!(reg.remove_client(ClientId(2)));
    assert!(!reg.remove_client(ClientId(2)));
    assert_eq!((reg.query_count(), reg.template_count(), reg.client_count()), (0, 0, 0));
    let up = commit(&d, &reg, |tx| {
        tx.insert(d.person, person_row(3, 1, 30)).unwrap();
    });
    assert!(up.is_empty());
}

// Proves overlapping queries of one query set both count: a row matching both appears twice
// in the initial rows and in the delta (clients refcount).
#[test]
fn overlapping_queries_in_one_set() {
    let d = setup();
    let mut reg = Registry::new();
    commit(&d, &reg, |tx| {
        tx.insert(d.person, person_row(1, 1, 30)).unwrap();
    });
    let qs = ["SELECT * FROM person WHERE age > 10", "SELECT * FROM person WHERE age > 20"];
    let init = reg.subscribe(&d.db.snapshot(), ClientId(1), 0, &qs, &owner()).unwrap();
    assert_eq!(init.len(), 1);
    assert_eq!(init[0].rows.len(), 2);
    let up = commit(&d, &reg, |tx| {
        tx.insert(d.person, person_row(2, 1, 15)).unwrap();
        tx.insert(d.person, person_row(3, 1, 25)).unwrap();
    });
    let c = changes(&up, 1);
    assert_eq!(c[&("person".to_string(), person_row(2, 1, 15))], 1);
    assert_eq!(c[&("person".to_string(), person_row(3, 1, 25))], 2);
}

// Proves every non-subscription query is refused with a typed error quoting the query, and a
// query set with one bad query registers nothing.
#[test]
fn bad_queries_fail_atomically() {
    let d = setup();
    let mut reg = Registry::new();
    let snap = d.db.snapshot();
    let shape = [
        "SELECT id FROM person",
        "SELECT COUNT(*) FROM person",
        "SELECT * FROM person LIMIT 3",
        "SELECT * FROM person ORDER BY age",
        "SELECT * FROM person JOIN pet ON person.id = pet.person",
        "SELECT person.*, pet.* FROM person JOIN pet ON person.id = pet.person",
        "EXPLAIN SELECT * FROM person",
    ];
    for sql in shape {
        let err = reg.subscribe(&snap, ClientId(1), 0, &[sql], &owner()).unwrap_err();
        assert!(matches!(err, EvalError::UnsupportedShape { .. }), "{sql}: {err}");
        assert!(err.to_string().contains("whole rows of one table"), "{err}");
    }
    for sql in ["SELEKT", "SELECT * FROM nope", "SELECT * FROM person WHERE nope = 1", "DELETE FROM person"] {
        let err = reg.subscribe(&snap, ClientId(1), 0, &[sql], &owner()).unwrap_err();
        assert!(matches!(err, EvalError::Plan { .. } | EvalError::UnsupportedShape { .. }), "{sql}: {err}");
        assert!(err.to_string().contains(sql), "{err}");
    }
    let err = reg
        .subscribe(&snap, ClientId(1), 0, &["SELECT * FROM person", "SELECT * FROM nope"], &owner())
        .unwrap_err();
    assert!(matches!(err, EvalError::Plan { .. }));
    assert_eq!((reg.query_count(), reg.template_count(), reg.client_count()), (0, 0, 0));
    reg.subscribe(&snap, ClientId(1), 0, &["SELECT * FROM person"], &owner()).unwrap();
}

// Proves a join subscription follows updates on both sides and nets out changes that do not
// alter the projected multiset.
#[test]
fn join_subscription_counts_multiplicity() {
    let d = setup();
    let mut reg = Registry::new();
    commit(&d, &reg, |tx| {
        tx.insert(d.person, person_row(1, 1, 30)).unwrap();
        tx.insert(d.pet, vec![u(10), u(1), u(0)]).unwrap();
        tx.insert(d.pet, vec![u(11), u(1), u(0)]).unwrap();
    });
    let q = "SELECT p.* FROM person p JOIN pet ON p.id = pet.person WHERE pet.kind = 0";
    let init = reg.subscribe(&d.db.snapshot(), ClientId(1), 0, &[q], &owner()).unwrap();
    assert_eq!(init[0].rows, vec![person_row(1, 1, 30), person_row(1, 1, 30)]);
    let up = commit(&d, &reg, |tx| {
        let person_pk = pk(tx, d.person);
        tx.update_by_unique(person_pk, person_row(1, 1, 31)).unwrap();
        let pet_pk = pk(tx, d.pet);
        tx.update_by_unique(pet_pk, vec![u(11), u(1), u(5)]).unwrap();
    });
    let c = changes(&up, 1);
    assert_eq!(c[&("person".to_string(), person_row(1, 1, 30))], -2);
    assert_eq!(c[&("person".to_string(), person_row(1, 1, 31))], 1);
    // Changing a pet's kind back and forth within one tx changes nothing.
    let up = commit(&d, &reg, |tx| {
        let pet_pk = pk(tx, d.pet);
        tx.update_by_unique(pet_pk, vec![u(10), u(1), u(5)]).unwrap();
        tx.update_by_unique(pet_pk, vec![u(10), u(1), u(0)]).unwrap();
    });
    assert!(up.is_empty());
}

// Proves `:sender` queries are shared per identity: one template, one query per distinct
// sender, and a row reaches exactly the clients whose identity it matches (through one shared
// delta for clients of the same identity).
#[test]
fn sender_queries_are_shared_per_identity() {
    let d = setup();
    let mut reg = Registry::new();
    let snap = d.db.snapshot();
    let q = "SELECT * FROM person WHERE owner = :sender";
    reg.subscribe(&snap, ClientId(1), 0, &[q], &user(1)).unwrap();
    reg.subscribe(&snap, ClientId(2), 0, &[q], &user(1)).unwrap();
    reg.subscribe(&snap, ClientId(3), 0, &[q], &user(2)).unwrap();
    assert_eq!((reg.template_count(), reg.query_count()), (1, 2));
    let up = commit(&d, &reg, |tx| {
        tx.insert(d.person, person_row(1, 1, 30)).unwrap();
    });
    assert_eq!(up.deltas.len(), 1);
    let clients: Vec<u64> = up.entries.iter().map(|e| e.client.0).collect();
    assert_eq!(clients, vec![1, 2]);
    assert!(changes(&up, 3).is_empty());
}
