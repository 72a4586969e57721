//! A lint silenced on the function stays silent in its companions, which
//! copy its body (`_refresh`) and its arguments.
#![deny(warnings)]

use tiercache::cache_aside;

#[deprecated(note = "use new_lookup")]
fn old_lookup(id: u64) -> u64 {
    id
}

#[allow(deprecated)]
#[cache_aside(prefix = "old", ttl = "5m")]
async fn lookup(id: u64) -> u64 {
    old_lookup(id)
}

#[expect(clippy::needless_return)]
#[cache_aside(prefix = "early", ttl = "5m")]
async fn early(id: u64) -> u64 {
    return id;
}

#[forbid(unsafe_code, dead_code)]
#[cfg_attr(all(), expect(clippy::needless_return))]
#[cache_aside(prefix = "forbidden", ttl = "5m")]
async fn forbidden(id: u64) -> u64 {
    return id;
}

fn main() {
    drop(forbidden(1));
    drop(lookup(1));
    drop(lookup_refresh(1));
    drop(early(1));
}
