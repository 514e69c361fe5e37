//! `ferrochat chat`: talk to a chat checkpoint in the terminal.
//!
//! Interactive when stdin is a terminal: line editing (rustyline), answers streamed as
//! they are sampled, a multi-turn history, slash commands, and Ctrl-C that stops an answer
//! without leaving. For scripts (`--prompt`, or stdin piped) it prints only the answers.
//! The whole history is kept (and saved); when it outgrows the context, the prompt drops
//! the oldest turns, keeping a leading system message, and says so.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{bail, Context, Result};
use ferrochat_engine::{generate, GenerateOptions, SamplingParams};
use ferrochat_model::Llama;
use ferrochat_text::{write_atomic, Conversation, Message, Role};
use ferrochat_tokenizer::Tokenizer;
use rustyline::error::ReadlineError;

const PROMPT: &str = "you> ";

const HELP: &str = "\
/system TEXT   set or replace the system message (/system alone shows it)
/reset         start a new conversation; the system message stays (/reset all drops it too)
/save FILE     write the conversation as JSON: {\"messages\":[{\"role\":..,\"content\":..}]}
/load FILE     replace the conversation with one from a file in that format
/history       show the conversation so far
/help          this list
/quit          leave (so do Ctrl-D and Ctrl-C twice at the prompt)
Ctrl-C during an answer stops it; what was printed stays in the conversation.
Start a message with // to send a literal /.";

#[derive(clap::Args)]
#[command(after_help = "\
Interactive when stdin is a terminal (type /help there for the commands). With --prompt, \
answers each prompt in order and exits; with stdin piped, answers each non-empty line as \
one user turn (lines starting with / are commands), printing only the answers.")]
pub struct Args {
    /// Checkpoint folder (a chat model; a base model works but rambles)
    #[arg(long)]
    pub model: PathBuf,
    /// System message that opens the conversation
    #[arg(long)]
    pub system: Option<String>,
    /// A user turn: print the answer and exit; repeat for several turns in order
    #[arg(long)]
    pub prompt: Vec<String>,
    /// Start from a conversation saved by /save
    #[arg(long)]
    pub load: Option<PathBuf>,
    /// Most tokens of one answer; the prompt leaves room for that many, up to half the context
    #[arg(long, default_value_t = 512)]
    pub max_tokens: usize,
    /// 0 for greedy
    #[arg(long, default_value_t = 0.7)]
    pub temperature: f32,
    /// 0 for no limit
    #[arg(long, default_value_t = 50)]
    pub top_k: usize,
    /// Nucleus sampling: keep the most likely tokens up to this probability (1 for no limit)
    #[arg(long, default_value_t = 0.95)]
    pub top_p: f32,
    /// Keep only tokens at least this fraction as likely as the best one (0 for off)
    #[arg(long, default_value_t = 0.0)]
    pub min_p: f32,
    /// Penalise tokens already in the conversation: above 1 discourages repeats (1 for off)
    #[arg(long, default_value_t = 1.0)]
    pub repetition_penalty: f32,
    /// Seed of the first answer; answer N uses seed + N
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// cpu, cuda or cuda:N
    #[arg(long, default_value = "cpu")]
    pub device: String,
    #[command(flatten)]
    pub watermark: crate::runtime::WatermarkArgs,
}

pub fn run(a: Args) -> Result<()> {
    if a.max_tokens == 0 {
        bail!("--max-tokens must be at least 1");
    }
    let sampling = crate::runtime::sampling(SamplingParams {
        temperature: a.temperature,
        top_k: a.top_k,
        top_p: a.top_p,
        min_p: a.min_p,
        repetition_penalty: a.repetition_penalty,
    })?;
    let interactive = a.prompt.is_empty() && std::io::stdin().is_terminal();
    let (tok, model, _) = crate::runtime::open_model(&a.model, &a.device)?;
    let ctx = model.config().max_position_embeddings;
    let mut s = Session {
        // room kept for the answer, but never more than half the context
        reserve: a.max_tokens.min(ctx / 2),
        max_tokens: a.max_tokens,
        ctx,
        sampling,
        seed: a.seed,
        answers: 0,
        dropped: 0,
        history: Vec::new(),
        interactive,
        watermark: a.watermark.get()?,
        tok,
        model,
    };
    if let Some(path) = &a.load {
        s.history = read_conversation(path)?;
    }
    if let Some(system) = a.system {
        s.set_system(system);
    }
    if !a.prompt.is_empty() {
        for p in a.prompt {
            s.answer(p)?;
        }
        return Ok(());
    }
    if !interactive {
        for line in std::io::stdin().lock().lines() {
            let line = line.context("cannot read stdin")?;
            if s.handle(line.trim())? == Step::Quit {
                break;
            }
        }
        return Ok(());
    }
    s.banner(&a.model, a.load.as_deref());
    repl(&mut s)
}

/// Set by SIGINT while an answer streams; the generation callback checks it.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// SIGINT only arrives while an answer streams: at the prompt rustyline puts the terminal
/// in raw mode, where Ctrl-C is a key it reports as `Interrupted`.
fn catch_sigint() -> Result<()> {
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe; the
    // sigaction struct is fully initialised (zeroed, then the fields that matter set).
    let rc = unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_sigint as extern "C" fn(libc::c_int) as libc::sighandler_t;
        sa.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(libc::SIGINT, &sa, std::ptr::null_mut())
    };
    if rc != 0 {
        bail!("cannot catch Ctrl-C: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

fn repl(s: &mut Session) -> Result<()> {
    let mut editor = rustyline::DefaultEditor::new().context("cannot set up the terminal")?;
    // after the editor: it installs a SIGINT handler of its own, which would take ours
    catch_sigint()?;
    let mut interrupts = 0;
    loop {
        match editor.readline(PROMPT) {
            Ok(line) => {
                interrupts = 0;
                let line = line.trim();
                if line.is_empty() {
                    continue;
                }
                let _ = editor.add_history_entry(line);
                match s.handle(line) {
                    Ok(Step::Quit) => return Ok(()),
                    Ok(Step::Go) => {}
                    Err(e) => eprintln!("error: {e:#}"),
                }
            }
            Err(ReadlineError::Interrupted) => {
                interrupts += 1;
                if interrupts >= 2 {
                    return Ok(());
                }
                println!("(Ctrl-C again, Ctrl-D or /quit to exit)");
            }
            Err(ReadlineError::Eof) => return Ok(()),
            Err(e) => return Err(e).context("cannot read the terminal"),
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Step {
    Go,
    Quit,
}

struct Session {
    tok: Tokenizer,
    model: Llama,
    history: Vec<Message>,
    sampling: SamplingParams,
    max_tokens: usize,
    reserve: usize,
    ctx: usize,
    seed: u64,
    /// Answers given so far; each uses its own seed.
    answers: u64,
    /// Messages the last prompt left out, so the notice shows only when that changes.
    dropped: usize,
    interactive: bool,
    watermark: Option<ferrochat_engine::Watermark>,
}

impl Session {
    /// Feedback on commands and context: the terminal when interactive, else stderr, so
    /// a script's stdout holds nothing but answers.
    fn say(&self, msg: impl std::fmt::Display) {
        if self.interactive {
            println!("{msg}");
        } else {
            eprintln!("{msg}");
        }
    }

    fn banner(&self, model: &Path, loaded: Option<&Path>) {
        let c = self.model.config();
        let p = &self.sampling;
        println!(
            "ferrochat chat: {} ({:.2}M parameters, context {} tokens)",
            model.display(),
            c.num_params() as f64 / 1e6,
            self.ctx
        );
        println!(
            "temperature {}, top-k {}, top-p {}, min-p {}, repetition penalty {}, up to {} tokens an answer",
            p.temperature, p.top_k, p.top_p, p.min_p, p.repetition_penalty, self.max_tokens
        );
        if let Some(path) = loaded {
            println!(
                "(loaded {} messages from {})",
                self.history.len(),
                path.display()
            );
        }
        println!("/help for commands; Ctrl-C stops an answer; Ctrl-D or /quit exits");
    }

    /// One line of input: a command, or a user turn to answer.
    fn handle(&mut self, line: &str) -> Result<Step> {
        if line.is_empty() {
            return Ok(Step::Go);
        }
        if let Some(rest) = line.strip_prefix("//") {
            self.answer(format!("/{rest}"))?;
        } else if line.starts_with('/') {
            return self.command(line);
        } else {
            self.answer(line.to_string())?;
        }
        Ok(Step::Go)
    }

    fn command(&mut self, line: &str) -> Result<Step> {
        let (name, arg) = line
            .split_once(char::is_whitespace)
            .map_or((line, ""), |(n, a)| (n, a.trim()));
        match name {
            "/quit" | "/exit" => return Ok(Step::Quit),
            "/help" => self.say(HELP),
            "/reset" => {
                let system = self.history.first().filter(|m| m.role == Role::System);
                let keep = system.filter(|_| arg != "all").cloned();
                self.history = keep.into_iter().collect();
                self.dropped = 0;
                self.say(if self.history.is_empty() {
                    "(new conversation)"
                } else {
                    "(new conversation; the system message stays)"
                });
            }
            "/system" if arg.is_empty() => match self.history.first() {
                Some(m) if m.role == Role::System => self.say(format!("system: {}", m.content)),
                _ => self.say("(no system message)"),
            },
            "/system" => {
                self.set_system(arg.to_string());
                self.say("(system message set)");
            }
            "/save" if arg.is_empty() => bail!("/save needs a file name"),
            "/save" => {
                let conv = Conversation::new(self.history.clone());
                let mut json = serde_json::to_vec_pretty(&conv)?;
                json.push(b'\n');
                write_atomic(Path::new(arg), &json)
                    .with_context(|| format!("cannot write {arg}"))?;
                self.say(format!("(saved {} messages to {arg})", self.history.len()));
            }
            "/load" if arg.is_empty() => bail!("/load needs a file name"),
            "/load" => {
                self.history = read_conversation(Path::new(arg))?;
                self.dropped = 0;
                self.say(format!(
                    "(loaded {} messages from {arg})",
                    self.history.len()
                ));
            }
            "/history" => {
                if self.history.is_empty() {
                    self.say("(empty)");
                }
                for m in &self.history {
                    self.say(format!(
                        "[{}] {}",
                        m.role.as_str(),
                        crate::stream::shown(&m.content)
                    ));
                }
            }
            other => self.say(format!(
                "unknown command {other}: /help lists the commands (start with // to send a /)"
            )),
        }
        Ok(Step::Go)
    }

    /// Sets or replaces the leading system message.
    fn set_system(&mut self, text: String) {
        match self.history.first_mut() {
            Some(m) if m.role == Role::System => m.content = text,
            _ => self.history.insert(0, Message::system(text)),
        }
    }

    /// Adds a user turn, streams the answer to stdout and adds it to the history. An
    /// answer stopped by Ctrl-C is kept as far as it got, so the history matches the screen.
    fn answer(&mut self, user: String) -> Result<()> {
        self.history.push(Message::user(user));
        let fitted = match self
            .tok
            .encode_prompt_fitting(&self.history, self.ctx, self.reserve)
        {
            Ok(f) => f,
            Err(e) => {
                self.history.pop();
                return Err(e).context("message not sent");
            }
        };
        if fitted.dropped > 0 && fitted.dropped != self.dropped {
            self.say(format!(
                "(context full: dropped the {} oldest messages)",
                fitted.dropped
            ));
        }
        self.dropped = fitted.dropped;
        let special = self.tok.special();
        // an answer is over at its end of turn, or where the model starts another turn
        let stop = vec![
            special.end,
            special.bos,
            special.user,
            special.system,
            special.assistant,
        ];
        let opts = GenerateOptions {
            max_new_tokens: self.max_tokens,
            sampling: self.sampling,
            seed: self.seed.wrapping_add(self.answers),
            stop: stop.clone(),
            watermark: self.watermark,
        };
        self.answers += 1;
        INTERRUPTED.store(false, Ordering::SeqCst);
        let mut out = std::io::stdout();
        let mut stream = crate::stream::Stream::new(&self.tok, self.interactive);
        let mut interrupted = false;
        let mut write_error = None;
        let g = match generate(&self.model, &fitted.value, &opts, |t| {
            if stop.contains(&t) {
                return true; // the end of the answer, not text
            }
            if let Err(e) = stream.push(t, &mut out) {
                write_error = Some(e);
                return false;
            }
            interrupted = INTERRUPTED.load(Ordering::SeqCst);
            !interrupted
        }) {
            Ok(g) => g,
            Err(e) => {
                self.history.pop();
                return Err(e).context("generation failed");
            }
        };
        if let Some(e) = write_error {
            return Err(e).context("cannot write the answer");
        }
        let text = stream.finish(&mut out)?;
        self.history.push(Message::assistant(text));
        writeln!(out)?;
        if interrupted {
            writeln!(out, "(stopped)")?;
        }
        if self.interactive {
            if !interrupted && !g.stopped {
                writeln!(out, "(cut at the length limit)")?;
            }
            writeln!(out)?;
        }
        out.flush()?;
        Ok(())
    }
}

/// A conversation file in the common format; the error names the file and what is wrong.
fn read_conversation(path: &Path) -> Result<Vec<Message>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let conv: Conversation = serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is not a conversation: expected {{\"messages\":[{{\"role\":\"user\",\"content\":\"...\"}}, ...]}}",
            path.display()
        )
    })?;
    Ok(conv.messages)
}
