//! `#[invalidates]` on `&self` and `&mut self` methods, with `{self.field}`
//! in a tag and a key, and the cache in a field.

#![deny(warnings)]

use tiercache::{Cache, invalidates};

struct Orgs {
    cache: Cache,
    tenant: String,
    renames: u64,
}

impl Orgs {
    #[invalidates(tags = ["tenant:{self.tenant}", "org:{self.tenant}/{org}"], cache = self.cache)]
    async fn remove(&self, org: u64) -> Result<(), String> {
        if org == 0 {
            return Err(format!("{}: no org 0", self.tenant));
        }
        Ok(())
    }

    #[invalidates(keys = ["org:{self.tenant}:{org}"], when = "before", cache = self.cache)]
    async fn rename(&mut self, org: u64, name: String) -> String {
        self.renames += 1;
        format!("{org}:{name}")
    }
}

async fn call_all() {
    let mut orgs = Orgs {
        cache: Cache::in_memory(),
        tenant: "acme".to_owned(),
        renames: 0,
    };
    let _ = orgs.remove(1).await;
    let _ = orgs.rename(1, "Initech".to_owned()).await;
}

fn main() {
    drop(call_all());
}
