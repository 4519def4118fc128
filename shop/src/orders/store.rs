//! The orders database. Orders replicas are stateless; they share this one SQLite file,
//! which stands in for the database server a real deployment would use. The
//! `UNIQUE(owner, idempotency_key)` constraint makes "same key, same order" hold across
//! replicas and concurrent retries.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

use crate::catalog::store::ReservedLine;

#[derive(Debug, thiserror::Error)]
pub enum OrdersStoreError {
    #[error("database error: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("stored order is corrupt: {0}")]
    Corrupt(String),
}

/// An order as stored: the secret fields are ciphertexts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredOrder {
    pub id: String,
    pub owner: String,
    pub idempotency_key: String,
    pub request_digest: String,
    pub status: String,
    pub total_cents: i64,
    pub lines: Vec<ReservedLine>,
    pub shipping_address_sealed: String,
    pub card_number_sealed: String,
    pub card_last4: String,
    pub created_at_ms: i64,
}

pub struct OrdersStore {
    conn: Mutex<Connection>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS orders(
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    request_digest TEXT NOT NULL,
    status TEXT NOT NULL,
    total_cents INTEGER NOT NULL,
    lines TEXT NOT NULL,
    shipping_address_sealed TEXT NOT NULL,
    card_number_sealed TEXT NOT NULL,
    card_last4 TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    UNIQUE(owner, idempotency_key)
);
";

const COLUMNS: &str = "id, owner, idempotency_key, request_digest, status, total_cents, lines, shipping_address_sealed, card_number_sealed, card_last4, created_at_ms";

fn row_to_order(r: &rusqlite::Row<'_>) -> rusqlite::Result<(StoredOrder, String)> {
    let lines: String = r.get(6)?;
    Ok((
        StoredOrder {
            id: r.get(0)?,
            owner: r.get(1)?,
            idempotency_key: r.get(2)?,
            request_digest: r.get(3)?,
            status: r.get(4)?,
            total_cents: r.get(5)?,
            lines: Vec::new(),
            shipping_address_sealed: r.get(7)?,
            card_number_sealed: r.get(8)?,
            card_last4: r.get(9)?,
            created_at_ms: r.get(10)?,
        },
        lines,
    ))
}

fn finish(row: Option<(StoredOrder, String)>) -> Result<Option<StoredOrder>, OrdersStoreError> {
    row.map(|(mut order, lines)| {
        order.lines = serde_json::from_str(&lines).map_err(|e| OrdersStoreError::Corrupt(e.to_string()))?;
        Ok(order)
    })
    .transpose()
}

impl OrdersStore {
    pub fn open(path: &Path) -> Result<Self, OrdersStoreError> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| OrdersStoreError::Corrupt(format!("{}: {e}", parent.display())))?;
        }
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.execute_batch(SCHEMA)?;
        Ok(OrdersStore { conn: Mutex::new(conn) })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn by_key(&self, owner: &str, key: &str) -> Result<Option<StoredOrder>, OrdersStoreError> {
        let row = self
            .lock()
            .query_row(
                &format!("SELECT {COLUMNS} FROM orders WHERE owner = ?1 AND idempotency_key = ?2"),
                params![owner, key],
                row_to_order,
            )
            .optional()?;
        finish(row)
    }

    pub fn by_id(&self, id: &str) -> Result<Option<StoredOrder>, OrdersStoreError> {
        let row = self
            .lock()
            .query_row(&format!("SELECT {COLUMNS} FROM orders WHERE id = ?1"), [id], row_to_order)
            .optional()?;
        finish(row)
    }

    /// Inserts the order unless one with the same owner and key exists; returns the order
    /// that is stored either way.
    pub fn insert_or_get(&self, order: &StoredOrder) -> Result<StoredOrder, OrdersStoreError> {
        let lines = serde_json::to_string(&order.lines).map_err(|e| OrdersStoreError::Corrupt(e.to_string()))?;
        let inserted = self.lock().execute(
            &format!("INSERT OR IGNORE INTO orders({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"),
            params![
                order.id,
                order.owner,
                order.idempotency_key,
                order.request_digest,
                order.status,
                order.total_cents,
                lines,
                order.shipping_address_sealed,
                order.card_number_sealed,
                order.card_last4,
                order.created_at_ms
            ],
        )?;
        if inserted == 1 {
            return Ok(order.clone());
        }
        self.by_key(&order.owner, &order.idempotency_key)?
            .ok_or_else(|| OrdersStoreError::Corrupt("order vanished after a conflicting insert".into()))
    }
}
