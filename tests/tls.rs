#![cfg(feature = "tls")]
//! `rediss://` (issue 13): a real redis-server with `--tls-port` and
//! certificates this test generates (a CA, a server and a client
//! certificate), the cache's commands and its pub/sub over TLS, a custom
//! CA, mutual TLS, and a certificate the cache does not trust.

mod support;

use std::path::PathBuf;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
};
use tiercache::Cache;

/// PEM files for one server, in a directory of their own.
struct Certificates {
    dir: PathBuf,
    ca: String,
    client_cert: String,
    client_key: String,
}

impl Certificates {
    fn generate(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("tiercache-tls-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // Each its own subject: OpenSSL takes a leaf whose subject is its
        // issuer's for a self-signed one.
        let named = |names: Vec<String>, common_name: &str| {
            let mut params = CertificateParams::new(names).unwrap();
            params.distinguished_name = DistinguishedName::new();
            params
                .distinguished_name
                .push(DnType::CommonName, common_name);
            params
        };
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = named(Vec::new(), "tiercache test CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let signed = |names: Vec<String>, common_name: &str| {
            let key = KeyPair::generate().unwrap();
            let cert = named(names, common_name).signed_by(&key, &issuer).unwrap();
            (cert.pem(), key.serialize_pem())
        };
        let (server_cert, server_key) = signed(
            vec!["127.0.0.1".into(), "localhost".into()],
            "tiercache test server",
        );
        let (client_cert, client_key) = signed(vec!["client".into()], "tiercache test client");
        for (file, pem) in [
            ("ca.pem", ca.pem()),
            ("server.pem", server_cert),
            ("server.key", server_key),
        ] {
            std::fs::write(dir.join(file), pem).unwrap();
        }
        Self {
            dir,
            ca: ca.pem(),
            client_cert,
            client_key,
        }
    }

    fn path(&self, file: &str) -> String {
        self.dir.join(file).display().to_string()
    }

    /// A server that speaks TLS on a port of its own; `clients`: whether it
    /// asks clients for a certificate (`yes`) or not (`no`).
    fn server(&self, clients: &str) -> (support::RedisServer, u16) {
        let tls_port = std::sync::Mutex::new(0);
        let server = support::RedisServer::start_with(|port| {
            *tls_port.lock().unwrap() = port;
            vec![
                "--tls-port".into(),
                port.to_string(),
                "--tls-cert-file".into(),
                self.path("server.pem"),
                "--tls-key-file".into(),
                self.path("server.key"),
                "--tls-ca-cert-file".into(),
                self.path("ca.pem"),
                "--tls-auth-clients".into(),
                clients.into(),
            ]
        });
        let port = *tls_port.lock().unwrap();
        (server, port)
    }
}

impl Drop for Certificates {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test]
async fn a_cache_over_tls_stores_reads_and_hears_invalidations() {
    let certificates = Certificates::generate("plain");
    let (_server, tls_port) = certificates.server("no");
    let url = format!("rediss://127.0.0.1:{tls_port}");
    let on_tls = || {
        Cache::builder()
            .namespace("tls")
            .redis(url.clone())
            .tls_root_certificate(certificates.ca.clone())
            .build()
    };
    let (a, b) = (on_tls().await.unwrap(), on_tls().await.unwrap());
    let ttl = Duration::from_secs(60);
    a.entry("t", &1u8)
        .ttl(ttl)
        .set(&"over tls".to_owned())
        .await
        .unwrap();
    assert_eq!(
        b.entry("t", &1u8).get::<String>().await.as_deref(),
        Some("over tls"),
        "read back from Redis"
    );
    a.entry("t", &1u8).invalidate().await.unwrap();
    let heard = support::eventually(Duration::from_secs(5), async || {
        b.stats().remote_invalidations > 0
    })
    .await;
    assert!(heard, "b's subscription runs over TLS too");
    assert_eq!(b.entry("t", &1u8).get::<String>().await, None);
    assert_eq!(a.stats().redis_errors + b.stats().redis_errors, 0);
}

#[tokio::test]
async fn mutual_tls_presents_the_client_certificate() {
    let certificates = Certificates::generate("mutual");
    let (_server, tls_port) = certificates.server("yes");
    let url = format!("rediss://127.0.0.1:{tls_port}");
    let cache = Cache::builder()
        .redis(url.clone())
        .tls_root_certificate(certificates.ca.clone())
        .tls_client_certificate(
            certificates.client_cert.clone(),
            certificates.client_key.clone(),
        )
        .build()
        .await
        .unwrap();
    cache
        .ping()
        .await
        .expect("the server takes the client certificate");
    let shown = format!(
        "{:?}",
        Cache::builder().redis(url.clone()).tls_client_certificate(
            certificates.client_cert.clone(),
            certificates.client_key.clone()
        )
    );
    assert!(!shown.contains("PRIVATE KEY"), "{shown}");
    // Without one, the server refuses the handshake: an outage, not a
    // panic, and calls still answer.
    let refused = Cache::builder()
        .redis(url)
        .tls_root_certificate(certificates.ca.clone())
        .redis_timeout(Duration::from_millis(300))
        .build()
        .await
        .unwrap();
    assert!(refused.ping().await.is_err());
    let answered = refused
        .entry("t", &2u8)
        .ttl(Duration::from_secs(60))
        .get_with(|| async { 5u8 })
        .await;
    assert_eq!(answered, 5);
}

#[tokio::test]
async fn a_server_the_cache_does_not_trust_is_never_used() {
    let certificates = Certificates::generate("untrusted");
    let (_server, tls_port) = certificates.server("no");
    // The system's roots do not hold this test's CA.
    let cache = Cache::builder()
        .redis(format!("rediss://127.0.0.1:{tls_port}"))
        .redis_timeout(Duration::from_millis(300))
        .build()
        .await
        .unwrap();
    assert!(cache.ping().await.is_err(), "the handshake fails");
    let answered = cache
        .entry("t", &3u8)
        .ttl(Duration::from_secs(60))
        .get_with(|| async { 6u8 })
        .await;
    assert_eq!(answered, 6);
}

#[tokio::test]
async fn certificates_that_cannot_apply_are_refused_at_build() {
    let empty = Cache::builder()
        .redis("rediss://127.0.0.1:1")
        .tls_root_certificate(Vec::new())
        .build()
        .await;
    assert!(
        matches!(
            empty,
            Err(tiercache::Error::InvalidSetting {
                setting: "tls_root_certificate",
                ..
            })
        ),
        "{empty:?}"
    );
    let certificates = Certificates::generate("client-given");
    let with_client = Cache::builder()
        .redis_client(redis::Client::open("rediss://127.0.0.1:1").unwrap())
        .tls_root_certificate(certificates.ca.clone())
        .build()
        .await;
    assert!(
        matches!(with_client, Err(tiercache::Error::InvalidSetting { .. })),
        "{with_client:?}"
    );
}
