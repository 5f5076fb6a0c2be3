//! The predict path's HTTP client: hyper's pooled client and rustls, nothing on top.
//!
//! Every prediction is one `POST` to an endpoint URL parsed once per cached route. reqwest,
//! which the providers use for everything else, wraps each call in layers the predict path
//! does not need — a redirect layer that turns every answer's `Uri` back into a `Url` (IDNA
//! included), boxed futures for its timeout, pool and connector clones — and profiles of the
//! gateway found them at 5–8 % of its CPU per proxied request (docs/benchmarks.md, "Predict
//! saturation"; what this client changed: "A plain client on the forward"). This client
//! does what the predict path needs and no more:
//!
//! - the same pool bounds as the providers' reqwest clients
//!   ([`IDLE_CONNECTIONS_PER_HOST`], [`IDLE_CONNECTION_TIMEOUT`]);
//! - TLS with the platform's verifier and the aws-lc-rs provider, as reqwest configures it;
//! - the egress guard at connect time through [`Resolver`] (the `http` provider's allow-list
//!   on resolved addresses); no redirect is followed (an answer is an answer);
//! - at most a set number of exchanges in flight per endpoint host
//!   (`MAX_UPSTREAM_CONNECTIONS_PER_HOST`), each on a connection of its own; a request past
//!   it waits for one to end, within its deadline ([`HostSlots`]);
//! - one deadline over the whole exchange, the wait for a slot and connect to the last byte
//!   of the answer;
//! - an answer larger than the bound is an error and is not read further.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::http::uri::Authority;
use hyper::{Method, Request, StatusCode, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::sync::Semaphore;

use super::ProviderError;
use super::egress::Resolver;
use super::huggingface::inference::{IDLE_CONNECTION_TIMEOUT, IDLE_CONNECTIONS_PER_HOST};

/// An endpoint's answer: status, headers and the whole body.
#[derive(Debug)]
pub struct Answer {
    /// The status.
    pub status: StatusCode,
    /// The headers (an error's message may be in `X-Error-Message`).
    pub headers: HeaderMap,
    /// The body, at most the bound given to [`Forwarder::post`].
    pub body: Bytes,
}

/// Idle time before TCP keepalive probes, and between them (reqwest's default).
const TCP_KEEPALIVE: Duration = Duration::from_secs(15);

/// How long sent data may stay unacknowledged before the connection is dropped (reqwest's
/// default on Linux).
const TCP_USER_TIMEOUT: Duration = Duration::from_secs(30);

/// `POST`s JSON to endpoint URLs over pooled keep-alive connections.
#[derive(Clone)]
pub struct Forwarder {
    client: Client<Bounded, Full<Bytes>>,
    slots: Arc<HostSlots>,
}

/// The exchanges in flight per endpoint host. hyper's pool bounds the connections it keeps
/// idle, not the ones in use: without a bound, a burst of N concurrent predictions opens N
/// connections to the model's endpoint, each with its buffers here (~20 KiB: a thousand
/// cost the gateway ~20 MiB, docs/benchmarks.md "Where the memory is") and a request of its
/// own there. Bounding the exchanges in flight bounds the connections in use, since hyper
/// gives each exchange a connection of its own (HTTP/1). A request past the bound waits, in
/// arrival order (tokio's semaphore is fair), within the deadline of its exchange.
#[derive(Debug)]
struct HostSlots {
    per_host: usize,
    hosts: Mutex<HashMap<Authority, Arc<Semaphore>>>,
}

/// Hosts whose slots are kept before the unused ones are forgotten (a gateway serves a few
/// endpoints; the bound keeps endpoints that came and went from piling up).
const HOSTS_KEPT: usize = 1024;

impl HostSlots {
    fn new(per_host: usize) -> Self {
        Self {
            per_host,
            hosts: Mutex::new(HashMap::new()),
        }
    }

    /// The slots of `uri`'s host (`None`: a URI without a host, which the client refuses).
    /// The key is the authority as written (case aside): `h` and `h:443`, or two user
    /// names on one host, count apart — endpoint URLs name a host one way.
    fn of(&self, uri: &Uri) -> Option<Arc<Semaphore>> {
        let host = uri.authority()?;
        // Held for a lookup and, for a new host, an insert: nothing awaits under it.
        let mut hosts = self.hosts.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(slots) = hosts.get(host) {
            return Some(slots.clone());
        }
        if hosts.len() >= HOSTS_KEPT {
            // Slots nobody holds nor waits for: the map's own reference is the only one.
            hosts.retain(|_, slots| Arc::strong_count(slots) > 1);
        }
        let slots = Arc::new(Semaphore::new(self.per_host));
        hosts.insert(host.clone(), slots.clone());
        Some(slots)
    }
}

/// The connector with a limit over TCP connect and TLS handshake together. The call's
/// deadline covers a connection the call waits for; this one also ends a connection the
/// pool goes on opening in the background after the call was served by another.
#[derive(Clone)]
struct Bounded {
    inner: HttpsConnector<HttpConnector<Resolver>>,
    limit: Duration,
}

impl tower_service::Service<Uri> for Bounded {
    type Response =
        <HttpsConnector<HttpConnector<Resolver>> as tower_service::Service<Uri>>::Response;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    type Future = std::pin::Pin<
        Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send + 'static>,
    >;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let (connecting, limit) = (self.inner.call(uri), self.limit);
        Box::pin(async move {
            match tokio::time::timeout(limit, connecting).await {
                Ok(connected) => connected,
                Err(_) => Err(format!("no connection within {limit:?}").into()),
            }
        })
    }
}

impl std::fmt::Debug for Forwarder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forwarder").finish_non_exhaustive()
    }
}

impl Forwarder {
    /// A client resolving names with `resolver`, each new connection (TCP and TLS) bounded
    /// by `connect_timeout`, at most `per_host` exchanges in flight per endpoint host (at
    /// least one, at most tokio's semaphore bound); the error says why TLS could not be set
    /// up.
    pub fn new(
        resolver: Resolver,
        connect_timeout: Duration,
        per_host: usize,
    ) -> Result<Self, String> {
        let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let verifier = rustls_platform_verifier::Verifier::new(provider.clone())
            .map_err(|e| format!("cannot load the platform's certificate verifier: {e}"))?;
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("cannot configure TLS: {e}"))?
            .dangerous()
            .with_custom_certificate_verifier(std::sync::Arc::new(verifier))
            .with_no_client_auth();
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let mut http = HttpConnector::new_with_resolver(resolver);
        http.enforce_http(false);
        http.set_nodelay(true);
        // reqwest's socket defaults: a peer that vanishes is noticed, not waited for.
        http.set_keepalive(Some(TCP_KEEPALIVE));
        http.set_keepalive_interval(Some(TCP_KEEPALIVE));
        http.set_keepalive_retries(Some(3));
        http.set_tcp_user_timeout(Some(TCP_USER_TIMEOUT));
        let connector = Bounded {
            // http:// and https:// both (the builder's `https_or_http`, which refuses a
            // config that already names its ALPN protocols).
            inner: HttpsConnector::from((http, tls)),
            limit: connect_timeout,
        };
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(IDLE_CONNECTION_TIMEOUT)
            .pool_max_idle_per_host(IDLE_CONNECTIONS_PER_HOST)
            .build(connector);
        Ok(Self {
            client,
            slots: Arc::new(HostSlots::new(per_host.clamp(1, Semaphore::MAX_PERMITS))),
        })
    }

    /// `POST uri` with `headers` and the JSON `body`; the answer whatever its status, read
    /// whole within `deadline` and at most `max_body` bytes.
    pub async fn post(
        &self,
        uri: Uri,
        headers: &HeaderMap,
        body: Vec<u8>,
        deadline: Duration,
        max_body: usize,
    ) -> Result<Answer, ProviderError> {
        // One deadline over both phases: the wait for a slot, then the exchange.
        let until = tokio::time::Instant::now() + deadline;
        let slots = self.slots.of(&uri);
        let _slot = match &slots {
            // Never closed: acquiring fails only on a closed semaphore.
            Some(slots) => match tokio::time::timeout_at(until, slots.acquire()).await {
                Ok(slot) => slot.ok(),
                Err(_) => {
                    return Err(ProviderError::Timeout {
                        message: format!(
                            "no connection to the endpoint was free within {deadline:?}: {} \
                             exchanges already in flight (MAX_UPSTREAM_CONNECTIONS_PER_HOST; {})",
                            self.slots.per_host,
                            shown(&uri)
                        ),
                    });
                }
            },
            None => None,
        };
        let call = self.exchange(&uri, headers, body, max_body);
        match tokio::time::timeout_at(until, call).await {
            Ok(answer) => answer,
            Err(_) => Err(ProviderError::Timeout {
                message: format!("provider timed out ({})", shown(&uri)),
            }),
        }
    }

    async fn exchange(
        &self,
        uri: &Uri,
        headers: &HeaderMap,
        body: Vec<u8>,
        max_body: usize,
    ) -> Result<Answer, ProviderError> {
        let failed =
            |what: &str| ProviderError::transient(format!("provider {what} ({})", shown(uri)));
        let mut request = Request::new(Full::new(Bytes::from(body)));
        *request.method_mut() = Method::POST;
        *request.headers_mut() = headers.clone();
        request.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        *request.uri_mut() = uri.clone();
        let response = self.client.request(request).await.map_err(|e| {
            let what = if e.is_connect() {
                "could not connect"
            } else {
                "request failed"
            };
            tracing::debug!(error = %e, "prediction request failed");
            failed(what)
        })?;
        let (parts, mut incoming) = response.into_parts();
        let too_large = || {
            ProviderError::transient(format!(
                "the endpoint's answer exceeds {max_body} bytes (MAX_UPSTREAM_BODY_BYTES)"
            ))
        };
        let declared = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > max_body as u64) {
            return Err(too_large());
        }
        // One chunk (the usual answer) is passed on without a copy.
        let mut first: Option<Bytes> = None;
        let mut rest: Vec<u8> = Vec::new();
        let mut read = 0usize;
        while let Some(frame) = incoming.frame().await {
            let frame = frame.map_err(|e| {
                tracing::debug!(error = %e, "reading a prediction failed");
                failed("answered with an unreadable body")
            })?;
            let Ok(chunk) = frame.into_data() else {
                continue;
            };
            read += chunk.len();
            if read > max_body {
                return Err(too_large());
            }
            match first.take() {
                None if rest.is_empty() => first = Some(chunk),
                None => rest.extend_from_slice(&chunk),
                Some(held) => {
                    rest.extend_from_slice(&held);
                    rest.extend_from_slice(&chunk);
                }
            }
        }
        let body = first.unwrap_or_else(|| Bytes::from(rest));
        Ok(Answer {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }
}

/// The URI for logs and error details: without credentials, if it had any.
fn shown(uri: &Uri) -> String {
    crate::config::redact_url_password(&uri.to_string())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// A listener on a free loopback port, and its URI under `scheme` with `path`.
    async fn bound(scheme: &str, path: &str) -> (TcpListener, Uri) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let uri = format!("{scheme}://{}{path}", listener.local_addr().expect("addr"))
            .parse()
            .expect("uri");
        (listener, uri)
    }

    /// A server answering every request on a connection with `answer` (raw HTTP/1.1 text, or
    /// bytes written in pieces with a pause between them), counting the connections accepted.
    async fn server(pieces: Vec<(&'static [u8], Duration)>) -> (Uri, Arc<AtomicUsize>) {
        let (listener, uri) = bound("http", "/predict").await;
        let accepted = Arc::new(AtomicUsize::new(0));
        let counted = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                let pieces = pieces.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 65536];
                    let mut seen = Vec::new();
                    loop {
                        let Ok(n) = socket.read(&mut buf).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        seen.extend_from_slice(&buf[..n]);
                        // Requests here are small: the headers and the body arrive together.
                        if !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                            continue;
                        }
                        seen.clear();
                        for (bytes, pause) in &pieces {
                            tokio::time::sleep(*pause).await;
                            if socket.write_all(bytes).await.is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        });
        (uri, accepted)
    }

    /// An empty `POST` to `uri` with a fresh client.
    async fn post(uri: Uri, deadline: Duration, max_body: usize) -> Result<Answer, ProviderError> {
        Forwarder::new(Resolver::System, Duration::from_secs(5), 128)
            .expect("client")
            .post(uri, &HeaderMap::new(), Vec::new(), deadline, max_body)
            .await
    }

    const OK: &[u8] =
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n[]";

    #[tokio::test]
    async fn answers_are_read_whole_over_one_kept_connection() {
        let (uri, accepted) = server(vec![(OK, Duration::ZERO)]).await;
        let client = Forwarder::new(Resolver::System, Duration::from_secs(5), 128).expect("client");
        for _ in 0..3 {
            let answer = client
                .post(
                    uri.clone(),
                    &HeaderMap::new(),
                    b"{}".to_vec(),
                    Duration::from_secs(5),
                    1024,
                )
                .await
                .expect("answer");
            assert_eq!(
                (answer.status, &answer.body[..]),
                (StatusCode::OK, &b"[]"[..])
            );
        }
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            1,
            "the connection is reused"
        );
    }

    /// A server answering [`OK`] to every request after `pause`, and the most requests it
    /// held at once.
    async fn slow_server(pause: Duration) -> (Uri, Arc<AtomicUsize>) {
        let (listener, uri) = bound("http", "/predict").await;
        let (now, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let seen = most.clone();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let (now, most) = (now.clone(), most.clone());
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 65536];
                    // Requests here are small: one read holds the whole request.
                    while let Ok(1..) = socket.read(&mut buf).await {
                        let held = now.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(held, Ordering::SeqCst);
                        tokio::time::sleep(pause).await;
                        now.fetch_sub(1, Ordering::SeqCst);
                        if socket.write_all(OK).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (uri, seen)
    }

    #[tokio::test]
    async fn exchanges_past_the_per_host_bound_wait_for_a_slot() {
        let (uri, most) = slow_server(Duration::from_millis(200)).await;
        let client = Forwarder::new(Resolver::System, Duration::from_secs(5), 2).expect("client");
        let headers = HeaderMap::new();
        let calls = (0..6).map(|_| {
            client.post(
                uri.clone(),
                &headers,
                Vec::new(),
                Duration::from_secs(10),
                1024,
            )
        });
        for answer in futures_util::future::join_all(calls).await {
            assert_eq!(answer.expect("answered").status, StatusCode::OK);
        }
        let most = most.load(Ordering::SeqCst);
        println!("six calls, at most two in flight: the endpoint held {most} at once");
        assert_eq!(most, 2, "the bound, reached and never passed");
    }

    #[tokio::test]
    async fn a_wait_for_a_slot_ends_at_the_deadline_and_says_why() {
        let (uri, _) = slow_server(Duration::from_secs(3)).await;
        let client = Forwarder::new(Resolver::System, Duration::from_secs(5), 1).expect("client");
        let holder = {
            let (client, uri) = (client.clone(), uri.clone());
            tokio::spawn(async move {
                let headers = HeaderMap::new();
                client
                    .post(uri, &headers, Vec::new(), Duration::from_secs(10), 1024)
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        let started = std::time::Instant::now();
        let err = client
            .post(
                uri.clone(),
                &HeaderMap::new(),
                Vec::new(),
                Duration::from_millis(300),
                1024,
            )
            .await
            .expect_err("no slot within the deadline");
        assert_eq!(err.kind(), "timeout", "{err}");
        assert!(
            err.message().contains("MAX_UPSTREAM_CONNECTIONS_PER_HOST"),
            "{err}"
        );
        assert!(started.elapsed() < Duration::from_secs(2));
        // The slot's holder is served; a slot is free again after it.
        assert_eq!(
            holder.await.expect("task").expect("served").status,
            StatusCode::OK
        );
        let slots = client.slots.of(&uri).expect("a host");
        assert_eq!(slots.available_permits(), 1, "the slot came back");
    }

    #[tokio::test]
    async fn an_answer_over_the_bound_fails_with_or_without_a_length() {
        let declared: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 64\r\n\r\n";
        let chunked: &[u8] = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n\
            10\r\n0123456789abcdef\r\n10\r\n0123456789abcdef\r\n0\r\n\r\n";
        for raw in [declared, chunked] {
            let (uri, _) = server(vec![(raw, Duration::ZERO)]).await;
            let err = post(uri, Duration::from_secs(5), 20)
                .await
                .expect_err("over the bound");
            assert_eq!(err.kind(), "transient");
            assert!(err.message().contains("exceeds 20 bytes"), "{err}");
        }
        // At the bound exactly, the answer passes (three chunks joined).
        let three: &[u8] = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n\
            10\r\n0123456789abcdef\r\n10\r\n0123456789abcdef\r\n10\r\n0123456789abcdef\r\n0\r\n\r\n";
        let (uri, _) = server(vec![(three, Duration::ZERO)]).await;
        let answer = post(uri, Duration::from_secs(5), 48)
            .await
            .expect("at the bound");
        assert_eq!(&answer.body[..], &b"0123456789abcdef".repeat(3)[..]);
    }

    #[tokio::test]
    async fn the_deadline_covers_the_whole_exchange() {
        let head: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n[";
        let silent = server(vec![(OK, Duration::from_secs(30))]).await.0;
        let trickling = server(vec![
            (head, Duration::ZERO),
            (b"]", Duration::from_secs(30)),
        ])
        .await
        .0;
        for uri in [silent, trickling] {
            let started = std::time::Instant::now();
            let err = post(uri, Duration::from_millis(300), 1024)
                .await
                .expect_err("past the deadline");
            assert_eq!(err.kind(), "timeout", "{err}");
            assert!(started.elapsed() < Duration::from_secs(5));
        }
    }

    #[tokio::test]
    async fn nothing_listening_and_tls_to_a_plain_port_cannot_connect() {
        // Port 0 is never listening: refused at once, whatever else runs.
        let closed = "127.0.0.1:0";
        // A plain HTTP server, spoken to in TLS.
        let tls_to_plain = answers_and_closes("https", OK).await;
        for uri in [
            format!("http://{closed}/").parse().expect("uri"),
            tls_to_plain,
        ] {
            let err = post(uri, Duration::from_secs(5), 1024)
                .await
                .expect_err("no connection");
            assert_eq!(err.kind(), "transient", "{err}");
            assert!(err.message().contains("could not connect"), "{err}");
        }
    }

    /// A self-signed certificate for `localhost` and 127.0.0.1 (openssl, P-256, 100 years):
    /// trusted by nothing, so a client that checks certificates must refuse it.
    const SELF_SIGNED_CERT: &str = r"-----BEGIN CERTIFICATE-----
MIIBnDCCAUGgAwIBAgIUferC8KA80fn4yyNcUEVHlpMaLvowCgYIKoZIzj0EAwIw
FDESMBAGA1UEAwwJbG9jYWxob3N0MCAXDTI2MTIwNzIyMzgwMFoYDzIxMjYxMTEz
MjIzODAwWjAUMRIwEAYDVQQDDAlsb2NhbGhvc3QwWTATBgcqhkjOPQIBBggqhkjO
PQMBBwNCAAQGNHB8Up5WiBw/g1j/Htb3V3WRFe8oNNC6oAagMhHiII6D5kF3ILpu
z2y6MmxyjJHAiw4blXuKn5DBmat4yKFto28wbTAdBgNVHQ4EFgQUAy8Ms3tejr6x
ET0Vt9zz2EPMGS0wHwYDVR0jBBgwFoAUAy8Ms3tejr6xET0Vt9zz2EPMGS0wDwYD
VR0TAQH/BAUwAwEB/zAaBgNVHREEEzARgglsb2NhbGhvc3SHBH8AAAEwCgYIKoZI
zj0EAwIDSQAwRgIhAIXifpfEvz5UkirVPO8toHddgBq+NE69WWBO4PmlFiOZAiEA
8zLyRmyWIcofq5jtgCG24IopFA/PHkckpF0/brmqCJU=
-----END CERTIFICATE-----";
    const SELF_SIGNED_KEY: &str = r"-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgROYIPc9KFkP4Z3fD
Ghi07wszS53p0yRD9AZSXZuC+fChRANCAAQGNHB8Up5WiBw/g1j/Htb3V3WRFe8o
NNC6oAagMhHiII6D5kF3ILpuz2y6MmxyjJHAiw4blXuKn5DBmat4yKFt
-----END PRIVATE KEY-----";

    /// A TLS server with the self-signed certificate that answers [`OK`] to anything.
    async fn self_signed() -> Uri {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let cert = CertificateDer::from_pem_slice(SELF_SIGNED_CERT.as_bytes()).expect("cert");
        let key = PrivateKeyDer::from_pem_slice(SELF_SIGNED_KEY.as_bytes()).expect("key");
        let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(vec![cert], key)
            .expect("server config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let (listener, uri) = bound("https", "/").await;
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    if let Ok(tls) = acceptor.accept(socket).await {
                        reply(tls, OK).await;
                    }
                });
            }
        });
        uri
    }

    #[tokio::test]
    async fn a_certificate_nobody_trusts_is_refused() {
        let err = post(self_signed().await, Duration::from_secs(5), 1024)
            .await
            .expect_err("an untrusted certificate");
        assert_eq!(err.kind(), "transient", "{err}");
        assert!(err.message().contains("could not connect"), "{err}");
    }

    /// A server that accepts connections and never says a word.
    async fn silent(scheme: &str) -> Uri {
        let (listener, uri) = bound(scheme, "/").await;
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        uri
    }

    #[tokio::test]
    async fn a_handshake_that_never_ends_is_bounded_by_the_connect_limit() {
        let client =
            Forwarder::new(Resolver::System, Duration::from_millis(200), 128).expect("client");
        let started = std::time::Instant::now();
        let err = client
            .post(
                silent("https").await,
                &HeaderMap::new(),
                Vec::new(),
                Duration::from_secs(10),
                1024,
            )
            .await
            .expect_err("no handshake");
        assert_eq!(err.kind(), "transient", "{err}");
        assert!(err.message().contains("could not connect"), "{err}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
    }

    /// Reads the first bytes that arrive on `stream` and answers `raw`.
    async fn reply(mut stream: impl AsyncRead + AsyncWrite + Unpin, raw: &[u8]) {
        let mut buf = [0u8; 4096];
        let _ = stream.read(&mut buf).await;
        let _ = stream.write_all(raw).await;
    }

    /// A server that answers `raw` to the first bytes of each connection (whatever they
    /// are, a TLS hello included) and closes it.
    async fn answers_and_closes(scheme: &str, raw: &'static [u8]) -> Uri {
        let (listener, uri) = bound(scheme, "/").await;
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                reply(socket, raw).await;
            }
        });
        uri
    }

    #[tokio::test]
    async fn an_answer_shorter_than_its_length_is_unreadable() {
        let short = b"HTTP/1.1 200 OK\r\ncontent-length: 64\r\n\r\n[1,2,3]";
        let err = post(
            answers_and_closes("http", short).await,
            Duration::from_secs(5),
            1024,
        )
        .await
        .expect_err("cut short");
        assert_eq!(err.kind(), "transient", "{err}");
        assert!(err.message().contains("unreadable body"), "{err}");
    }
}
