//! `o`: the last lines the selected generation printed, as its supervisor keeps them
//! (`zdctl logs NAME --generation N`), in a pane over the main view.
//!
//! The pane names its generation when it opens and keeps showing that one: the collector
//! reads its lines at every refresh while the pane is open (never the UI thread), and the
//! pane keeps the newest at the bottom unless it was scrolled up, in which case the same
//! lines stay in view as new ones arrive.

use zd_core::proto::LogLine;

/// How many lines the pane asks for: more than a screen holds, few enough to read every
/// refresh.
pub const LINES: u32 = 200;

/// The generation whose output the pane shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputTarget {
    pub service: String,
    pub generation: u64,
}

/// What the collector read for a target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputRead {
    pub target: OutputTarget,
    /// The lines, oldest first (none when it printed nothing yet), or why there are none
    /// to show, in one line.
    pub lines: Result<Vec<LogLine>, String>,
}

/// The open pane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputPane {
    pub target: OutputTarget,
    /// The last read; `None` until the first arrives.
    pub read: Option<Result<Vec<LogLine>, String>>,
    /// How many lines the view is scrolled up from the newest: 0 follows new lines.
    pub scroll: usize,
}

/// How the scroll keys move the pane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scroll {
    /// Towards older lines.
    Up(usize),
    /// Towards newer lines.
    Down(usize),
    Oldest,
    Newest,
}

impl OutputPane {
    pub fn new(target: OutputTarget) -> OutputPane {
        OutputPane {
            target,
            read: None,
            scroll: 0,
        }
    }

    fn lines(&self) -> &[LogLine] {
        match &self.read {
            Some(Ok(lines)) => lines,
            _ => &[],
        }
    }

    /// Takes a read of its target (a read of another generation is left alone: it was
    /// asked for before the pane changed).
    pub fn on_read(&mut self, read: OutputRead) {
        if read.target != self.target {
            return;
        }
        // Scrolled up: count the lines that arrived after the newest one shown before, so
        // that the view stays on the lines being read.
        if self.scroll > 0
            && let (Some(newest), Ok(lines)) = (self.lines().last().map(|l| l.seq), &read.lines)
        {
            let arrived = lines.iter().filter(|l| l.seq > newest).count();
            self.scroll = self.scroll.saturating_add(arrived);
        }
        self.read = Some(read.lines);
        self.scroll = self.scroll.min(self.lines().len().saturating_sub(1));
    }

    /// Moves the view; the drawing stops it at the oldest page.
    pub fn scroll(&mut self, by: Scroll) {
        let most = self.lines().len().saturating_sub(1);
        self.scroll = match by {
            Scroll::Up(n) => self.scroll.saturating_add(n).min(most),
            Scroll::Down(n) => self.scroll.saturating_sub(n),
            Scroll::Oldest => most,
            Scroll::Newest => 0,
        };
    }

    /// The lines in view on a page of `height` rows, oldest first, and how many lines are
    /// newer than the last one of them.
    pub fn page(&self, height: usize) -> (&[LogLine], usize) {
        let lines = self.lines();
        let below = self.scroll.min(lines.len().saturating_sub(height));
        let end = lines.len() - below;
        (&lines[end.saturating_sub(height)..end], below)
    }
}

/// `17:05:01.123`: the time of day, UTC, of a Unix time in milliseconds.
pub fn time_of_day(unix_ms: u64) -> String {
    let ms = unix_ms % 1000;
    let secs = unix_ms / 1000 % 86_400;
    format!(
        "{:02}:{:02}:{:02}.{ms:03}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}
