//! Log lines on stderr that never tear a bar: while bars are drawn, each line is written with
//! the bars lifted ([`MultiProgress::suspend`]), then the bars are drawn again below it.

use std::io::{self, Write};
use std::sync::RwLock;

use indicatif::MultiProgress;

/// The bars being drawn, if any.
static BARS: RwLock<Option<MultiProgress>> = RwLock::new(None);

/// Route log lines through `bars` while they are drawn (`None` when they come down).
pub(crate) fn draw_through(bars: Option<MultiProgress>) {
    *BARS.write().unwrap_or_else(|e| e.into_inner()) = bars;
}

/// A `tracing_subscriber` writer for stderr that goes through the bars when they are up.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stderr;

impl Write for Stderr {
    /// The formatter hands over one whole event at a time: it is written in one piece.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let bars = BARS.read().unwrap_or_else(|e| e.into_inner());
        match bars.as_ref() {
            Some(bars) => bars.suspend(|| io::stderr().lock().write_all(buf))?,
            None => io::stderr().lock().write_all(buf)?,
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        io::stderr().flush()
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Stderr {
    type Writer = Stderr;

    fn make_writer(&'a self) -> Self::Writer {
        Stderr
    }
}
