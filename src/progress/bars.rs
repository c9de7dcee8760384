//! Live bars with indicatif: a total line (a bar once the job's total is known) and a line per
//! partition under way, at most [`SHOWN`], then "+N more". Drawn from the snapshot the
//! drawing thread takes; while bars are up, log lines are written through them ([`super::log`]).

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::{log, Snapshot, SHOWN};
use crate::human;

pub struct Bars {
    multi: MultiProgress,
    total: ProgressBar,
    counted: bool,
    lines: Vec<ProgressBar>,
    more: Option<ProgressBar>,
}

impl Bars {
    /// Bars on stderr: only on a terminal unless `forced`.
    pub fn start(forced: bool) -> Bars {
        let target = match forced {
            true => ProgressDrawTarget::term_like_with_hz(Box::new(console::Term::buffered_stderr()), 10),
            false => ProgressDrawTarget::stderr_with_hz(10),
        };
        let multi = MultiProgress::with_draw_target(target);
        let total = multi.add(ProgressBar::new_spinner().with_style(spinner()));
        log::draw_through(Some(multi.clone()));
        Bars { multi, total, counted: false, lines: Vec::new(), more: None }
    }

    pub fn draw(&mut self, s: &Snapshot) {
        let counted = s.expected.is_some();
        if counted != self.counted {
            self.total.set_style(if counted { counted_bar() } else { spinner() });
            self.counted = counted;
        }
        if let Some(expected) = s.expected {
            self.total.set_length(expected.max(1));
            self.total.set_position(s.records);
        }
        self.total.set_message(total_line(s));
        self.total.tick();

        while self.lines.len() > s.shown.len() {
            let line = self.lines.pop().expect("more lines than shown");
            line.finish_and_clear();
            self.multi.remove(&line);
        }
        let width = s.shown.iter().map(|(slot, _)| slot.label.chars().count()).max().unwrap_or(0);
        for (i, (slot, state)) in s.shown.iter().enumerate() {
            if i == self.lines.len() {
                let line = ProgressBar::new_spinner().with_style(plain());
                let line = match &self.more {
                    Some(more) => self.multi.insert_before(more, line),
                    None => self.multi.add(line),
                };
                self.lines.push(line);
            }
            self.lines[i].set_message(format!(
                "  {:width$}  {:>11}  {:>15}  {state}",
                slot.label,
                human::plural(slot.pages, "page", "pages"),
                human::plural(slot.records, "record", "records"),
            ));
        }
        debug_assert!(self.lines.len() <= SHOWN);
        match (s.more, &self.more) {
            (0, Some(more)) => {
                more.finish_and_clear();
                self.multi.remove(more);
                self.more = None;
            }
            (0, None) => {}
            (n, _) => {
                let more =
                    self.more.get_or_insert_with(|| self.multi.add(ProgressBar::new_spinner().with_style(plain())));
                let waiting = s.partitions.saturating_sub(s.ended + s.under_way);
                let mut text = format!("  +{} more under way", human::count(n as u64));
                if waiting > 0 {
                    text.push_str(&format!(", {} to start", human::count(waiting)));
                }
                more.set_message(text);
            }
        }
    }

    /// Take the bars off the screen; log lines go straight to stderr again.
    pub fn finish(self) {
        log::draw_through(None);
        for line in self.lines.iter().chain(&self.more).chain([&self.total]) {
            line.finish_and_clear();
        }
        let _ = self.multi.clear();
    }
}

fn total_line(s: &Snapshot) -> String {
    let mut parts = vec![human::plural(s.records, "record", "records"), human::plural(s.pages, "page", "pages")];
    if s.partitions > 1 {
        parts.push(format!("{}/{} partitions done", human::count(s.ended), human::count(s.partitions)));
    }
    parts.push(format!("{}/s", human::rate(s.rate)));
    if let Some(eta) = s.eta {
        parts.push(format!("ETA {}", human::duration(eta)));
    }
    parts.push(human::bytes(s.bytes));
    parts.push(human::duration(s.elapsed));
    parts.join(" · ")
}

fn spinner() -> ProgressStyle {
    ProgressStyle::with_template("{spinner} {wide_msg}").expect("a valid template")
}

fn counted_bar() -> ProgressStyle {
    ProgressStyle::with_template("{spinner} [{bar:24}] {percent:>3}% {wide_msg}")
        .expect("a valid template")
        .progress_chars("=> ")
}

fn plain() -> ProgressStyle {
    ProgressStyle::with_template("{wide_msg}").expect("a valid template")
}
