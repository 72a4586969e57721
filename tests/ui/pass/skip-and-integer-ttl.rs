//! `skip` of a handle argument, with and without a key template, and a TTL
//! as an integer of seconds.

#![deny(warnings)]

use tiercache::cache_aside;

struct Db {
    name: String,
}

impl Db {
    async fn fetch(&self, id: u64) -> Result<String, std::io::Error> {
        Ok(format!("{}:{id}", self.name))
    }
}

/// Documented, with attributes kept.
#[cache_aside(prefix = "row", ttl = 300, skip(db))]
#[allow(clippy::needless_lifetimes)]
pub async fn row<'a>(db: &'a Db, id: u64) -> Result<String, std::io::Error> {
    db.fetch(id).await
}

#[cache_aside(prefix = "row-by-key", ttl = 60, key = "v2/{id}", skip(db, trace))]
pub(crate) async fn row_by_key(db: &Db, trace: bool, id: u64) -> Result<String, std::io::Error> {
    if trace {
        println!("loading {id}");
    }
    db.fetch(id).await
}

async fn call_all() {
    let db = Db {
        name: "main".to_owned(),
    };
    let _ = row(&db, 1).await;
    let _ = row_by_key(&db, false, 1).await;
}

fn main() {
    drop(call_all());
}
