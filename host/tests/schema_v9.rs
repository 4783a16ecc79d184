//! The V9 module definition served for older `spacetime` CLIs (`schema?version=9`): canonical
//! names, lifecycle and schedules folded back in, and JSON that the Apache-2.0
//! `spacetimedb-lib` types read back unchanged (they are what the CLI parses it with).

mod common;

use lightcone_host::module_def::ScheduledFunction;
use lightcone_host::schema_v9::raw_def_v9;
use spacetimedb_lib::db::raw_def::v9::{Lifecycle, RawModuleDefV9};

fn round_trip(def: &RawModuleDefV9) -> serde_json::Value {
    let json = serde_json::to_value(spacetimedb_sats::ser::serde::SerializeWrapper::from_ref(def)).unwrap();
    let back: RawModuleDefV9 = spacetimedb_sats::de::serde::deserialize_from(&json).unwrap();
    let again =
        serde_json::to_value(spacetimedb_sats::ser::serde::SerializeWrapper::from_ref(&back)).unwrap();
    assert_eq!(json, again, "the V9 JSON reads back as the same definition");
    json
}

#[test]
fn quickstart_chat_in_the_v9_shape() {
    let (host, _db) = common::publish("quickstart_chat");
    let spec = host.spec();
    let def = raw_def_v9(spec).unwrap();
    let tables: Vec<&str> = def.tables.iter().map(|t| &*t.name).collect();
    assert_eq!(tables, spec.tables.iter().map(|t| t.name.as_str()).collect::<Vec<_>>());
    assert!(tables.contains(&"message") && tables.contains(&"user"), "{tables:?}");
    let lifecycle = |name: &str| def.reducers.iter().find(|r| &*r.name == name).map(|r| r.lifecycle);
    assert_eq!(lifecycle("send_message"), Some(None));
    assert_eq!(lifecycle("set_name"), Some(None));
    assert_eq!(lifecycle("identity_connected"), Some(Some(Lifecycle::OnConnect)));
    assert_eq!(lifecycle("identity_disconnected"), Some(Some(Lifecycle::OnDisconnect)));
    let user = def.tables.iter().find(|t| &*t.name == "user").unwrap();
    assert_eq!(user.primary_key.as_singleton().map(|c| c.0), spec.table_by_name("user").unwrap().primary_key);
    let json = round_trip(&def);
    for key in ["typespace", "tables", "reducers", "types", "misc_exports", "row_level_security"] {
        assert!(json.get(key).is_some(), "top-level `{key}` missing: {json}");
    }
}

#[test]
fn schedules_sequences_and_indexes_carry_over() {
    let (host, _db) = common::publish("abi_exerciser");
    let spec = host.spec();
    let def = raw_def_v9(spec).unwrap();
    // The views' tables are not V9 tables.
    assert_eq!(def.tables.len(), spec.tables.iter().filter(|t| t.view.is_none()).count());
    assert_eq!(def.reducers.len(), spec.reducers.len());
    for schedule in &spec.schedules {
        let table = &def.tables[schedule.table];
        let s = table.schedule.as_ref().unwrap_or_else(|| panic!("{} lost its schedule", table.name));
        let function = match schedule.function {
            ScheduledFunction::Reducer(r) => &spec.reducers[r].name,
            ScheduledFunction::Procedure(p) => &spec.procedures[p].name,
        };
        assert_eq!(&*s.reducer_name, function);
        assert_eq!(s.scheduled_at_column.0, schedule.at_column);
    }
    assert!(def.tables.iter().filter(|t| t.schedule.is_some()).count() == spec.schedules.len());
    for (v9, table) in def.tables.iter().zip(&spec.tables) {
        assert_eq!(v9.indexes.len(), table.indexes.len(), "{}", table.name);
        assert_eq!(v9.sequences.len(), table.sequences.len(), "{}", table.name);
    }
    assert_eq!(def.reducers.iter().filter(|r| r.lifecycle == Some(Lifecycle::Init)).count(), 1);
    round_trip(&def);
}
