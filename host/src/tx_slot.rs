//! The open write transaction of a module call, kept beside the database it borrows.
//!
//! wasmtime's store data must be `'static`, but [`WriteTx`] borrows its [`Database`]. This
//! module is the one place that erases that lifetime, and it owns the `Arc` that keeps the
//! database alive for as long as the transaction exists.

use std::sync::Arc;

use lightcone_mvcc::{Database, WriteTx};

/// Holds at most one open transaction on `db`.
pub struct TxSlot {
    // Field order matters: `tx` is dropped before `db` (see also `Drop`).
    tx: Option<WriteTx<'static>>,
    db: Arc<Database>,
}

impl TxSlot {
    pub fn new(db: Arc<Database>) -> TxSlot {
        TxSlot { tx: None, db }
    }

    pub fn database(&self) -> &Arc<Database> {
        &self.db
    }

    /// Begins a transaction (waits while another thread's transaction is open).
    ///
    /// # Panics
    /// If a transaction is already open in this slot.
    pub fn begin(&mut self) {
        assert!(self.tx.is_none(), "TxSlot::begin with a transaction already open");
        let tx = self.db.begin();
        // SAFETY: `tx` borrows the `Database` inside `self.db`. That allocation is owned by the
        // `Arc` this slot holds and never moves. `self.db` is private and never reassigned, so
        // the database outlives every transaction stored here: the transaction leaves the slot
        // only through `take`/`get`, whose results borrow `self` (the `'static` is shortened
        // back to the slot's borrow by covariance), and `Drop` drops `tx` before `db`.
        let tx = unsafe { std::mem::transmute::<WriteTx<'_>, WriteTx<'static>>(tx) };
        self.tx = Some(tx);
    }

    pub fn is_open(&self) -> bool {
        self.tx.is_some()
    }

    /// The open transaction. (`&mut` is invariant, so the erased lifetime shows here; callers
    /// only use the transaction in place and never swap another one in: this module is
    /// private to the crate for that reason.)
    pub fn get(&mut self) -> Option<&mut WriteTx<'static>> {
        self.tx.as_mut()
    }

    /// Removes the open transaction, to commit or roll it back. The result borrows the slot,
    /// so it cannot outlive the database.
    pub fn take(&mut self) -> Option<WriteTx<'_>> {
        self.tx.take()
    }
}

impl Drop for TxSlot {
    fn drop(&mut self) {
        // Roll back before the database handle goes.
        self.tx = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lightcone_mvcc::{ColumnDef, ColumnType, ReadTx, TableDef, Value};

    #[test]
    fn commit_and_rollback_through_the_slot() {
        let db = Arc::new(Database::new());
        let mut slot = TxSlot::new(Arc::clone(&db));
        slot.begin();
        let t = slot
            .get()
            .unwrap()
            .create_table(TableDef::new("t", vec![ColumnDef::new("x", ColumnType::U32)]))
            .unwrap();
        slot.get().unwrap().insert(t, vec![Value::U32(1)]).unwrap();
        slot.take().unwrap().commit();
        slot.begin();
        slot.get().unwrap().insert(t, vec![Value::U32(2)]).unwrap();
        drop(slot.take()); // rollback
        assert!(!slot.is_open());
        assert_eq!(db.snapshot().table(t).unwrap().row_count(), 1);
        // A slot dropped with an open transaction rolls it back and frees the writer.
        slot.begin();
        slot.get().unwrap().insert(t, vec![Value::U32(3)]).unwrap();
        drop(slot);
        assert_eq!(db.snapshot().table(t).unwrap().row_count(), 1);
    }
}
