//! Generated code names everything by its full path: it compiles in a
//! `#![no_implicit_prelude]` module, every option and shape included.

#![deny(warnings)]

mod bare {
    #![no_implicit_prelude]

    use ::std::option::Option::{self, Some};
    use ::std::result::Result::{self, Ok};
    use ::std::string::String;
    use ::tiercache::{cache_aside, invalidates, write_through};

    #[derive(::serde::Serialize, ::serde::Deserialize, ::std::clone::Clone)]
    pub(crate) struct User {
        id: u64,
    }

    pub(crate) struct E;

    impl ::std::convert::From<::tiercache::LoadTimeout> for E {
        fn from(_: ::tiercache::LoadTimeout) -> Self {
            E
        }
    }

    type Alias = User;

    #[cache_aside(prefix = "a", ttl = "5m", tags = ["t:{id}"])]
    pub(crate) async fn a(id: u64) -> Result<User, E> {
        Ok(User { id })
    }

    #[cache_aside(
        prefix = "b",
        ttl = "5m",
        stale = "1m",
        fail_safe = "1h",
        timeout = "1s",
        hard_timeout = "5s",
        refresh_ahead
    )]
    pub(crate) async fn b(id: &str, n: String) -> Result<Option<User>, E> {
        let _ = (id, n);
        Ok(Some(User { id: 1 }))
    }

    #[cache_aside(prefix = "c", ttl = "5m")]
    pub(crate) async fn c<T>(id: u64) -> Alias {
        User { id }
    }

    #[write_through(prefix = "a", ttl = "5m", key = "{id}")]
    pub(crate) async fn w(id: u64) -> Result<Option<User>, E> {
        Ok(Some(User { id }))
    }

    #[invalidates(keys = ["a:{id}"], tags = ["t:{id}"])]
    pub(crate) async fn i(id: u64) -> Result<(), E> {
        let _ = id;
        Ok(())
    }

    #[invalidates(keys = ["a:{id}"], when = "always")]
    pub(crate) async fn j(id: u64) -> Result<(), E> {
        let _ = id;
        Ok(())
    }
}

fn main() {
    drop((
        bare::a(1),
        bare::b("x", String::new()),
        bare::c::<u8>(1),
        bare::w(1),
        bare::i(1),
        bare::j(1),
    ));
}
