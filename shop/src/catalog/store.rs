//! The catalog's SQLite database: products, the change log the standby and search follow,
//! stock reservations, and the replica's role and epoch.
//!
//! Every write appends to `changes` in the same transaction, so the change log is exactly
//! the history of the data. A standby applies the primary's changes under the primary's
//! sequence numbers, which keeps sequence numbers the same on every replica.

use hale_core::time::now_ms;
use std::path::Path;
use std::sync::Mutex;

use hale_core::Role;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("product {0} does not exist")]
    NoSuchProduct(i64),
    #[error("product {product_id} has {available} in stock, {requested} requested")]
    OutOfStock { product_id: i64, available: i64, requested: i64 },
    #[error("change {got} does not follow {expected_after}")]
    Gap { expected_after: u64, got: u64 },
    /// The client a standby follows its primary with could not be built (no TLS roots,
    /// no sockets): nothing is wrong with the data.
    #[error("cannot build the replication client: {0}")]
    Client(#[from] reqwest::Error),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Product {
    pub id: i64,
    pub name: String,
    pub description: String,
    pub price_cents: i64,
    pub stock: i64,
    pub tags: Vec<String>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewProduct {
    pub name: String,
    pub description: String,
    pub price_cents: i64,
    pub stock: i64,
    pub tags: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReservationItem {
    pub product_id: i64,
    pub quantity: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReservedLine {
    pub product_id: i64,
    pub name: String,
    pub quantity: i64,
    pub unit_price_cents: i64,
}

/// A confirmed stock reservation. Reserving the same id twice returns the first one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    pub reservation_id: String,
    pub lines: Vec<ReservedLine>,
    pub total_cents: i64,
}

/// One entry of the change log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ChangeBody {
    /// A product was created or changed; carries the whole row after the change.
    Product { product: Product },
    /// Stock was reserved; carries the reservation and the rows after the change.
    Reservation { reservation: Reservation, products: Vec<Product> },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub seq: u64,
    pub epoch: u64,
    pub at_ms: i64,
    #[serde(flatten)]
    pub body: ChangeBody,
}

/// The replica's durable identity in its replication group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaMeta {
    pub role: Role,
    pub epoch: u64,
}

/// A replica's account of sync sets. As a primary: whether its standby is `member` of its
/// set (then no write is acknowledged before the standby has it) and the set's `stamp`.
/// As a standby: whether its primary last said it was `in_sync`, and in which set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SyncMeta {
    pub member: bool,
    pub stamp: hale_core::api::SyncStamp,
    pub in_sync: bool,
    pub in_stamp: hale_core::api::SyncStamp,
}

pub struct Store {
    conn: Mutex<Connection>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS products(
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    description TEXT NOT NULL,
    price_cents INTEGER NOT NULL,
    stock INTEGER NOT NULL CHECK (stock >= 0),
    tags TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS changes(
    seq INTEGER PRIMARY KEY,
    epoch INTEGER NOT NULL,
    at_ms INTEGER NOT NULL,
    body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS reservations(
    id TEXT PRIMARY KEY,
    body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS diverged_changes(
    seq INTEGER NOT NULL,
    epoch INTEGER NOT NULL,
    at_ms INTEGER NOT NULL,
    body TEXT NOT NULL,
    set_aside_at_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS meta(
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
";

fn row_to_product(row: &rusqlite::Row<'_>) -> rusqlite::Result<Product> {
    let tags: String = row.get(5)?;
    Ok(Product {
        id: row.get(0)?,
        name: row.get(1)?,
        description: row.get(2)?,
        price_cents: row.get(3)?,
        stock: row.get(4)?,
        tags: serde_json::from_str(&tags).unwrap_or_default(),
        created_at_ms: row.get(6)?,
        updated_at_ms: row.get(7)?,
    })
}

const PRODUCT_COLUMNS: &str = "id, name, description, price_cents, stock, tags, created_at_ms, updated_at_ms";

fn get_product(conn: &Connection, id: i64) -> rusqlite::Result<Option<Product>> {
    conn.query_row(&format!("SELECT {PRODUCT_COLUMNS} FROM products WHERE id = ?1"), [id], row_to_product).optional()
}

fn upsert_product(conn: &Connection, p: &Product) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO products(id, name, description, price_cents, stock, tags, created_at_ms, updated_at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
         ON CONFLICT(id) DO UPDATE SET name=excluded.name, description=excluded.description,
           price_cents=excluded.price_cents, stock=excluded.stock, tags=excluded.tags,
           created_at_ms=excluded.created_at_ms, updated_at_ms=excluded.updated_at_ms",
        params![
            p.id,
            p.name,
            p.description,
            p.price_cents,
            p.stock,
            serde_json::to_string(&p.tags).unwrap_or_else(|_| "[]".into()),
            p.created_at_ms,
            p.updated_at_ms
        ],
    )?;
    Ok(())
}

fn append_change(
    conn: &Connection,
    seq: Option<u64>,
    epoch: u64,
    at_ms: i64,
    body: &ChangeBody,
) -> Result<u64, StoreError> {
    let text = serde_json::to_string(body).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    match seq {
        Some(seq) => {
            conn.execute(
                "INSERT INTO changes(seq, epoch, at_ms, body) VALUES (?1, ?2, ?3, ?4)",
                params![seq as i64, epoch as i64, at_ms, text],
            )?;
            Ok(seq)
        }
        None => {
            conn.execute(
                "INSERT INTO changes(epoch, at_ms, body) VALUES (?1, ?2, ?3)",
                params![epoch as i64, at_ms, text],
            )?;
            Ok(conn.last_insert_rowid() as u64)
        }
    }
}

/// Writes the rows a change carries (not its log entry).
fn apply_rows(conn: &Connection, body: &ChangeBody) -> Result<(), StoreError> {
    match body {
        ChangeBody::Product { product } => upsert_product(conn, product)?,
        ChangeBody::Reservation { reservation, products } => {
            for p in products {
                upsert_product(conn, p)?;
            }
            let text = serde_json::to_string(reservation).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            conn.execute(
                "INSERT OR REPLACE INTO reservations(id, body) VALUES (?1, ?2)",
                params![reservation.reservation_id, text],
            )?;
        }
    }
    Ok(())
}

impl Store {
    /// Opens (creating if needed) the database at `path`. `initial_role` is used only
    /// the first time; afterwards the stored role and epoch win, so a restarted replica
    /// keeps what it learned (a fenced primary stays fenced).
    pub fn open(path: &Path, initial_role: Role) -> Result<Self, StoreError> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| StoreError::Corrupt(format!("{}: {e}", parent.display())))?;
        }
        let conn = Connection::open(path)?;
        Self::init(conn, initial_role)
    }

    pub fn in_memory(initial_role: Role) -> Result<Self, StoreError> {
        Self::init(Connection::open_in_memory()?, initial_role)
    }

    fn init(conn: Connection, initial_role: Role) -> Result<Self, StoreError> {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // FULL: a committed write survives power loss, which is what "acknowledged" promises.
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(SCHEMA)?;
        let role = match initial_role {
            Role::Primary => "primary",
            Role::Standby => "standby",
            Role::Fenced => "fenced",
        };
        conn.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('role', ?1)", [role])?;
        conn.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('epoch', '1')", [])?;
        Ok(Store { conn: Mutex::new(conn) })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn meta(&self) -> Result<ReplicaMeta, StoreError> {
        let conn = self.lock();
        let get = |key: &str| -> Result<String, StoreError> {
            Ok(conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))?)
        };
        let role = match get("role")?.as_str() {
            "primary" => Role::Primary,
            "standby" => Role::Standby,
            "fenced" => Role::Fenced,
            other => return Err(StoreError::Corrupt(format!("unknown role {other:?}"))),
        };
        let epoch = get("epoch")?.parse().map_err(|_| StoreError::Corrupt("epoch is not a number".into()))?;
        Ok(ReplicaMeta { role, epoch })
    }

    pub fn set_meta(&self, meta: ReplicaMeta) -> Result<(), StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        tx.execute("UPDATE meta SET value = ?1 WHERE key = 'role'", [meta.role.to_string()])?;
        tx.execute("UPDATE meta SET value = ?1 WHERE key = 'epoch'", [meta.epoch.to_string()])?;
        tx.commit()?;
        Ok(())
    }

    /// What this replica keeps of sync sets (`replication.rs`); nothing yet: no set.
    pub fn sync(&self) -> Result<SyncMeta, StoreError> {
        let conn = self.lock();
        let text: Option<String> =
            conn.query_row("SELECT value FROM meta WHERE key = 'sync'", [], |r| r.get(0)).optional()?;
        match text {
            None => Ok(SyncMeta::default()),
            Some(t) => serde_json::from_str(&t).map_err(|e| StoreError::Corrupt(format!("sync state: {e}"))),
        }
    }

    /// Stores the sync state (durably: a primary that restarts keeps waiting for its
    /// standby, and a released standby stays out of the set).
    pub fn set_sync(&self, sync: SyncMeta) -> Result<(), StoreError> {
        let text = serde_json::to_string(&sync).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.lock().execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('sync', ?1)", [text])?;
        Ok(())
    }

    /// The primary this replica follows, as last set by a rejoin (`None`: as configured).
    pub fn follow(&self) -> Result<Option<String>, StoreError> {
        let conn = self.lock();
        Ok(conn.query_row("SELECT value FROM meta WHERE key = 'follow'", [], |r| r.get(0)).optional()?)
    }

    /// The epoch under which change `seq` was written, if this replica has it.
    pub fn epoch_of(&self, seq: u64) -> Result<Option<u64>, StoreError> {
        let conn = self.lock();
        let epoch: Option<i64> =
            conn.query_row("SELECT epoch FROM changes WHERE seq = ?1", [seq as i64], |r| r.get(0)).optional()?;
        Ok(epoch.map(|e| e as u64))
    }

    /// Turns this replica into a standby of `follow` under `meta`, keeping its change log
    /// through `keep_through` (what it shares with the new primary). Later changes — ones
    /// the new primary never received — move to `diverged_changes` for a human to look
    /// at, and products and reservations are rebuilt from the log that remains. One
    /// transaction: after a crash the replica is either as before or fully rejoined.
    /// Returns how many changes were set aside.
    pub fn rejoin(&self, keep_through: u64, meta: ReplicaMeta, follow: &str) -> Result<u64, StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let set_aside = tx.execute(
            "INSERT INTO diverged_changes(seq, epoch, at_ms, body, set_aside_at_ms)
             SELECT seq, epoch, at_ms, body, ?2 FROM changes WHERE seq > ?1",
            params![keep_through as i64, now_ms()],
        )? as u64;
        if set_aside > 0 {
            tx.execute("DELETE FROM changes WHERE seq > ?1", [keep_through as i64])?;
            tx.execute("DELETE FROM products", [])?;
            tx.execute("DELETE FROM reservations", [])?;
            let bodies: Vec<String> = tx
                .prepare("SELECT body FROM changes ORDER BY seq")?
                .query_map([], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            for body in bodies {
                let body: ChangeBody = serde_json::from_str(&body).map_err(|e| StoreError::Corrupt(e.to_string()))?;
                apply_rows(&tx, &body)?;
            }
        }
        tx.execute("UPDATE meta SET value = ?1 WHERE key = 'role'", [meta.role.to_string()])?;
        tx.execute("UPDATE meta SET value = ?1 WHERE key = 'epoch'", [meta.epoch.to_string()])?;
        tx.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('follow', ?1)", [follow])?;
        tx.commit()?;
        Ok(set_aside)
    }

    pub fn last_seq(&self) -> Result<u64, StoreError> {
        let conn = self.lock();
        let seq: Option<i64> = conn.query_row("SELECT MAX(seq) FROM changes", [], |r| r.get(0))?;
        Ok(seq.unwrap_or(0) as u64)
    }

    pub fn create_product(&self, epoch: u64, new: &NewProduct) -> Result<(Product, u64), StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let now = now_ms();
        tx.execute(
            "INSERT INTO products(name, description, price_cents, stock, tags, created_at_ms, updated_at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)",
            params![
                new.name,
                new.description,
                new.price_cents,
                new.stock,
                serde_json::to_string(&new.tags).unwrap_or_else(|_| "[]".into()),
                now
            ],
        )?;
        let id = tx.last_insert_rowid();
        let product = get_product(&tx, id)?.ok_or(StoreError::NoSuchProduct(id))?;
        let seq = append_change(&tx, None, epoch, now, &ChangeBody::Product { product: product.clone() })?;
        tx.commit()?;
        Ok((product, seq))
    }

    pub fn product(&self, id: i64) -> Result<Option<Product>, StoreError> {
        Ok(get_product(&self.lock(), id)?)
    }

    /// A page of products by id, and the total count.
    pub fn list(&self, limit: u32, offset: u32) -> Result<(Vec<Product>, u64), StoreError> {
        let conn = self.lock();
        let mut stmt =
            conn.prepare_cached(&format!("SELECT {PRODUCT_COLUMNS} FROM products ORDER BY id LIMIT ?1 OFFSET ?2"))?;
        let products = stmt.query_map(params![limit, offset], row_to_product)?.collect::<Result<Vec<_>, _>>()?;
        let total: i64 = conn.query_row("SELECT COUNT(*) FROM products", [], |r| r.get(0))?;
        Ok((products, total as u64))
    }

    /// Reserves stock for every item or for none. Never oversells: the decrement and its
    /// check are one statement inside one write transaction. Idempotent per reservation id.
    pub fn reserve(
        &self,
        epoch: u64,
        reservation_id: &str,
        items: &[ReservationItem],
    ) -> Result<(Reservation, Option<u64>), StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        if let Some(body) = tx
            .query_row("SELECT body FROM reservations WHERE id = ?1", [reservation_id], |r| r.get::<_, String>(0))
            .optional()?
        {
            let reservation = serde_json::from_str(&body).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            return Ok((reservation, None));
        }
        let now = now_ms();
        let mut lines = Vec::with_capacity(items.len());
        let mut products = Vec::with_capacity(items.len());
        let mut total: i64 = 0;
        for item in items {
            let changed = tx.execute(
                "UPDATE products SET stock = stock - ?1, updated_at_ms = ?3 WHERE id = ?2 AND stock >= ?1",
                params![item.quantity, item.product_id, now],
            )?;
            let product = get_product(&tx, item.product_id)?.ok_or(StoreError::NoSuchProduct(item.product_id))?;
            if changed == 0 {
                return Err(StoreError::OutOfStock {
                    product_id: item.product_id,
                    available: product.stock,
                    requested: item.quantity,
                });
            }
            total = total.saturating_add(product.price_cents.saturating_mul(item.quantity));
            lines.push(ReservedLine {
                product_id: product.id,
                name: product.name.clone(),
                quantity: item.quantity,
                unit_price_cents: product.price_cents,
            });
            products.retain(|p: &Product| p.id != product.id);
            products.push(product);
        }
        let reservation = Reservation { reservation_id: reservation_id.to_string(), lines, total_cents: total };
        let text = serde_json::to_string(&reservation).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        tx.execute("INSERT INTO reservations(id, body) VALUES (?1, ?2)", params![reservation_id, text])?;
        let seq = append_change(
            &tx,
            None,
            epoch,
            now,
            &ChangeBody::Reservation { reservation: reservation.clone(), products },
        )?;
        tx.commit()?;
        Ok((reservation, Some(seq)))
    }

    /// Changes after `seq`, oldest first, at most `limit`.
    pub fn changes_after(&self, seq: u64, limit: u32) -> Result<Vec<Change>, StoreError> {
        let conn = self.lock();
        let mut stmt =
            conn.prepare_cached("SELECT seq, epoch, at_ms, body FROM changes WHERE seq > ?1 ORDER BY seq LIMIT ?2")?;
        let rows = stmt.query_map(params![seq as i64, limit], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?, r.get::<_, String>(3)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (seq, epoch, at_ms, body) = row?;
            let body = serde_json::from_str(&body).map_err(|e| StoreError::Corrupt(format!("change {seq}: {e}")))?;
            out.push(Change { seq: seq as u64, epoch: epoch as u64, at_ms, body });
        }
        Ok(out)
    }

    /// Applies the primary's changes in one transaction. Changes already applied are
    /// skipped; a gap is refused (the follower asks again from its last sequence).
    pub fn apply(&self, changes: &[Change]) -> Result<u64, StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut last: u64 =
            tx.query_row("SELECT COALESCE(MAX(seq), 0) FROM changes", [], |r| r.get::<_, i64>(0))? as u64;
        for change in changes {
            if change.seq <= last {
                continue;
            }
            if change.seq != last + 1 {
                return Err(StoreError::Gap { expected_after: last, got: change.seq });
            }
            apply_rows(&tx, &change.body)?;
            append_change(&tx, Some(change.seq), change.epoch, change.at_ms, &change.body)?;
            last = change.seq;
        }
        tx.commit()?;
        Ok(last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn product(name: &str, stock: i64) -> NewProduct {
        NewProduct { name: name.into(), description: "d".into(), price_cents: 250, stock, tags: vec!["t".into()] }
    }

    /// A primary holding one product of 5 units, `quantity` of them reserved (as `r1`),
    /// and an empty standby.
    fn primary_and_standby(quantity: i64) -> (Store, Store, Product) {
        let primary = Store::in_memory(Role::Primary).expect("open");
        let standby = Store::in_memory(Role::Standby).expect("open");
        let (p, _) = primary.create_product(1, &product("kept", 5)).expect("create");
        primary.reserve(1, "r1", &[ReservationItem { product_id: p.id, quantity }]).expect("reserve");
        (primary, standby, p)
    }

    #[test]
    fn create_list_get() {
        let s = Store::in_memory(Role::Primary).expect("open");
        let (p, seq) = s.create_product(1, &product("lamp", 3)).expect("create");
        assert_eq!(seq, 1);
        assert_eq!(s.product(p.id).expect("get"), Some(p.clone()));
        let (page, total) = s.list(10, 0).expect("list");
        assert_eq!((page.len(), total), (1, 1));
    }

    #[test]
    fn reservation_is_all_or_nothing_and_idempotent() {
        let s = Store::in_memory(Role::Primary).expect("open");
        let (a, _) = s.create_product(1, &product("a", 2)).expect("a");
        let (b, _) = s.create_product(1, &product("b", 1)).expect("b");
        let items =
            [ReservationItem { product_id: a.id, quantity: 1 }, ReservationItem { product_id: b.id, quantity: 2 }];
        assert!(matches!(s.reserve(1, "r1", &items), Err(StoreError::OutOfStock { available: 1, .. })));
        assert_eq!(s.product(a.id).expect("a").map(|p| p.stock), Some(2), "nothing reserved on failure");
        let items = [ReservationItem { product_id: a.id, quantity: 2 }];
        let (r, seq) = s.reserve(1, "r2", &items).expect("reserve");
        assert_eq!(r.total_cents, 500);
        assert!(seq.is_some());
        let (again, seq) = s.reserve(1, "r2", &items).expect("same id");
        assert_eq!((again, seq), (r, None));
        assert_eq!(s.product(a.id).expect("a").map(|p| p.stock), Some(0));
    }

    #[test]
    fn a_rejoining_old_primary_sets_aside_what_the_new_primary_never_got() {
        let (old, new, p) = primary_and_standby(1);
        new.apply(&old.changes_after(0, 100).expect("changes")).expect("replicated");
        // The old primary goes on alone (cut off), the standby is promoted and writes too.
        old.reserve(1, "lost", &[ReservationItem { product_id: p.id, quantity: 3 }]).expect("diverges");
        old.create_product(1, &product("only-on-old", 1)).expect("diverges");
        new.set_meta(ReplicaMeta { role: Role::Primary, epoch: 2 }).expect("promote");
        new.reserve(2, "r2", &[ReservationItem { product_id: p.id, quantity: 2 }]).expect("reserve");
        assert_eq!(new.epoch_of(3).expect("epoch"), Some(2));
        assert_eq!(old.epoch_of(3).expect("epoch"), Some(1), "seq 3 differs: the logs share 1..=2");

        let standby = ReplicaMeta { role: Role::Standby, epoch: 2 };
        assert_eq!(old.rejoin(2, standby, "http://new").expect("rejoin"), 2, "two changes set aside");
        assert_eq!(old.meta().expect("meta"), standby);
        assert_eq!(old.follow().expect("follow").as_deref(), Some("http://new"));
        assert_eq!(old.last_seq().expect("seq"), 2);
        assert_eq!(old.product(p.id).expect("get").map(|p| p.stock), Some(4), "rebuilt as of seq 2");
        assert_eq!(old.list(10, 0).expect("list").1, 1, "the product only the old primary had is gone");
        // It now follows the new primary without a gap, and ends up identical.
        old.apply(&new.changes_after(2, 100).expect("changes")).expect("catch up");
        assert_eq!(old.list(10, 0).expect("list"), new.list(10, 0).expect("list"));
        assert_eq!(old.changes_after(0, 100).expect("log"), new.changes_after(0, 100).expect("log"));
        let aside: i64 = old.lock().query_row("SELECT COUNT(*) FROM diverged_changes", [], |r| r.get(0)).expect("n");
        assert_eq!(aside, 2, "kept for a human");
        // Nothing diverged: nothing is set aside or rebuilt.
        assert_eq!(new.rejoin(3, ReplicaMeta { role: Role::Standby, epoch: 3 }, "http://x").expect("rejoin"), 0);
        assert_eq!(new.last_seq().expect("seq"), 3);
    }

    #[test]
    fn standby_applies_changes_and_refuses_gaps() {
        let (primary, standby, p) = primary_and_standby(2);
        let changes = primary.changes_after(0, 100).expect("changes");
        assert_eq!(standby.apply(&changes).expect("apply"), 2);
        assert_eq!(standby.apply(&changes).expect("again"), 2, "re-applying is a no-op");
        assert_eq!(standby.product(p.id).expect("get").map(|p| p.stock), Some(3));
        primary.create_product(1, &product("y", 1)).expect("create");
        primary.create_product(1, &product("z", 1)).expect("create");
        let tail = primary.changes_after(3, 10).expect("tail");
        assert!(matches!(standby.apply(&tail), Err(StoreError::Gap { expected_after: 2, got: 4 })));
        // The same reservation id on the standby (after promotion) is recognised.
        let (r, seq) =
            standby.reserve(2, "r1", &[ReservationItem { product_id: p.id, quantity: 2 }]).expect("idempotent");
        assert_eq!((r.total_cents, seq), (500, None));
    }

    #[test]
    fn concurrent_reservations_never_oversell() {
        let dir = tempfile::tempdir().expect("tmp");
        let s = std::sync::Arc::new(Store::open(&dir.path().join("c.db"), Role::Primary).expect("open"));
        let (p, _) = s.create_product(1, &product("scarce", 10)).expect("create");
        let handles: Vec<_> = (0..8)
            .map(|t| {
                let s = s.clone();
                std::thread::spawn(move || {
                    (0..5)
                        .filter(|i| {
                            s.reserve(1, &format!("{t}-{i}"), &[ReservationItem { product_id: p.id, quantity: 1 }])
                                .is_ok()
                        })
                        .count()
                })
            })
            .collect();
        let sold: usize = handles.into_iter().map(|h| h.join().expect("thread")).sum();
        assert_eq!(sold, 10);
        assert_eq!(s.product(p.id).expect("get").map(|p| p.stock), Some(0));
    }

    #[test]
    fn role_and_epoch_survive_reopen() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("c.db");
        let s = Store::open(&path, Role::Primary).expect("open");
        s.set_meta(ReplicaMeta { role: Role::Fenced, epoch: 3 }).expect("set");
        drop(s);
        let s = Store::open(&path, Role::Primary).expect("reopen");
        assert_eq!(s.meta().expect("meta"), ReplicaMeta { role: Role::Fenced, epoch: 3 });
    }
}
