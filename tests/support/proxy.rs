//! A TCP proxy in front of a real server, that a test can freeze: a silent
//! network partition on demand.
//!
//! [`Proxy::freeze`] stops forwarding bytes, both ways, on every connection
//! and keeps every socket open: no FIN, no RST, nothing arrives and nothing
//! says so (a half-open connection, as a partition leaves it). Connections
//! made while frozen are accepted but go nowhere. [`Proxy::thaw`] resumes
//! forwarding; whatever was sent meanwhile is delivered then, as TCP does
//! once a partition heals. A side that closes its socket is forwarded as a
//! close (once thawed), so a client that gives up on a connection ends it
//! on the server too.
//!
//! [`Proxy::cut`] makes the connections open now go silent for good (a
//! failover behind a virtual IP, a NAT entry lost), while new connections
//! work: only a client that reconnects gets through again.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// A forwarder on a free loopback port to `127.0.0.1:{upstream}`.
pub struct Proxy {
    port: u16,
    frozen: watch::Sender<bool>,
    /// Bumped by [`Proxy::cut`]: connections of an older generation are
    /// silent.
    generation: watch::Sender<u64>,
    task: tokio::task::AbortHandle,
}

impl Proxy {
    /// Starts forwarding to the server on loopback port `upstream`.
    pub async fn start(upstream: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a free loopback port");
        let port = listener.local_addr().expect("a bound listener").port();
        let (frozen, _) = watch::channel(false);
        let (generation, _) = watch::channel(0);
        let task = tokio::spawn(accept(
            listener,
            upstream,
            frozen.clone(),
            generation.clone(),
        ))
        .abort_handle();
        Self {
            port,
            frozen,
            generation,
            task,
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The Redis URL through the proxy.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Stops forwarding, both ways, keeping the connections open.
    pub fn freeze(&self) {
        self.frozen.send_replace(true);
    }

    /// Forwards again, starting with what was held back.
    pub fn thaw(&self) {
        self.frozen.send_replace(false);
    }

    /// Makes every connection open now silent for good, both ways, keeping
    /// it open; connections made from now on work.
    pub fn cut(&self) {
        self.generation.send_modify(|generation| *generation += 1);
    }
}

impl Drop for Proxy {
    /// Closes the listener and every connection.
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Accepts clients; dropped (aborted), it drops every connection with it.
async fn accept(
    listener: TcpListener,
    upstream: u16,
    frozen: watch::Sender<bool>,
    generation: watch::Sender<u64>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                if let Ok((client, _)) = accepted {
                    let cut = generation.subscribe();
                    connections.spawn(forward(client, upstream, frozen.subscribe(), cut));
                }
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// Connects `client` to the server (once thawed) and pumps both ways.
async fn forward(
    client: TcpStream,
    upstream: u16,
    mut frozen: watch::Receiver<bool>,
    mut cut: watch::Receiver<u64>,
) {
    if frozen.wait_for(|frozen| !frozen).await.is_err() {
        return;
    }
    let mine = *cut.borrow_and_update();
    let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
        return; // dropping `client` closes it, as a refused connection would
    };
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let mut pumps = std::pin::pin!(async {
        tokio::join!(
            pump(client_read, server_write, frozen.clone()),
            pump(server_read, client_write, frozen),
        )
    });
    tokio::select! {
        _ = &mut pumps => {}
        () = async { drop(cut.wait_for(|generation| *generation != mine).await) } => {
            // Cut: nothing more moves, and nothing says so. The pumps (and
            // the sockets they hold) stay, unpolled, until the proxy goes.
            std::future::pending::<()>().await;
        }
    }
}

/// Copies `from` to `to` while thawed; on end of stream, closes `to`.
async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, mut frozen: watch::Receiver<bool>) {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        if frozen.wait_for(|frozen| !frozen).await.is_err() {
            return;
        }
        // Frozen, it reads nothing more: the bytes wait in the kernel.
        let read = tokio::select! {
            read = from.read(&mut buffer) => read,
            _ = frozen.wait_for(|frozen| *frozen) => continue,
        };
        let n = match read {
            Ok(0) | Err(_) => {
                let _ = to.shutdown().await;
                return;
            }
            Ok(n) => n,
        };
        // Bytes read just as it froze wait for the thaw too.
        if frozen.wait_for(|frozen| !frozen).await.is_err() {
            return;
        }
        if to.write_all(&buffer[..n]).await.is_err() {
            return;
        }
    }
}
