//! A profile kernel's progress from its output: the runtime's log stream (stdout and stderr,
//! as produced) is split into lines with a bounded buffer per stream, each line is matched
//! against `DOCKER_PROGRESS1..3`, and the last match's first capture group (a number
//! 0–100) becomes the kernel's progress. Nothing of the output is kept: a line longer than
//! [`MAX_LINE`] is skipped, and only the latest progress is remembered. Reading the log
//! stream does not slow the kernel down (the engine buffers its output in its log driver).
//!
//! One task per kernel while it runs, ending with its output. Events carrying the progress
//! are rate-limited to one per [`EVENT_EVERY`] per kernel (the last value is always sent).

use std::time::{Duration, Instant};

use futures::StreamExt;
use regex::Regex;

use crate::kernel::supervisor::Supervisor;
use crate::runtime::ChunkStream;
use crate::spec::profile::progress_regex;

/// Longest line looked at; longer ones are skipped (not buffered).
pub const MAX_LINE: usize = 8 * 1024;
/// At most one progress event per kernel this often.
pub const EVENT_EVERY: Duration = Duration::from_secs(1);

/// Splits a byte stream into lines (`\n` or `\r`, as progress bars redraw) without ever
/// holding more than [`MAX_LINE`] bytes.
#[derive(Default)]
pub struct Lines {
    buf: Vec<u8>,
    /// The current line grew past the limit: drop bytes until its end.
    skipping: bool,
}

impl Lines {
    /// Feeds `data`; calls `line` with each complete line.
    pub fn feed(&mut self, data: &[u8], mut line: impl FnMut(&[u8])) {
        for part in data.split_inclusive(|b| *b == b'\n' || *b == b'\r') {
            let ended = matches!(part.last(), Some(b'\n' | b'\r'));
            let body = if ended { &part[..part.len() - 1] } else { part };
            if !self.skipping {
                if self.buf.len() + body.len() > MAX_LINE {
                    self.buf.clear();
                    self.skipping = true;
                } else {
                    self.buf.extend_from_slice(body);
                }
            }
            if ended {
                if !self.skipping && !self.buf.is_empty() {
                    line(&self.buf);
                }
                self.buf.clear();
                self.skipping = false;
            }
        }
    }

    /// The last line when the stream ends without a newline.
    pub fn finish(&mut self, line: impl FnMut(&[u8])) {
        if !self.skipping && !self.buf.is_empty() {
            let mut line = line;
            line(&self.buf);
        }
        self.buf.clear();
    }
}

/// The progress a line reports: the last match of any regex, its first group read as a
/// number within 0–100.
pub fn progress_of(line: &str, regexes: &[Regex]) -> Option<f64> {
    let mut found = None;
    for re in regexes {
        for caps in re.captures_iter(line) {
            let value = caps
                .get(1)
                .and_then(|m| m.as_str().trim().parse::<f64>().ok())
                .filter(|v| v.is_finite() && (0.0..=100.0).contains(v));
            if value.is_some() {
                found = value;
            }
        }
    }
    found
}

impl Supervisor {
    /// Starts following a running kernel's output for its progress, when its profile has
    /// progress regexes and its runtime gives its output.
    pub(crate) fn follow_progress(&self, id: &str) {
        let Some((patterns, handle, runtime)) = self.with_record(id, |r| {
            (
                r.spec
                    .profile
                    .as_ref()
                    .map(|p| p.progress.clone())
                    .unwrap_or_default(),
                r.handle.clone(),
                r.runtime.clone(),
            )
        }) else {
            return;
        };
        let (Some(handle), false) = (handle, patterns.is_empty()) else {
            return;
        };
        let regexes: Vec<Regex> = patterns
            .iter()
            .enumerate()
            .filter_map(|(i, p)| progress_regex(&format!("DOCKER_PROGRESS{}", i + 1), p).ok())
            .collect();
        let stream = match self.runtime(&runtime).map(|rt| rt.logs(&handle, true, 0)) {
            Ok(Ok(s)) => s,
            Ok(Err(e)) | Err(crate::kernel::KernelError::Runtime(e)) => {
                tracing::warn!(kernel_id = %id, error = %e, "cannot follow the output for progress");
                return;
            }
            Err(_) => return,
        };
        let me = self.clone();
        let id = id.to_string();
        self.spawn(async move { me.track_progress(id, regexes, stream).await });
    }

    async fn track_progress(self, id: String, regexes: Vec<Regex>, mut stream: ChunkStream) {
        let (mut out, mut err) = (Lines::default(), Lines::default());
        let mut last_event: Option<Instant> = None;
        let mut unsent = false;
        loop {
            // A change not reported yet goes out when its second is up, output or not.
            let due = match (unsent, last_event) {
                (true, Some(t)) => EVENT_EVERY.saturating_sub(t.elapsed()),
                (true, None) => Duration::ZERO,
                (false, _) => Duration::from_secs(3600),
            };
            let chunk = tokio::select! {
                c = stream.next() => c,
                _ = tokio::time::sleep(due) => {
                    self.progress_event(&id);
                    last_event = Some(Instant::now());
                    unsent = false;
                    continue;
                }
            };
            let Some(Ok(chunk)) = chunk else { break };
            let mut latest = None;
            let lines = if chunk.stderr { &mut err } else { &mut out };
            lines.feed(&chunk.data, |l| {
                if let Some(p) = progress_of(&String::from_utf8_lossy(l), &regexes) {
                    latest = Some(p);
                }
            });
            if let Some(p) = latest {
                unsent |= self.set_progress(&id, p);
            }
            if unsent && last_event.is_none_or(|t| t.elapsed() >= EVENT_EVERY) {
                self.progress_event(&id);
                last_event = Some(Instant::now());
                unsent = false;
            }
        }
        let mut latest = None;
        for lines in [&mut out, &mut err] {
            lines.finish(|l| {
                if let Some(p) = progress_of(&String::from_utf8_lossy(l), &regexes) {
                    latest = Some(p);
                }
            });
        }
        if let Some(p) = latest {
            unsent |= self.set_progress(&id, p);
        }
        if unsent {
            self.progress_event(&id);
        }
    }

    /// Records the kernel's latest progress; returns whether it changed.
    fn set_progress(&self, id: &str, p: f64) -> bool {
        let mut t = self.lock();
        match t.kernels.get_mut(id) {
            Some(e) if e.rec.progress != Some(p) => {
                e.rec.progress = Some(p);
                true
            }
            _ => false,
        }
    }

    /// Persists the kernel's progress and reports it as an event.
    fn progress_event(&self, id: &str) {
        if let Ok(rec) = self.record(id) {
            self.persist(&rec);
            self.note_progress(&rec);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(chunks: &[&[u8]]) -> Vec<String> {
        let mut l = Lines::default();
        let mut out = Vec::new();
        for c in chunks {
            l.feed(c, |x| out.push(String::from_utf8_lossy(x).into_owned()));
        }
        l.finish(|x| out.push(String::from_utf8_lossy(x).into_owned()));
        out
    }

    #[test]
    fn lines_are_split_across_chunks_and_at_carriage_returns() {
        assert_eq!(
            lines(&[b"step 1/1", b"00\nstep 2/100\r", b"step 3/100"]),
            ["step 1/100", "step 2/100", "step 3/100"]
        );
    }

    #[test]
    fn an_overlong_line_is_skipped_without_being_kept() {
        let long = vec![b'x'; MAX_LINE * 3];
        let got = lines(&[b"a\n", &long, &long, b"\nb\n"]);
        assert_eq!(got, ["a", "b"]);
    }

    #[test]
    fn the_last_match_in_range_is_the_progress() {
        let re = vec![Regex::new(r"step (\d+)/100").unwrap()];
        assert_eq!(progress_of("step 10/100 step 20/100", &re), Some(20.0));
        assert_eq!(progress_of("step 500/100", &re), None);
        assert_eq!(progress_of("nothing", &re), None);
        let pct = vec![Regex::new(r"([0-9.]+)%").unwrap()];
        assert_eq!(progress_of("at 42.5% done", &pct), Some(42.5));
    }
}
