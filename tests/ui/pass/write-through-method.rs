//! `#[write_through]` on methods with the cache in a field, a payload
//! argument that is not in the key (and need not be a `KeyPart`), and
//! `{self.field}` in the key.

#![deny(warnings)]

use serde::{Deserialize, Serialize};
use tiercache::{Cache, cache_aside, write_through};

#[derive(Clone, Serialize, Deserialize)]
struct Profile {
    name: String,
    bio: String,
}

/// Not a `KeyPart`: only ever the data written.
struct ProfileUpdate {
    name: String,
    bio: String,
}

struct Profiles {
    cache: Cache,
    tenant: String,
}

impl Profiles {
    #[cache_aside(prefix = "profile", ttl = "5m", key = "{self.tenant}:{id}", cache = self.cache)]
    async fn profile(&self, id: u64) -> Option<Profile> {
        Some(Profile {
            name: format!("{id}"),
            bio: String::new(),
        })
    }

    #[write_through(prefix = "profile", ttl = "5m", key = "{self.tenant}:{id}", cache = self.cache)]
    async fn update(&self, id: u64, update: ProfileUpdate) -> Result<Profile, String> {
        if id == 0 {
            return Err("no such profile".to_owned());
        }
        Ok(Profile {
            name: update.name,
            bio: update.bio,
        })
    }

    #[write_through(prefix = "profile", ttl = "5m", key = "{self.tenant}:{id}", tags = ["tenant:{self.tenant}"], cache = self.cache)]
    async fn reset(&mut self, id: u64) -> Profile {
        self.tenant.make_ascii_lowercase();
        Profile {
            name: id.to_string(),
            bio: String::new(),
        }
    }
}

async fn call_all() {
    let mut profiles = Profiles {
        cache: Cache::in_memory(),
        tenant: "acme".to_owned(),
    };
    let _ = profiles.profile(1).await;
    let _ = profiles
        .update(
            1,
            ProfileUpdate {
                name: "Ada".to_owned(),
                bio: "math".to_owned(),
            },
        )
        .await;
    let _ = profiles.reset(1).await;
}

fn main() {
    drop(call_all());
}
