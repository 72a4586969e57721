//! L2: the shared layer, envelopes in Redis.
//!
//! One multiplexed connection through redis-rs's `ConnectionManager`, created
//! lazily so that a Redis that is down at start-up neither fails
//! [`CacheBuilder::build`](crate::CacheBuilder::build) nor blocks it; the
//! manager reconnects in the background after a connection error. Every
//! operation is bounded by the configured timeout, and its failure is
//! reported to the caller as "no L2 this time": a miss on read, a skipped
//! write. A cached call never fails because of Redis.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

/// Why an L2 operation did not happen.
#[derive(Debug, thiserror::Error)]
pub(crate) enum L2Error {
    #[error("Redis did not answer within {0:?}")]
    Timeout(Duration),
    #[error(transparent)]
    Redis(#[from] redis::RedisError),
}

pub(crate) struct L2 {
    conn: ConnectionManager,
    timeout: Duration,
}

impl L2 {
    /// Prepares the connection without waiting for it.
    pub(crate) fn new(client: redis::Client, timeout: Duration) -> Result<Self, redis::RedisError> {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            // Retries happen in the background after a failed request; keep
            // each attempt short so a returning Redis is noticed soon.
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_secs(1));
        let conn = client.get_connection_manager_lazy(config)?;
        Ok(Self { conn, timeout })
    }

    async fn run<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, L2Error> {
        let mut conn = self.conn.clone();
        match tokio::time::timeout(self.timeout, cmd.query_async(&mut conn)).await {
            Ok(result) => Ok(result?),
            Err(_) => Err(L2Error::Timeout(self.timeout)),
        }
    }

    /// Opens the connection now, so the first call finds it ready.
    pub(crate) async fn warm_up(&self) -> Result<(), L2Error> {
        self.run::<()>(&redis::cmd("PING")).await
    }

    /// `GET key`: one round trip.
    pub(crate) async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, L2Error> {
        self.run(redis::cmd("GET").arg(key)).await
    }

    /// `SET key value PX ttl`: one round trip.
    pub(crate) async fn set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), L2Error> {
        let millis = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        self.run(redis::cmd("SET").arg(key).arg(value).arg("PX").arg(millis))
            .await
    }
}
