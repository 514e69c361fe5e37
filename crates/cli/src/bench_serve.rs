//! `ferrochat bench serve`: concurrent streaming clients against the server on loopback,
//! once with continuous batching and once serving one request at a time, over the same
//! workload: requests/s, tokens/s, time to first token and inter-token latency.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use ferrochat_server::{AppState, ServedModel, ServerConfig};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

#[derive(clap::Args, Clone)]
pub struct ServeArgs {
    /// A chat checkpoint
    #[arg(long)]
    pub model: PathBuf,
    /// Clients sending at the same time
    #[arg(long, default_value_t = 16)]
    pub clients: usize,
    /// Requests in all (spread over the clients)
    #[arg(long, default_value_t = 64)]
    pub requests: usize,
    /// New tokens per answer; the end token is ignored so every answer has this length
    #[arg(long, default_value_t = 64)]
    pub max_tokens: usize,
    /// Sequences decoded together in the batched run (default: --clients)
    #[arg(long)]
    pub max_batch: Option<usize>,
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

/// What one streamed request saw.
struct Sample {
    ttft: f64,
    /// Gaps between consecutive streamed pieces, seconds.
    gaps: Vec<f64>,
    tokens: usize,
}

/// A figure at quantile `q` of `v` (nearest rank).
fn quantile(v: &mut [f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() - 1) as f64 * q).round() as usize]
}

/// One streaming chat request over a fresh HTTP/1.1 connection, timing each event.
async fn stream_once(addr: &str, body: &Value) -> Result<Sample> {
    let t0 = Instant::now();
    let mut s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    let body = body.to_string();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await?;
    s.write_all(body.as_bytes()).await?;
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).await?;
    if !line.starts_with("HTTP/1.1 200") {
        let mut rest = String::new();
        let _ = r.read_to_string(&mut rest).await;
        bail!("the server answered {} {rest}", line.trim());
    }
    let mut chunked = false;
    loop {
        line.clear();
        r.read_line(&mut line).await?;
        if line == "\r\n" || line.is_empty() {
            break;
        }
        let l = line.to_ascii_lowercase();
        chunked |= l.starts_with("transfer-encoding:") && l.contains("chunked");
    }
    let mut sample = Sample {
        ttft: f64::NAN,
        gaps: Vec::new(),
        tokens: 0,
    };
    let mut last: Option<Instant> = None;
    let mut pending = String::new();
    loop {
        // the next piece of the body: one chunk, or what arrives when not chunked
        let piece = if chunked {
            line.clear();
            r.read_line(&mut line).await?;
            let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or("0"), 16)
                .context("bad chunk size")?;
            if size == 0 {
                break;
            }
            let mut buf = vec![0; size + 2];
            r.read_exact(&mut buf).await?;
            buf.truncate(size);
            buf
        } else {
            let mut buf = vec![0; 4096];
            let n = r.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            buf.truncate(n);
            buf
        };
        pending.push_str(&String::from_utf8_lossy(&piece));
        while let Some(end) = pending.find("\n\n") {
            let event: String = pending.drain(..end + 2).collect();
            let Some(data) = event.trim().strip_prefix("data: ") else {
                continue;
            };
            if data == "[DONE]" {
                return Ok(sample);
            }
            let v: Value = serde_json::from_str(data).context("bad event")?;
            if let Some(e) = v.get("error") {
                bail!("the stream failed: {e}");
            }
            if let Some(u) = v.get("usage").filter(|u| !u.is_null()) {
                sample.tokens = u["completion_tokens"].as_u64().unwrap_or(0) as usize;
            }
            let has_text = v["choices"]
                .get(0)
                .and_then(|c| c["delta"]["content"].as_str())
                .is_some_and(|t| !t.is_empty());
            if has_text {
                let now = Instant::now();
                match last {
                    None => sample.ttft = (now - t0).as_secs_f64(),
                    Some(l) => sample.gaps.push((now - l).as_secs_f64()),
                }
                last = Some(now);
            }
        }
    }
    bail!("the stream ended without [DONE]")
}

struct Figures {
    wall: f64,
    requests: usize,
    tokens: usize,
    ttft: Vec<f64>,
    itl: Vec<f64>,
}

impl Figures {
    fn json(&mut self) -> Value {
        json!({
            "requests_per_sec": self.requests as f64 / self.wall,
            "tokens_per_sec": self.tokens as f64 / self.wall,
            "ttft_p50_ms": 1e3 * quantile(&mut self.ttft, 0.5),
            "ttft_p99_ms": 1e3 * quantile(&mut self.ttft, 0.99),
            "itl_p50_ms": 1e3 * quantile(&mut self.itl, 0.5),
            "itl_p99_ms": 1e3 * quantile(&mut self.itl, 0.99),
            "wall_secs": self.wall,
        })
    }
}

/// The workload against a server batching up to `max_batch` sequences.
async fn drive(model: ServedModel, a: &ServeArgs) -> Result<Figures> {
    let state = Arc::new(AppState::new(vec![model], ServerConfig::default()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?.to_string();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(ferrochat_server::serve(
        listener,
        ferrochat_server::app(state),
        async {
            let _ = stop_rx.await;
        },
        Duration::from_secs(1),
    ));
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let t0 = Instant::now();
    let mut clients = Vec::new();
    for _ in 0..a.clients {
        let (addr, next, total, max_tokens) =
            (addr.clone(), next.clone(), a.requests, a.max_tokens);
        clients.push(tokio::spawn(async move {
            let mut out = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= total {
                    return Ok::<_, anyhow::Error>(out);
                }
                let body = json!({
                    "model": "bench",
                    "messages": [{"role": "user", "content": format!("Question {i}: what is {i} plus {}?", i * 3)}],
                    "max_tokens": max_tokens, "temperature": 0.8, "seed": i, "ignore_eos": true,
                    "stream": true, "stream_options": {"include_usage": true},
                });
                out.push(stream_once(&addr, &body).await.with_context(|| format!("request {i}"))?);
            }
        }));
    }
    let mut f = Figures {
        wall: 0.0,
        requests: 0,
        tokens: 0,
        ttft: Vec::new(),
        itl: Vec::new(),
    };
    for c in clients {
        for s in c.await?? {
            f.requests += 1;
            f.tokens += s.tokens;
            f.ttft.push(s.ttft);
            f.itl.extend(s.gaps);
        }
    }
    f.wall = t0.elapsed().as_secs_f64();
    let _ = stop_tx.send(());
    server.await??;
    Ok(f)
}

/// Both runs of the workload: `{"one_at_a_time": {...}, "continuous": {...},
/// "speedup_requests_per_sec": x, ...}`.
pub fn measure(a: &ServeArgs) -> Result<Value> {
    anyhow::ensure!(
        a.clients > 0 && a.requests > 0 && a.max_tokens > 0,
        "--clients, --requests and --max-tokens must be at least 1"
    );
    let device = crate::runtime::device(&a.device)?;
    let max_batch = a.max_batch.unwrap_or(a.clients);
    let load = |batch: usize| {
        ServedModel::load(
            "bench",
            &a.model,
            None,
            &device,
            batch,
            a.requests + a.clients,
        )
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    // warm up the model once, then the two runs
    rt.block_on(async {
        let warm = ServeArgs {
            requests: a.clients.min(4),
            ..a.clone()
        };
        drive(load(max_batch)?, &warm).await
    })?;
    let mut single = rt.block_on(async { drive(load(1)?, a).await })?;
    let mut batched = rt.block_on(async { drive(load(max_batch)?, a).await })?;
    let (s, b) = (single.json(), batched.json());
    let ratio = |k: &str| b[k].as_f64().unwrap_or(f64::NAN) / s[k].as_f64().unwrap_or(f64::NAN);
    Ok(
        json!({"clients": a.clients, "requests": a.requests, "max_tokens": a.max_tokens,
        "max_batch": max_batch, "speedup_requests_per_sec": ratio("requests_per_sec"),
        "ttft_p50_ratio": ratio("ttft_p50_ms"), "one_at_a_time": s, "continuous": b}),
    )
}

/// The two runs as a table, one row each.
pub fn table(r: &Value) -> String {
    let mut out = format!(
        "{:<22} {:>8} {:>9} {:>10} {:>10} {:>9} {:>9}\n",
        "", "req/s", "tok/s", "TTFT p50", "TTFT p99", "ITL p50", "ITL p99"
    );
    let batch = r["max_batch"].as_u64().unwrap_or(0);
    for (name, run) in [
        ("one at a time".to_string(), &r["one_at_a_time"]),
        (format!("continuous (batch {batch})"), &r["continuous"]),
    ] {
        let g = |k: &str| run[k].as_f64().unwrap_or(f64::NAN);
        out += &format!(
            "{name:<22} {:>8.2} {:>9.1} {:>8.0}ms {:>8.0}ms {:>7.1}ms {:>7.1}ms\n",
            g("requests_per_sec"),
            g("tokens_per_sec"),
            g("ttft_p50_ms"),
            g("ttft_p99_ms"),
            g("itl_p50_ms"),
            g("itl_p99_ms")
        );
    }
    out
}

pub fn serve(a: ServeArgs) -> Result<()> {
    eprintln!(
        "bench serve: {} requests from {} concurrent streaming clients, {} new tokens each",
        a.requests, a.clients, a.max_tokens
    );
    let r = measure(&a)?;
    print!("{}", table(&r));
    let f = |k: &str| r[k].as_f64().unwrap_or(f64::NAN);
    let tok = |run: &str| r[run]["tokens_per_sec"].as_f64().unwrap_or(f64::NAN);
    println!(
        "continuous batching: {:.2}x the requests/s, {:.2}x the tokens/s, {:.2}x the median time to first token",
        f("speedup_requests_per_sec"),
        tok("continuous") / tok("one_at_a_time"),
        f("ttft_p50_ratio")
    );
    println!("{r}");
    Ok(())
}
