use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use actix::{Actor, Addr, Handler, SyncArbiter, SyncContext};
use rusqlite::{Connection, OptionalExtension, params};

use super::{
    CatalogConfig, CatalogError, CreateProduct, DeleteProduct, GetProduct, ListProducts,
    NewProduct, Product, ProductPatch, UpdateProduct,
};
use crate::{cache::CacheHandle, db::DatabaseLocation};

const SCHEMA: &str = "
    PRAGMA journal_mode = WAL;
    PRAGMA busy_timeout = 5000;
    CREATE TABLE IF NOT EXISTS products (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        name        TEXT    NOT NULL,
        price       REAL    NOT NULL CHECK (price >= 0),
        description TEXT
    );
    CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
";

const SAMPLE_PRODUCTS: &[(&str, f64, &str)] = &[
    (
        "Mechanical keyboard",
        89.90,
        "Hot-swappable switches, aluminium frame",
    ),
    ("Wireless mouse", 34.50, "Silent clicks, 70-day battery"),
    ("USB-C hub", 45.00, "Seven ports, 100 W pass-through"),
    ("27\" monitor", 279.00, "1440p IPS panel, 144 Hz"),
    ("Laptop stand", 29.99, "Folding, adjustable height"),
    (
        "Noise-cancelling headphones",
        199.00,
        "30 hours of playback",
    ),
    ("Webcam", 59.90, "1080p, privacy shutter"),
    ("Desk lamp", 24.00, "Dimmable LED, USB powered"),
    ("External SSD 1 TB", 99.00, "USB 3.2, 1050 MB/s"),
    ("Ergonomic chair", 349.00, "Lumbar support, mesh back"),
];

/// Owns the catalog's SQLite connection on a dedicated thread.
pub struct CatalogActor {
    conn: Connection,
}

impl Actor for CatalogActor {
    type Context = SyncContext<Self>;
}

/// A cloneable handle to the catalog actor, counting the loads it serves, with the cache the
/// catalog is read through and its settings.
#[derive(Clone, Debug)]
pub struct CatalogHandle {
    addr: Addr<CatalogActor>,
    loads: Arc<AtomicU64>,
    cache: CacheHandle,
    config: Arc<CatalogConfig>,
}

fn open(location: &DatabaseLocation) -> Result<Connection, CatalogError> {
    let (conn, path) = match location {
        DatabaseLocation::File(path) => (Connection::open(path), path.display().to_string()),
        DatabaseLocation::Memory => (Connection::open_in_memory(), ":memory:".to_owned()),
    };
    let open_err = |source| CatalogError::Open {
        path: path.clone(),
        source,
    };
    let conn = conn.map_err(open_err)?;
    conn.execute_batch(SCHEMA).map_err(open_err)?;
    seed(&conn).map_err(open_err)?;
    Ok(conn)
}

/// Inserts the sample products once per database (deleting them all does not bring them back).
fn seed(conn: &Connection) -> rusqlite::Result<()> {
    let seeded: Option<String> = conn
        .query_row("SELECT value FROM meta WHERE key = 'seeded'", [], |r| {
            r.get(0)
        })
        .optional()?;
    if seeded.is_some() {
        return Ok(());
    }
    let tx = conn.unchecked_transaction()?;
    for (name, price, description) in SAMPLE_PRODUCTS {
        tx.execute(
            "INSERT INTO products (name, price, description) VALUES (?1, ?2, ?3)",
            params![name, price, description],
        )?;
    }
    tx.execute("INSERT INTO meta (key, value) VALUES ('seeded', '1')", [])?;
    tx.commit()?;
    tracing::info!(
        count = SAMPLE_PRODUCTS.len(),
        "seeded the catalog with sample products"
    );
    Ok(())
}

impl CatalogHandle {
    /// Opens (creating and seeding when new) the database and starts the actor; reads go
    /// through `cache`.
    ///
    /// # Errors
    /// [`CatalogError::Open`] when the database cannot be opened or created.
    pub fn start(
        location: &DatabaseLocation,
        config: CatalogConfig,
        cache: CacheHandle,
    ) -> Result<Self, CatalogError> {
        let first = std::sync::Mutex::new(Some(open(location)?));
        let location = location.clone();
        let addr = SyncArbiter::start(1, move || {
            // The connection opened above serves first; a restarted actor reopens the file.
            let conn = first.lock().ok().and_then(|mut c| c.take());
            let conn = match conn {
                Some(conn) => conn,
                // unwrap: the same location opened successfully a moment ago; if it no longer
                // opens, the catalog thread cannot do anything useful.
                None => open(&location).unwrap(),
            };
            CatalogActor { conn }
        });
        Ok(Self {
            addr,
            loads: Arc::new(AtomicU64::new(0)),
            cache,
            config: Arc::new(config),
        })
    }

    /// The cache the catalog is read through.
    pub fn cache(&self) -> &CacheHandle {
        &self.cache
    }

    /// The catalog's settings.
    pub fn config(&self) -> &CatalogConfig {
        &self.config
    }

    /// The actor's address.
    pub fn addr(&self) -> &Addr<CatalogActor> {
        &self.addr
    }

    /// How many reads (`list` and `get`) reached the database since start.
    pub fn load_count(&self) -> u64 {
        self.loads.load(Ordering::Relaxed)
    }

    /// Every product.
    ///
    /// # Errors
    /// [`CatalogError`] when the database fails.
    pub async fn list(&self) -> Result<Vec<Product>, CatalogError> {
        self.loads.fetch_add(1, Ordering::Relaxed);
        self.addr
            .send(ListProducts)
            .await
            .map_err(|_| CatalogError::ActorGone)?
    }

    /// One product, or `None`.
    ///
    /// # Errors
    /// [`CatalogError`] when the database fails.
    pub async fn get(&self, id: i64) -> Result<Option<Product>, CatalogError> {
        self.loads.fetch_add(1, Ordering::Relaxed);
        self.addr
            .send(GetProduct(id))
            .await
            .map_err(|_| CatalogError::ActorGone)?
    }

    /// Inserts a product.
    ///
    /// # Errors
    /// [`CatalogError::Invalid`] for a bad field; [`CatalogError`] when the database fails.
    pub async fn create(&self, product: NewProduct) -> Result<Product, CatalogError> {
        product.validate()?;
        self.addr
            .send(CreateProduct(product))
            .await
            .map_err(|_| CatalogError::ActorGone)?
    }

    /// Applies a partial update.
    ///
    /// # Errors
    /// As [`create`](Self::create).
    pub async fn update(
        &self,
        id: i64,
        patch: ProductPatch,
    ) -> Result<Option<Product>, CatalogError> {
        patch.validate()?;
        self.addr
            .send(UpdateProduct(id, patch))
            .await
            .map_err(|_| CatalogError::ActorGone)?
    }

    /// Deletes a product; answers whether it existed.
    ///
    /// # Errors
    /// [`CatalogError`] when the database fails.
    pub async fn delete(&self, id: i64) -> Result<bool, CatalogError> {
        self.addr
            .send(DeleteProduct(id))
            .await
            .map_err(|_| CatalogError::ActorGone)?
    }
}

fn row_to_product(row: &rusqlite::Row<'_>) -> rusqlite::Result<Product> {
    Ok(Product {
        id: row.get(0)?,
        name: row.get(1)?,
        price: row.get(2)?,
        description: row.get(3)?,
    })
}

fn get(conn: &Connection, id: i64) -> rusqlite::Result<Option<Product>> {
    conn.prepare_cached("SELECT id, name, price, description FROM products WHERE id = ?1")?
        .query_row([id], row_to_product)
        .optional()
}

impl Handler<ListProducts> for CatalogActor {
    type Result = Result<Vec<Product>, CatalogError>;

    fn handle(&mut self, _msg: ListProducts, _ctx: &mut Self::Context) -> Self::Result {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT id, name, price, description FROM products ORDER BY id")?;
        let rows = stmt.query_map([], row_to_product)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}

impl Handler<GetProduct> for CatalogActor {
    type Result = Result<Option<Product>, CatalogError>;

    fn handle(&mut self, msg: GetProduct, _ctx: &mut Self::Context) -> Self::Result {
        Ok(get(&self.conn, msg.0)?)
    }
}

impl Handler<CreateProduct> for CatalogActor {
    type Result = Result<Product, CatalogError>;

    fn handle(&mut self, msg: CreateProduct, _ctx: &mut Self::Context) -> Self::Result {
        let p = msg.0;
        let name = p.name.trim().to_owned();
        self.conn.execute(
            "INSERT INTO products (name, price, description) VALUES (?1, ?2, ?3)",
            params![name, p.price, p.description],
        )?;
        Ok(Product {
            id: self.conn.last_insert_rowid(),
            name,
            price: p.price,
            description: p.description,
        })
    }
}

impl Handler<UpdateProduct> for CatalogActor {
    type Result = Result<Option<Product>, CatalogError>;

    fn handle(&mut self, msg: UpdateProduct, _ctx: &mut Self::Context) -> Self::Result {
        let UpdateProduct(id, patch) = msg;
        let ProductPatch {
            name,
            price,
            description,
        } = patch;
        let tx = self.conn.unchecked_transaction()?;
        let Some(mut product) = get(&tx, id)? else {
            return Ok(None);
        };
        if let Some(name) = name {
            product.name = name.trim().to_owned();
        }
        if let Some(price) = price {
            product.price = price;
        }
        if description.is_some() {
            product.description = description;
        }
        tx.execute(
            "UPDATE products SET name = ?1, price = ?2, description = ?3 WHERE id = ?4",
            params![product.name, product.price, product.description, id],
        )?;
        tx.commit()?;
        Ok(Some(product))
    }
}

impl Handler<DeleteProduct> for CatalogActor {
    type Result = Result<bool, CatalogError>;

    fn handle(&mut self, msg: DeleteProduct, _ctx: &mut Self::Context) -> Self::Result {
        Ok(self
            .conn
            .execute("DELETE FROM products WHERE id = ?1", [msg.0])?
            > 0)
    }
}
