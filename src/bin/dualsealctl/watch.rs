//! `dualsealctl watch`: live progress bars per category on a terminal, plain lines otherwise,
//! JSON lines with `--json`; a summary table at the end.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use dualseal::api::client::ClientError;
use dualseal::api::pb;
use futures::{Stream, StreamExt};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::view;

/// Plain output prints at most one line per this interval (and on every state change), so a
/// day-long job under systemd or in CI does not flood its log.
const PLAIN_EVERY: Duration = Duration::from_secs(5);

/// How the progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// One JSON object per update.
    Json,
    /// Progress bars (stdout is a terminal).
    Bars,
    /// One line every few seconds.
    Plain,
}

impl Mode {
    /// Bars on a terminal, plain lines otherwise.
    pub fn pick(json: bool) -> Self {
        if json {
            Self::Json
        } else if std::io::stdout().is_terminal() {
            Self::Bars
        } else {
            Self::Plain
        }
    }
}

struct Bars {
    multi: MultiProgress,
    header: ProgressBar,
    categories: BTreeMap<String, ProgressBar>,
    style: ProgressStyle,
}

impl Bars {
    fn new() -> Self {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stdout_with_hz(4));
        let header = multi.add(ProgressBar::new_spinner());
        header.set_style(
            ProgressStyle::with_template("{spinner} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        let style = ProgressStyle::with_template(
            "  {prefix:<14} [{bar:32.cyan/blue}] {pos:>7}/{len:<7} {rate:>9} eta {eta:<5} {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .with_key(
            "rate",
            |s: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{:.1}/s", s.per_sec());
            },
        )
        .progress_chars("=> ");
        Self {
            multi,
            header,
            categories: BTreeMap::new(),
            style,
        }
    }

    fn update(&mut self, j: &pb::Job) {
        let sp = view::speed(j);
        self.header.set_message(format!(
            "job {} {}  verified {}/{}{}  failed {}  {}{}{}",
            j.job_id,
            view::state(j),
            j.verified_objects,
            view::to_move(j),
            if j.listing_complete { "" } else { "+" },
            j.failed_objects,
            view::bytes(j.verified_bytes),
            if sp.is_empty() {
                String::new()
            } else {
                format!("  {sp}")
            },
            if j.throttled {
                "  [throttled: concurrency lowered]"
            } else {
                ""
            },
        ));
        self.header.tick();
        for c in &j.categories {
            let bar = self
                .categories
                .entry(c.category.clone())
                .or_insert_with(|| {
                    let b = self.multi.add(ProgressBar::new(0));
                    b.set_style(self.style.clone());
                    b.set_prefix(c.category.clone());
                    b
                });
            bar.set_length(c.objects);
            bar.set_position(c.verified_objects + c.failed_objects + c.conflict_objects);
            let mut msg = view::bytes(c.verified_bytes);
            if c.failed_objects > 0 {
                msg.push_str(&format!(" failed {}", c.failed_objects));
            }
            bar.set_message(msg);
        }
        if let Some(e) = j.recent_errors.last() {
            self.header
                .println(format!("  last error {}: {}", e.source_key, e.message));
        }
    }

    fn finish(&self) {
        for b in self.categories.values() {
            b.finish();
        }
        self.header.finish();
    }
}

/// Follows a job until its stream ends; returns its last state.
///
/// # Errors
/// A stream error, or a stream that ended without any state.
pub async fn follow(
    stream: impl Stream<Item = Result<pb::Job, ClientError>>,
    mode: Mode,
) -> Result<pb::Job> {
    let mut stream = Box::pin(stream);
    let started = Instant::now();
    let mut bars = (mode == Mode::Bars).then(Bars::new);
    let mut last: Option<pb::Job> = None;
    let mut printed_at: Option<Instant> = None;
    let mut last_error_shown = String::new();
    while let Some(j) = stream.next().await {
        let j = j?;
        match mode {
            Mode::Json => println!("{}", crate::job_json(&j)),
            Mode::Bars => {
                if let Some(b) = bars.as_mut() {
                    // Show each error once, not on every refresh.
                    let newest = j.recent_errors.last().map(|e| {
                        e.time.as_ref().map_or_else(String::new, crate::view::time) + &e.source_key
                    });
                    let mut shown = j.clone();
                    if newest.as_deref() == Some(last_error_shown.as_str()) {
                        shown.recent_errors.clear();
                    }
                    last_error_shown = newest.unwrap_or_default();
                    b.update(&shown);
                }
            }
            Mode::Plain => {
                let changed = last.as_ref().is_none_or(|l| l.state != j.state);
                if changed || printed_at.is_none_or(|t| t.elapsed() >= PLAIN_EVERY) {
                    println!(
                        "job {} {}: verified {}/{}{} ({}) failed {} unclassified {} conflicts {}{}{}",
                        j.job_id,
                        view::state(&j),
                        j.verified_objects,
                        view::to_move(&j),
                        if j.listing_complete { "" } else { "+" },
                        view::bytes(j.verified_bytes),
                        j.failed_objects,
                        j.unclassified_objects,
                        j.conflict_objects,
                        {
                            let s = view::speed(&j);
                            if s.is_empty() { s } else { format!("  {s}") }
                        },
                        if j.throttled { " [throttled]" } else { "" }
                    );
                    printed_at = Some(Instant::now());
                }
            }
        }
        // A paused (or parked) job does nothing until someone resumes it: watching it would
        // wait for ever, so the watch ends and says how to go on.
        let paused = j.state == pb::JobState::Paused as i32;
        last = Some(j);
        if paused {
            break;
        }
    }
    if let Some(b) = &bars {
        b.finish();
    }
    let Some(j) = last else {
        bail!("the daemon closed the stream without a job state")
    };
    if mode != Mode::Json {
        if j.state == pb::JobState::Paused as i32 {
            println!(
                "\njob {} is paused{}; nothing of it runs until `dualsealctl resume {}`",
                j.job_id,
                if j.message.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", j.message)
                },
                j.job_id
            );
        } else {
            println!("{}", summary(&j, started.elapsed()));
        }
    }
    Ok(j)
}

/// The closing table of a watch.
pub fn summary(j: &pb::Job, watched: Duration) -> String {
    let mut out = format!(
        "\njob {} ended {}: {} of {} objects verified ({}), {} failed, {} unclassified, {} conflicts, {} excluded; watched {}\n",
        j.job_id,
        view::state(j),
        j.verified_objects,
        view::to_move(j),
        view::bytes(j.verified_bytes),
        j.failed_objects,
        j.unclassified_objects,
        j.conflict_objects,
        j.excluded_objects,
        view::duration(watched.as_secs())
    );
    out.push_str(&view::categories(j));
    if j.failed_objects > 0 {
        out.push_str(&format!(
            "  `dualsealctl failures {}` lists the failed objects with reasons\n",
            j.job_id
        ));
    }
    if !j.message.is_empty() {
        out.push_str(&format!("  note: {}\n", j.message));
    }
    out
}
