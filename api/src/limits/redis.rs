//! The limits shared by every API process: one Lua script per request on Redis
//! (`REDIS_URL`), run atomically, with Redis's clock (`TIME`) so replicas with skewed clocks
//! agree. The script is the GCRA step of [`super::gcra::step`] plus, for predictions, the
//! monthly quota counter; one round trip (`EVALSHA` of the script each connection loads
//! with `SCRIPT LOAD`, `EVAL` should a restarted server have lost it).
//!
//! The client speaks just the RESP2 this needs over a small pool of connections, each call
//! bounded by [`CALL_TIMEOUT`]; a broken connection is dropped and redialled on next use.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufStream};
use tokio::net::TcpStream;
use tokio::sync::Mutex;

use super::gcra::{Outcome, Rate};

/// The longest one limiter call may take before the in-process fallback answers.
pub const CALL_TIMEOUT: Duration = Duration::from_millis(250);

/// Connections kept open to Redis.
const POOL: usize = 8;

/// KEYS: rate key, quota key. ARGV: interval µs, burst µs, quota (0: none).
/// Returns {status, remaining, reset µs, retry-after µs}; status 1 allowed, 0 limited,
/// 2 quota exhausted.
const SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local quota = tonumber(ARGV[3])
if quota > 0 then
  local used = tonumber(redis.call('GET', KEYS[2]) or '0')
  if used >= quota then return {2, 0, 0, 0} end
end
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local new_tat = tat + interval
if new_tat - now > burst then
  return {0, 0, tat - now, new_tat - burst - now}
end
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.floor((new_tat - now) / 1000) + 1000)
if quota > 0 then
  redis.call('INCR', KEYS[2])
  redis.call('EXPIRE', KEYS[2], 2764800)
end
return {1, math.floor((burst - (new_tat - now)) / interval), new_tat - now, 0}
";

/// What the script answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// The GCRA outcome (allowed or limited).
    Rate(Outcome),
    /// The monthly quota is used up.
    QuotaExhausted,
}

/// A pool of connections to one Redis server.
pub struct RedisLimiter {
    address: String,
    password: Option<String>,
    database: u32,
    /// The script's SHA-1, as `SCRIPT LOAD` answered it on the first connection.
    sha: OnceLock<String>,
    pool: Vec<Mutex<Option<BufStream<TcpStream>>>>,
    next: AtomicUsize,
}

impl std::fmt::Debug for RedisLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLimiter")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl RedisLimiter {
    /// A limiter for `redis://[:password@]host[:port][/db]`; connects lazily.
    pub fn new(url: &str) -> anyhow::Result<Self> {
        let parsed = reqwest::Url::parse(url).context("REDIS_URL is not a URL")?;
        let host = parsed.host_str().context("REDIS_URL has no host")?;
        let address = format!("{}:{}", host, parsed.port().unwrap_or(6379));
        let database = parsed.path().trim_start_matches('/');
        let database = if database.is_empty() {
            0
        } else {
            database
                .parse()
                .context("REDIS_URL: the path must be a database number")?
        };
        Ok(Self {
            address,
            password: parsed.password().map(str::to_owned),
            database,
            sha: OnceLock::new(),
            pool: (0..POOL).map(|_| Mutex::new(None)).collect(),
            next: AtomicUsize::new(0),
        })
    }

    /// Runs the script for `rate_key` (and `quota_key` up to `quota` when given).
    pub async fn check(
        &self,
        rate_key: &str,
        quota_key: &str,
        rate: Rate,
        quota: Option<u64>,
    ) -> anyhow::Result<Answer> {
        let slot = &self.pool[self.next.fetch_add(1, Ordering::Relaxed) % POOL];
        let mut conn = slot.lock().await;
        let result = shared::runtime::within("the rate-limit script", CALL_TIMEOUT, async {
            if conn.is_none() {
                *conn = Some(self.dial().await?);
            }
            let stream = conn.as_mut().expect("dialled above");
            self.run(stream, rate_key, quota_key, rate, quota).await
        })
        .await
        .map_err(|e| anyhow!("{e}"))
        .and_then(|r| r);
        if result.is_err() {
            *conn = None;
        }
        result
    }

    async fn dial(&self) -> anyhow::Result<BufStream<TcpStream>> {
        let tcp = TcpStream::connect(&self.address)
            .await
            .with_context(|| format!("connecting to Redis at {}", self.address))?;
        tcp.set_nodelay(true)?;
        let mut stream = BufStream::new(tcp);
        if let Some(password) = &self.password {
            command(&mut stream, &["AUTH", password]).await?;
        }
        if self.database != 0 {
            command(&mut stream, &["SELECT", &self.database.to_string()]).await?;
        }
        if let Reply::Bulk(Some(sha)) = command(&mut stream, &["SCRIPT", "LOAD", SCRIPT]).await? {
            let _ = self.sha.set(String::from_utf8_lossy(&sha).into_owned());
        }
        Ok(stream)
    }

    async fn run(
        &self,
        stream: &mut BufStream<TcpStream>,
        rate_key: &str,
        quota_key: &str,
        rate: Rate,
        quota: Option<u64>,
    ) -> anyhow::Result<Answer> {
        let args = [
            rate.interval_us.to_string(),
            rate.burst_us.to_string(),
            quota.unwrap_or(0).to_string(),
        ];
        let tail = [rate_key, quota_key, &args[0], &args[1], &args[2]];
        let sha = self.sha.get().map_or("", String::as_str);
        let mut call = vec!["EVALSHA", sha, "2"];
        call.extend_from_slice(&tail);
        let reply = match command(stream, &call).await {
            Err(e) if sha.is_empty() || e.to_string().starts_with("NOSCRIPT") => {
                let mut call = vec!["EVAL", SCRIPT, "2"];
                call.extend_from_slice(&tail);
                command(stream, &call).await?
            }
            other => other?,
        };
        decode(&reply, rate.limit)
    }
}

/// A RESP2 reply.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Reply {
    Simple(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Vec<Reply>),
}

async fn command(stream: &mut BufStream<TcpStream>, args: &[&str]) -> anyhow::Result<Reply> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    stream.write_all(&out).await?;
    stream.flush().await?;
    read_reply(stream).await
}

async fn read_reply(stream: &mut BufStream<TcpStream>) -> anyhow::Result<Reply> {
    let mut pending = vec![(None::<usize>, Vec::new())];
    loop {
        let mut line = String::new();
        if stream.read_line(&mut line).await? == 0 {
            bail!("Redis closed the connection");
        }
        let line = line.trim_end_matches("\r\n");
        let (kind, rest) = line.split_at(1.min(line.len()));
        let item = match kind {
            "+" => Reply::Simple(rest.to_owned()),
            "-" => bail!("{rest}"),
            ":" => Reply::Int(rest.parse()?),
            "$" => {
                let len: i64 = rest.parse()?;
                if len < 0 {
                    Reply::Bulk(None)
                } else {
                    let mut buf = vec![0; usize::try_from(len)? + 2];
                    stream.read_exact(&mut buf).await?;
                    buf.truncate(buf.len() - 2);
                    Reply::Bulk(Some(buf))
                }
            }
            "*" => {
                let len: i64 = rest.parse()?;
                if len > 0 {
                    pending.push((Some(usize::try_from(len)?), Vec::new()));
                    continue;
                }
                Reply::Array(Vec::new())
            }
            _ => bail!("unexpected reply from Redis"),
        };
        let mut item = item;
        loop {
            let (want, items) = pending.last_mut().expect("a root frame");
            items.push(item);
            match *want {
                None => return Ok(items.pop().expect("pushed above")),
                Some(n) if items.len() == n => {
                    let (_, done) = pending.pop().expect("a frame");
                    item = Reply::Array(done);
                }
                Some(_) => break,
            }
        }
    }
}

fn decode(reply: &Reply, limit: u32) -> anyhow::Result<Answer> {
    let Reply::Array(items) = reply else {
        bail!("the rate-limit script answered {reply:?}");
    };
    let ints: Vec<u64> = items
        .iter()
        .map(|i| match i {
            Reply::Int(n) => Ok(u64::try_from(*n).unwrap_or(0)),
            other => Err(anyhow!("the rate-limit script answered {other:?}")),
        })
        .collect::<anyhow::Result<_>>()?;
    let [status, remaining, reset, retry] = ints[..] else {
        bail!("the rate-limit script answered {} values", ints.len());
    };
    if status == 2 {
        return Ok(Answer::QuotaExhausted);
    }
    Ok(Answer::Rate(Outcome {
        allowed: status == 1,
        remaining: u32::try_from(remaining).unwrap_or(limit).min(limit),
        reset: Duration::from_micros(reset),
        retry_after: Duration::from_micros(retry),
    }))
}
