//! `ferrochat chat` driven like a person would: in a pseudo-terminal (two turns, a bad
//! `/load`, Ctrl-C mid-answer and at the prompt, `/save`, `/quit`), and like a script
//! would (piped stdin, `--prompt`), plus the notice when the history outgrows the context.
//! The model is a few seconds of pretraining, so its answers are noise: these tests check
//! the mechanics, not the words.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod common;
use common::{bin, run_ok as ok, Small};

/// A tiny pretrained checkpoint (context 64), built once per test process. Thirty steps
/// teach it that the turn-ending tokens are rare, so a greedy answer runs on until its
/// length limit: long enough to interrupt.
fn checkpoint() -> &'static Path {
    static DIR: std::sync::OnceLock<(tempfile::TempDir, PathBuf)> = std::sync::OnceLock::new();
    &DIR.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        let sizes = Small {
            pretrain_mb: "0.1",
            records: "10",
            vocab: "300",
            val_fraction: "0.01",
        };
        common::prepared(d, &sizes);
        ok(bin()
            .args([
                "pretrain", "--preset", "tiny", "--seq", "64", "--batch", "8",
            ])
            .args(["--steps", "30", "--lr", "4e-3", "--warmup", "5"])
            .args(["--eval-every", "0", "--eval-batches", "1"])
            .args(["--checkpoint-every", "100", "--quiet", "--data"])
            .arg(d.join("data"))
            .arg("--output")
            .arg(d.join("base")));
        let base = d.join("base");
        (tmp, base)
    })
    .1
}

/// A copy of the checkpoint with another context length. Rotary positions have no learned
/// table, so the same weights run at any length: long enough to be interrupted, or short
/// enough to overflow in a few turns.
fn with_context(dir: &Path, ctx: usize) -> PathBuf {
    let out = dir.join(format!("ctx{ctx}"));
    std::fs::create_dir_all(&out).unwrap();
    let base = checkpoint();
    for f in [
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "meta.json",
    ] {
        std::fs::copy(base.join(f), out.join(f)).unwrap();
    }
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(base.join("config.json")).unwrap()).unwrap();
    cfg["max_position_embeddings"] = ctx.into();
    std::fs::write(out.join("config.json"), cfg.to_string()).unwrap();
    out
}

fn saved(path: &Path) -> Vec<(String, String)> {
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    v["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["role"].as_str().unwrap().to_string(),
                m["content"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// A child process on a pseudo-terminal, with everything it prints collected by a thread
/// that also answers the cursor-position query a line editor sends, as a terminal would.
struct Pty {
    child: Child,
    master: File,
    seen: Arc<Mutex<Vec<u8>>>,
}

impl Pty {
    fn spawn(mut cmd: Command) -> Pty {
        // SAFETY: plain libc calls on a descriptor this function owns, and a name buffer
        // that ptsname_r fills and terminates.
        let (master, slave) = unsafe {
            let m = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC);
            assert!(m >= 0, "posix_openpt: {}", std::io::Error::last_os_error());
            assert_eq!(libc::grantpt(m), 0);
            assert_eq!(libc::unlockpt(m), 0);
            let mut name = [0 as libc::c_char; 128];
            assert_eq!(libc::ptsname_r(m, name.as_mut_ptr(), name.len()), 0);
            let ws = libc::winsize {
                ws_row: 40,
                ws_col: 200,
                ws_xpixel: 0,
                ws_ypixel: 0,
            };
            libc::ioctl(m, libc::TIOCSWINSZ, &ws);
            let path = std::ffi::CStr::from_ptr(name.as_ptr()).to_str().unwrap();
            use std::os::unix::fs::OpenOptionsExt;
            let slave = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(libc::O_NOCTTY)
                .open(path)
                .unwrap();
            use std::os::fd::FromRawFd;
            (File::from_raw_fd(m), slave)
        };
        cmd.stdin(slave.try_clone().unwrap())
            .stdout(slave.try_clone().unwrap())
            .stderr(slave)
            .env("TERM", "xterm");
        // SAFETY: between fork and exec the child makes only async-signal-safe calls: a
        // session of its own, with the terminal on its stdin as the controlling one (so
        // Ctrl-C typed there sends it SIGINT).
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("ferrochat starts");
        drop(cmd); // closes our copies of the slave, so reads end when the child exits
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (mut reader, mut replier) = (master.try_clone().unwrap(), master.try_clone().unwrap());
        let sink = seen.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            let mut queries = 0;
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let mut all = sink.lock().unwrap();
                all.extend_from_slice(&buf[..n]);
                let asked = all.windows(4).filter(|w| w == b"\x1b[6n").count();
                for _ in queries..asked {
                    let _ = replier.write_all(b"\x1b[1;1R");
                }
                queries = asked;
            }
        });
        Pty {
            child,
            master,
            seen,
        }
    }

    /// Everything printed so far, escape sequences removed.
    fn screen(&self) -> String {
        strip_ansi(&String::from_utf8_lossy(&self.seen.lock().unwrap()))
    }

    fn send(&mut self, bytes: &[u8]) -> usize {
        let at = self.screen().len();
        self.master.write_all(bytes).unwrap();
        at
    }

    /// Waits until `pat` appears after byte `from` of the screen; returns where it ends.
    fn expect(&self, from: usize, pat: &str) -> usize {
        self.until(from, Duration::from_secs(20), |s| {
            s.find(pat).map(|i| i + pat.len())
        })
        .unwrap_or_else(|| panic!("no {pat:?} after byte {from}:\n{}", self.screen()))
    }

    fn until(
        &self,
        from: usize,
        limit: Duration,
        check: impl Fn(&str) -> Option<usize>,
    ) -> Option<usize> {
        let t0 = Instant::now();
        while t0.elapsed() < limit {
            let s = self.screen();
            if let Some(i) = s.get(from..).and_then(&check) {
                return Some(from + i);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        None
    }

    fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    fn exit_code(&mut self) -> Option<i32> {
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(20) {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("still running:\n{}", self.screen());
    }
}

impl Drop for Pty {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Drops CSI (`ESC [ ... final`), OSC (`ESC ] ... BEL`) and two-byte escapes.
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars().peekable();
    while let Some(c) = it.next() {
        if c != '\x1b' {
            out.push(c);
            continue;
        }
        match it.next() {
            Some('[') => {
                for c in it.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
            Some(']') => {
                for c in it.by_ref() {
                    if c == '\x07' {
                        break;
                    }
                }
            }
            _ => {}
        }
    }
    out
}

const PROMPT: &str = "you> ";

/// Sends a line and waits for the prompt to return; returns what was printed in between.
fn turn(pty: &mut Pty, line: &str) -> String {
    let at = pty.send(format!("{line}\r").as_bytes());
    let entered = pty.expect(at, "\n");
    let end = pty.expect(entered, PROMPT);
    pty.screen()[entered..end - PROMPT.len()].to_string()
}

#[test]
fn a_person_chats_for_two_turns_interrupts_an_answer_and_saves() {
    let tmp = tempfile::tempdir().unwrap();
    let model = with_context(tmp.path(), 4096);
    let (first, second) = (
        tmp.path().join("first.json"),
        tmp.path().join("second.json"),
    );

    // two turns, a system message, a bad /load that changes nothing, /save, /quit
    let mut c = bin();
    c.current_dir(tmp.path())
        .args(["chat", "--max-tokens", "40", "--temperature", "0.8"])
        .arg("--model")
        .arg(&model);
    let mut pty = Pty::spawn(c);
    let at = pty.expect(0, "/help for commands");
    pty.expect(at, PROMPT);
    turn(&mut pty, "hello there");
    turn(&mut pty, "what is the capital of France?");
    assert!(pty.alive());
    let reply = turn(&mut pty, "/system You are terse.");
    assert_eq!(reply.trim(), "(system message set)");
    std::fs::write(
        tmp.path().join("bad.json"),
        "{\"messages\": [{\"role\": \"robot\"",
    )
    .unwrap();
    let reply = turn(&mut pty, "/load bad.json");
    assert!(
        reply.contains("error: bad.json is not a conversation"),
        "{reply}"
    );
    let reply = turn(&mut pty, "/frobnicate");
    assert!(reply.contains("unknown command /frobnicate"), "{reply}");
    let reply = turn(&mut pty, "/save first.json");
    assert_eq!(reply.trim(), "(saved 5 messages to first.json)");
    pty.send(b"/quit\r");
    assert_eq!(pty.exit_code(), Some(0), "{}", pty.screen());
    let msgs = saved(&first);
    let roles: Vec<&str> = msgs.iter().map(|m| m.0.as_str()).collect();
    assert_eq!(
        roles,
        ["system", "user", "assistant", "user", "assistant"],
        "{msgs:?}"
    );
    assert_eq!(msgs[0].1, "You are terse.");
    assert_eq!(msgs[1].1, "hello there");
    assert_eq!(msgs[3].1, "what is the capital of France?");

    // go on from the saved conversation with a long-winded model (greedy, 4000 tokens)
    let mut c = bin();
    c.current_dir(tmp.path())
        .args(["chat", "--max-tokens", "4000", "--temperature", "0"])
        .args(["--load", "first.json", "--model"])
        .arg(&model);
    let mut pty = Pty::spawn(c);
    let at = pty.expect(0, "(loaded 5 messages from first.json)");
    pty.expect(at, PROMPT);
    let at = pty.send(b"tell me a very long story\r");
    let entered = pty.expect(at, "\n");
    // Ctrl-C as soon as the answer starts: it stops, the prompt returns
    // (a tiny model may well answer in spaces: any printed character counts)
    pty.until(entered, Duration::from_secs(20), |s| {
        s.chars().any(|c| c != '\r' && c != '\n').then_some(0)
    })
    .expect("the answer starts");
    pty.send(b"\x03");
    let at = pty.expect(entered, "(stopped)");
    let at = pty.expect(at, PROMPT);
    assert!(pty.alive(), "Ctrl-C mid-answer ended the chat");
    // Ctrl-C at the prompt: a hint, still alive
    pty.send(b"\x03");
    let at = pty.expect(at, "Ctrl-D or /quit to exit");
    pty.expect(at, PROMPT);
    assert!(pty.alive());
    turn(&mut pty, "/save second.json");
    // Ctrl-C twice in a row at the prompt leaves
    let at = pty.send(b"\x03");
    let at = pty.expect(at, "Ctrl-D or /quit to exit");
    pty.expect(at, PROMPT);
    pty.send(b"\x03");
    assert_eq!(pty.exit_code(), Some(0), "{}", pty.screen());
    let msgs = saved(&second);
    assert_eq!(msgs.len(), 7, "{msgs:?}");
    assert_eq!(msgs[5].1, "tell me a very long story");
    assert_eq!(msgs[6].0, "assistant");
    let partial = msgs[6].1.chars().count();
    assert!(
        partial > 0 && partial < 2000,
        "the stopped answer is kept as far as it got: {partial} chars"
    );
}

#[test]
fn a_script_gets_only_answers() {
    let model = checkpoint();
    let tmp = tempfile::tempdir().unwrap();

    // piped stdin: one user turn per non-empty line, commands allowed, no prompts
    let mut child = bin()
        .current_dir(tmp.path())
        .args([
            "chat",
            "--max-tokens",
            "5",
            "--system",
            "Be brief.",
            "--model",
        ])
        .arg(model)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"hello\n\nhow are you?\n/save s.json\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.ends_with('\n') && !stdout.contains(PROMPT),
        "{stdout}"
    );
    assert!(
        !stdout.contains("/help") && !stdout.contains("saved"),
        "{stdout}"
    );
    assert!(stderr.contains("(saved 5 messages to s.json)"), "{stderr}");
    let msgs = saved(&tmp.path().join("s.json"));
    assert_eq!(msgs[0], ("system".into(), "Be brief.".into()));
    assert_eq!(msgs[1], ("user".into(), "hello".into()));
    assert_eq!(msgs[3], ("user".into(), "how are you?".into()));

    // --prompt: one answer, stdin ignored
    let out = ok(bin()
        .args(["chat", "--max-tokens", "5", "--prompt", "hello", "--model"])
        .arg(model)
        .stdin(Stdio::null()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.ends_with('\n') && !stdout.contains(PROMPT),
        "{stdout}"
    );

    // a failed command fails a script: exit 1 and the file named
    let mut child = bin()
        .args(["chat", "--max-tokens", "5", "--model"])
        .arg(model)
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"/load /nonexistent/c.json\nhello\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("/nonexistent/c.json"), "{stderr}");
}

#[test]
fn a_long_conversation_drops_its_oldest_turns_with_a_notice() {
    let model = checkpoint(); // context 64
    let tmp = tempfile::tempdir().unwrap();
    let mut child = bin()
        .current_dir(tmp.path())
        .args(["chat", "--max-tokens", "8", "--system", "S", "--model"])
        .arg(model)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines: String = (0..6)
        .map(|i| format!("question number {i} about planets\n"))
        .collect();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{lines}/save all.json\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("(context full: dropped the "), "{stderr}");
    assert!(!stdout.contains("context full"), "{stdout}");
    // the saved conversation is whole: only the prompt left turns out
    assert_eq!(saved(&tmp.path().join("all.json")).len(), 13);

    // one message longer than the context: a clear error
    let long = "planets ".repeat(200);
    let out = bin()
        .args(["chat", "--max-tokens", "8", "--prompt", &long, "--model"])
        .arg(model)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("context of 64 tokens"), "{stderr}");
}
