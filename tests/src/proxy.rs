//! A loopback TCP proxy that a test can cut and restore, so a dependency (PostgreSQL) is
//! "away" for an exact window: cutting closes every open connection and refuses new ones
//! until [`TcpProxy::restore`]. It can also freeze: connections stay open but no byte moves
//! either way until [`TcpProxy::thaw`] (a server that stops answering, nothing lost).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A running proxy from `127.0.0.1:<port>` to a fixed upstream address.
pub struct TcpProxy {
    /// The port it listens on.
    pub port: u16,
    up: Arc<AtomicBool>,
    /// Bumped on every cut; open connections end when it changes.
    generation: watch::Sender<u64>,
    /// While true, bytes read are held until it turns false.
    frozen: watch::Sender<bool>,
    accepted: Arc<AtomicUsize>,
    refused: Arc<AtomicUsize>,
}

impl TcpProxy {
    /// Starts forwarding to `upstream` (`host:port`).
    pub async fn start(upstream: &str) -> TcpProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let up = Arc::new(AtomicBool::new(true));
        let (generation, _) = watch::channel(0u64);
        let (frozen, _) = watch::channel(false);
        let accepted = Arc::new(AtomicUsize::new(0));
        let refused = Arc::new(AtomicUsize::new(0));
        let upstream = upstream.to_owned();
        let (up2, gen2, acc2, ref2, frozen2) = (
            up.clone(),
            generation.clone(),
            accepted.clone(),
            refused.clone(),
            frozen.clone(),
        );
        tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                if !up2.load(Ordering::SeqCst) {
                    ref2.fetch_add(1, Ordering::SeqCst);
                    drop(client);
                    continue;
                }
                acc2.fetch_add(1, Ordering::SeqCst);
                let mut cut = gen2.subscribe();
                let upstream = upstream.clone();
                let frozen = frozen2.clone();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(&upstream).await else {
                        return;
                    };
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    tokio::select! {
                        () = forward(client_read, server_write, frozen.subscribe()) => {}
                        () = forward(server_read, client_write, frozen.subscribe()) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        TcpProxy {
            port,
            up,
            generation,
            frozen,
            accepted,
            refused,
        }
    }

    /// Stops moving bytes on every connection, open or new, without closing any.
    pub fn freeze(&self) {
        self.frozen.send_replace(true);
    }

    /// Moves the held bytes on and forwards again.
    pub fn thaw(&self) {
        self.frozen.send_replace(false);
    }

    /// Closes every open connection and refuses new ones.
    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.generation.send_modify(|g| *g += 1);
    }

    /// Accepts connections again.
    pub fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }

    /// (accepted, refused) connections so far.
    pub fn counts(&self) -> (usize, usize) {
        (
            self.accepted.load(Ordering::SeqCst),
            self.refused.load(Ordering::SeqCst),
        )
    }
}

/// Copies `from` to `to` until either closes; a chunk read while `frozen` is held until it
/// thaws.
async fn forward(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut frozen: watch::Receiver<bool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if frozen.wait_for(|f| !*f).await.is_err() || to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// `host:port` of a database URL (`postgres://user@host:port/db?…`).
pub fn host_port(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    rest.split(['/', '?']).next().unwrap_or(rest).to_owned()
}

impl TcpProxy {
    /// A proxy in front of the server of `url`, and `url` rewritten to go through it.
    pub async fn in_front_of(url: &str) -> (TcpProxy, String) {
        let upstream = host_port(url);
        let proxy = TcpProxy::start(&upstream).await;
        let proxied = url.replacen(&upstream, &format!("127.0.0.1:{}", proxy.port), 1);
        (proxy, proxied)
    }
}
