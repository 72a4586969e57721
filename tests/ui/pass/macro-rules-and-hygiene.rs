//! Options forwarded by `macro_rules!` (`$p:expr`, `$t:literal`, `$ret:ty`,
//! a function declared by the macro), and generated names that never meet
//! the user's: a `const SPEC` prefix, `Self::PREFIX` in a (generic) impl.

#![deny(warnings)]

use tiercache::{Cache, cache_aside, invalidates, write_through};

const SPEC: &str = "spec";

#[cache_aside(prefix = SPEC, ttl = "5m")]
async fn spec(id: u64) -> u64 {
    id
}

macro_rules! cached {
    ($name:ident, $save:ident, $drop:ident, $p:expr, $t:literal, $k:literal, $tag:expr, $ret:ty) => {
        #[cache_aside(prefix = $p, ttl = $t, key = $k, tags = [$tag], refresh_ahead = 2.0)]
        async fn $name(id: u64) -> $ret {
            Ok(id)
        }

        #[write_through(prefix = $p, ttl = $t, key = $k)]
        async fn $save(id: u64) -> $ret {
            Ok(id)
        }

        #[invalidates(keys = ["via:{id}"], tags = [$tag])]
        async fn $drop(id: u64) -> $ret {
            Ok(id)
        }
    };
}

cached!(via_macro, save_via_macro, drop_via_macro, "via", "5m", "{id}", "n:{id}", Result<u64, String>);

macro_rules! method {
    ($ttl:expr) => {
        #[cache_aside(prefix = Self::PREFIX, ttl = $ttl, key = "{self.tenant}:{id}", cache = self.cache)]
        async fn get(&self, id: u64) -> u64 {
            id
        }
    };
}

struct Repo {
    cache: Cache,
    tenant: u32,
}

impl Repo {
    const PREFIX: &'static str = "repo";

    method!("5m");
}

struct Generic<T> {
    cache: Cache,
    tenant: T,
}

impl<T: tiercache::KeyPart + Send + Sync> Generic<T> {
    const PREFIX: &'static str = "generic";

    method!(60);
}

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        tiercache::set_global(Cache::in_memory()).unwrap_or_else(|_| unreachable!());
        assert_eq!(spec(1).await, 1);
        assert_eq!(via_macro(2).await, Ok(2));
        assert_eq!(save_via_macro(2).await, Ok(2));
        assert_eq!(drop_via_macro(2).await, Ok(2));
        let repo = Repo {
            cache: Cache::in_memory(),
            tenant: 1,
        };
        assert_eq!(repo.get(3).await, 3);
        let generic = Generic {
            cache: Cache::in_memory(),
            tenant: "t",
        };
        assert_eq!(generic.get(4).await, 4);
    });
}
