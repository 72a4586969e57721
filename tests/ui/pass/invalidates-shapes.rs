//! `#[invalidates]` on any return type, with each `when`; arguments that no
//! template names may be patterns.

#![deny(warnings)]

use tiercache::invalidates;

#[derive(Debug)]
struct DbError;

#[invalidates(keys = ["user:{id}"])]
async fn delete(id: u64) {
    println!("deleted {id}");
}

#[invalidates(tags = ["org:{org}"], when = "after")]
async fn leave(id: u64, org: u64) -> Result<(), DbError> {
    if id == org {
        return Err(DbError);
    }
    Ok(())
}

#[invalidates(keys = ["user:{id}"], tags = ["users"], when = "before")]
async fn rename(id: u64, name: String) -> Result<String, DbError> {
    Ok(format!("{id}:{name}"))
}

#[invalidates(prefixes = ["user", "user-list"], when = "always")]
async fn import(rows: Vec<String>) -> Result<usize, DbError> {
    Ok(rows.len())
}

#[invalidates(tags = ["org:{org}"], keys = ["org-size:{org}"], when = "always")]
async fn count(org: u64) -> usize {
    usize::try_from(org).unwrap_or_default()
}

/// Arguments no template names may be patterns.
#[invalidates(keys = ["user:{id}"])]
async fn rename_parts(id: u64, (first, last): (String, String)) -> String {
    format!("{id}: {first} {last}")
}

async fn call_all() {
    delete(1).await;
    let _: Result<(), DbError> = leave(1, 2).await;
    let _: Result<String, DbError> = rename(1, "Ada".to_owned()).await;
    let _: Result<usize, DbError> = import(vec![]).await;
    let _: usize = count(1).await;
    let _: String = rename_parts(1, ("Ada".to_owned(), "Lovelace".to_owned())).await;
}

fn main() {
    drop(call_all());
}
