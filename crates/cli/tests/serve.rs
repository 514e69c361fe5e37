//! `ferrochat serve` as a process on a real socket: acknowledged feedback survives
//! `kill -9`, SIGTERM stops it cleanly, and `feedback export` writes what `reward` reads.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

struct Served {
    child: Child,
    addr: String,
    /// Everything the server wrote to stderr so far.
    log: Arc<Mutex<Vec<String>>>,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(model: &Path, db: &Path) -> Served {
    serve_with(model, db, &[])
}

fn serve_with(model: &Path, db: &Path, extra: &[&str]) -> Served {
    let mut child = common::bin()
        .args(["serve", "--port", "0", "--model"])
        .arg(format!("chat={}", model.display()))
        .arg("--db")
        .arg(db)
        .args(extra)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("serve printed its address before exiting")
            .unwrap();
        if let Some(rest) = line.strip_prefix("listening on http://") {
            break rest.split_whitespace().next().unwrap().to_string();
        }
    };
    // keep draining stderr so the server never blocks on it
    let log = Arc::new(Mutex::new(Vec::new()));
    let sink = log.clone();
    std::thread::spawn(move || {
        for l in lines.map_while(Result::ok) {
            sink.lock().unwrap().push(l);
        }
    });
    Served { child, addr, log }
}

/// One HTTP/1.1 request on a fresh connection: (status, body).
fn http(addr: &str, method: &str, path: &str, body: Option<&Value>) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out[9..12].parse().unwrap();
    let body = out
        .split_once("\r\n\r\n")
        .map(|x| x.1)
        .unwrap_or("")
        .to_string();
    (status, body)
}

fn rating(i: usize) -> Value {
    json!({
        "conversation_id": format!("c{}", i % 5),
        "model": "chat",
        "messages": [{"role": "user", "content": format!("question {}", i % 5)}],
        "answer": format!("answer {i}"),
        "rating": if i.is_multiple_of(2) { "up" } else { "down" },
        "comment": "",
    })
}

#[test]
fn acknowledged_feedback_survives_kill_9_and_exports_as_preferences() {
    let dir = tempfile::tempdir().unwrap();
    kill_9_loses_nothing(dir.path(), &dir.path().join("feedback.db"));
}

/// The same with the store in a real PostgreSQL server (when the test script runs one).
#[test]
fn acknowledged_feedback_survives_kill_9_in_postgres() {
    let Some(url) = ferrochat_server::testing::postgres_url("kill9") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    kill_9_loses_nothing(dir.path(), Path::new(&url));
}

fn kill_9_loses_nothing(dir: &Path, db: &Path) {
    let model = dir.join("chat");
    common::checkpoint_dir(&model);
    let mut server = serve(&model, db);
    let (st, body) = http(&server.addr, "GET", "/health", None);
    assert_eq!(st, 200, "{body}");

    // a writer posts ratings as fast as it can; the server is killed under it
    let acked = Arc::new(Mutex::new(Vec::<i64>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (addr, acked, stop) = (server.addr.clone(), acked.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let r = std::panic::catch_unwind(|| {
                    http(&addr, "POST", "/v1/feedback/ratings", Some(&rating(i)))
                });
                match r {
                    Ok((201, body)) => {
                        let v: Value = serde_json::from_str(&body).unwrap();
                        acked.lock().unwrap().push(v["id"].as_i64().unwrap());
                    }
                    Ok((st, body)) => panic!("rating {i}: {st} {body}"),
                    Err(_) => break, // the server is gone
                }
                i += 1;
            }
        })
    };
    let t = Instant::now();
    while acked.lock().unwrap().len() < 40 {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "ratings are not acknowledged"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    server.child.kill().unwrap(); // SIGKILL, mid-stream of writes
    server.child.wait().unwrap();
    stop.store(true, Ordering::Relaxed);
    let _ = writer.join();
    let acked = acked.lock().unwrap().clone();

    let stored = ferrochat_server::Store::open(db)
        .unwrap()
        .rating_ids()
        .unwrap();
    let missing: Vec<_> = acked.iter().filter(|id| !stored.contains(id)).collect();
    assert!(missing.is_empty(), "acknowledged ratings lost: {missing:?}");

    // it restarts on the same store and goes on numbering after what it kept
    let server = serve(&model, db);
    let (st, body) = http(
        &server.addr,
        "POST",
        "/v1/feedback/ratings",
        Some(&rating(1)),
    );
    assert_eq!(st, 201, "{body}");
    let id = serde_json::from_str::<Value>(&body).unwrap()["id"]
        .as_i64()
        .unwrap();
    assert!(id > *stored.iter().max().unwrap());
    drop(server);

    let out = dir.join("prefs.jsonl");
    let o = common::run_ok(
        common::bin()
            .args(["feedback", "export", "--db"])
            .arg(db)
            .arg("--output")
            .arg(&out),
    );
    let said = String::from_utf8_lossy(&o.stdout);
    assert!(said.contains("from ratings"), "{said}");
    let prefs = ferrochat_text::read_preferences(&out, ferrochat_text::OnBad::Fail).unwrap();
    assert!(!prefs.items.is_empty());
    // each pair is an up-rated answer over a down-rated one to the same question
    let mut by_prompt: HashMap<String, usize> = HashMap::new();
    for (_, p) in &prefs.items {
        let q = p.prompt.last().unwrap().content.clone();
        *by_prompt.entry(q).or_default() += 1;
        let num = |s: &str| s.trim_start_matches("answer ").parse::<usize>().unwrap();
        assert_eq!(num(&p.ranked[0]) % 2, 0, "chosen was rated up");
        assert_eq!(num(&p.ranked[1]) % 2, 1, "rejected was rated down");
    }
    assert!(by_prompt.len() >= 2, "{by_prompt:?}");

    // the loop closes: a reward model trains on people's ratings
    let rm = dir.join("rm");
    let o = common::run_ok(
        common::bin()
            .args([
                "reward", "--quiet", "--steps", "2", "--batch", "2", "--base",
            ])
            .arg(&model)
            .arg("--data")
            .arg(&out)
            .arg("--output")
            .arg(&rm),
    );
    assert!(rm.join("model.safetensors").exists(), "{o:?}");
}

#[test]
fn sigterm_stops_the_server_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("chat");
    common::checkpoint_dir(&model);
    let mut server = serve(&model, &dir.path().join("f.db"));
    let (st, body) = http(
        &server.addr,
        "POST",
        "/v1/chat/completions",
        Some(
            &json!({"model": "chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}),
        ),
    );
    assert_eq!(st, 200, "{body}");
    let pid = server.child.id() as i32;
    // SAFETY: signalling our own child process.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let t = Instant::now();
    let status = loop {
        if let Some(s) = server.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "still running after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}");
}

/// POSTs a chat request with a key; returns the status.
fn ask(addr: &str, key: &str, text: &str) -> u16 {
    let body =
        json!({"model": "chat", "messages": [{"role": "user", "content": text}], "max_tokens": 3})
            .to_string();
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "POST /v1/chat/completions?tag=q HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out.split(' ').nth(1).unwrap().parse().unwrap()
}

/// The server's log once a line containing `want` has arrived (or after 10 s).
fn log_with(server: &Served, want: &str) -> String {
    let t = Instant::now();
    loop {
        let text = server.log.lock().unwrap().join("\n");
        if text.contains(want) || t.elapsed() > Duration::from_secs(10) {
            return text;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn logs_hold_no_key_and_no_prompt_unless_asked() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("chat");
    common::checkpoint_dir(&model);
    let (key, secret) = ("sk-very-secret-key", "my bank PIN is 4921");
    let server = serve_with(
        &model,
        &dir.path().join("a.db"),
        &["--api-key", key, "--access-log"],
    );
    assert_eq!(ask(&server.addr, key, secret), 200);
    assert_eq!(ask(&server.addr, "sk-wrong", secret), 401);
    let log = log_with(&server, "POST /v1/chat/completions 401");
    assert!(log.contains("POST /v1/chat/completions 200"), "{log}");
    assert!(log.contains("POST /v1/chat/completions 401"), "{log}");
    for hidden in [key, "sk-wrong", secret, "tag=q"] {
        assert!(!log.contains(hidden), "the log shows {hidden:?}:\n{log}");
    }
    drop(server);

    // asked for, the prompts are logged (the keys still not)
    let server = serve_with(
        &model,
        &dir.path().join("b.db"),
        &["--api-key", key, "--access-log", "--log-prompts"],
    );
    assert_eq!(ask(&server.addr, key, secret), 200);
    let log = log_with(&server, secret);
    assert!(log.contains(secret), "{log}");
    assert!(!log.contains(key), "{log}");
}

#[test]
fn bench_serve_compares_continuous_batching_with_one_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("chat");
    common::checkpoint_dir(&model);
    let out = common::run_ok(
        common::bin()
            .args([
                "bench",
                "serve",
                "--clients",
                "3",
                "--requests",
                "6",
                "--max-tokens",
                "8",
                "--model",
            ])
            .arg(&model),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    for run in ["one_at_a_time", "continuous"] {
        let r = &last[run];
        assert!(r["requests_per_sec"].as_f64().unwrap() > 0.0, "{last}");
        // every answer ran to its 8 tokens (the end token is ignored)
        let tokens = r["tokens_per_sec"].as_f64().unwrap() * r["wall_secs"].as_f64().unwrap();
        assert!((tokens - 48.0).abs() < 0.5, "{run}: {tokens} tokens");
        assert!(r["ttft_p50_ms"].as_f64().unwrap() > 0.0);
    }
}
