//! Counters for `/metrics`, in the Prometheus text format.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::Ordering;
use std::sync::Mutex;

use crate::state::AppState;

const BUCKETS: [f64; 10] = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, v: f64) {
        for (c, &b) in self.counts.iter_mut().zip(&BUCKETS) {
            if v <= b {
                *c += 1;
            }
        }
        self.count += 1;
        self.sum += v;
    }

    fn write(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (c, b) in self.counts.iter().zip(&BUCKETS) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {c}");
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(out, "{name}_sum {}", self.sum);
        let _ = writeln!(out, "{name}_count {}", self.count);
    }
}

#[derive(Default)]
struct Inner {
    /// (route, status) -> requests
    requests: BTreeMap<(String, u16), u64>,
    ttft: Histogram,
    duration: Histogram,
}

#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

impl Metrics {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn request(&self, route: &str, status: u16) {
        *self
            .lock()
            .requests
            .entry((route.to_string(), status))
            .or_default() += 1;
    }

    /// A generation's time to its first token and to its end, in seconds.
    pub fn generation(&self, ttft: Option<f64>, total: f64) {
        let mut m = self.lock();
        if let Some(t) = ttft {
            m.ttft.observe(t);
        }
        m.duration.observe(total);
    }

    pub fn render(&self, state: &AppState) -> String {
        let mut out = String::new();
        let m = self.lock();
        out.push_str("# HELP ferrochat_requests_total HTTP requests by route and status.\n# TYPE ferrochat_requests_total counter\n");
        for ((route, status), n) in &m.requests {
            let _ = writeln!(
                out,
                "ferrochat_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
            );
        }
        m.ttft.write(
            &mut out,
            "ferrochat_time_to_first_token_seconds",
            "Time from a request's arrival to its first generated token.",
        );
        m.duration.write(
            &mut out,
            "ferrochat_generation_seconds",
            "Time from a request's arrival to its last token.",
        );
        drop(m);
        type Read = fn(&crate::scheduler::SchedulerStats) -> u64;
        let series: [(&str, &str, &str, Read); 13] = [
            (
                "ferrochat_sequences_running",
                "gauge",
                "Sequences in the decode batch.",
                |s| s.running.load(Ordering::Relaxed),
            ),
            (
                "ferrochat_sequences_waiting",
                "gauge",
                "Sequences waiting for a batch slot.",
                |s| s.waiting.load(Ordering::Relaxed),
            ),
            (
                "ferrochat_prompt_tokens_total",
                "counter",
                "Prompt tokens prefilled.",
                |s| s.prompt_tokens.load(Ordering::Relaxed),
            ),
            (
                "ferrochat_generated_tokens_total",
                "counter",
                "Tokens generated.",
                |s| s.generated_tokens.load(Ordering::Relaxed),
            ),
            (
                "ferrochat_sequences_finished_total",
                "counter",
                "Sequences that ran to a stop token or their length.",
                |s| s.finished.load(Ordering::Relaxed),
            ),
            (
                "ferrochat_sequences_cancelled_total",
                "counter",
                "Sequences ended early (client gone, stop string).",
                |s| s.cancelled.load(Ordering::Relaxed),
            ),
            (
                "ferrochat_sequences_failed_total",
                "counter",
                "Sequences the model could not run.",
                |s| s.failed.load(Ordering::Relaxed),
            ),
            (
                "ferrochat_decode_steps_total",
                "counter",
                "Batched decode steps.",
                |s| s.decode_steps.load(Ordering::Relaxed),
            ),
            (
                "ferrochat_decode_step_sequences_total",
                "counter",
                "Sequences summed over decode steps (divide by steps for the mean batch).",
                |s| s.step_sequences.load(Ordering::Relaxed),
            ),
            (
                "ferrochat_spec_rounds_total",
                "counter",
                "Passes of the model that checked a draft model's tokens (speculative decoding).",
                |s| s.spec_rounds.load(Ordering::Relaxed),
            ),
            (
                "ferrochat_spec_drafted_tokens_total",
                "counter",
                "Tokens the draft model proposed.",
                |s| s.spec_drafted.load(Ordering::Relaxed),
            ),
            (
                "ferrochat_spec_accepted_tokens_total",
                "counter",
                "Drafted tokens the model kept.",
                |s| s.spec_accepted.load(Ordering::Relaxed),
            ),
            (
                "ferrochat_spec_generated_tokens_total",
                "counter",
                "Tokens generated speculatively (divide by rounds for tokens per model pass).",
                |s| s.spec_tokens.load(Ordering::Relaxed),
            ),
        ];
        for (name, kind, help, read) in series {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for model in &state.models {
                let _ = writeln!(
                    out,
                    "{name}{{model=\"{}\"}} {}",
                    model.name,
                    read(model.scheduler.stats())
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP ferrochat_uptime_seconds Seconds since the server started.\n# TYPE ferrochat_uptime_seconds gauge\nferrochat_uptime_seconds {:.3}",
            state.started.elapsed().as_secs_f64()
        );
        out
    }
}
