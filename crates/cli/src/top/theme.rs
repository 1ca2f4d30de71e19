//! Styles, with and without colour. Without colour (NO_COLOR) only bold, reverse and
//! underline remain, so the selection and the headers still read.

use ratatui::style::{Color, Modifier, Style};
use ratatui::symbols::Marker;

#[derive(Debug, Clone, Copy)]
pub struct Theme {
    color: bool,
}

/// Chart colours by generation, cycled.
const LINE_COLORS: [Color; 6] = [
    Color::Cyan,
    Color::Yellow,
    Color::Magenta,
    Color::Green,
    Color::Blue,
    Color::Red,
];

/// Without colour the lines differ by their marks instead.
const LINE_MARKERS: [Marker; 4] = [Marker::Braille, Marker::Dot, Marker::Block, Marker::Bar];

impl Theme {
    pub fn new(color: bool) -> Theme {
        Theme { color }
    }

    fn fg(self, color: Color) -> Style {
        if self.color {
            Style::new().fg(color)
        } else {
            Style::new()
        }
    }

    pub fn title(self) -> Style {
        self.fg(Color::Cyan).add_modifier(Modifier::BOLD)
    }

    pub fn header(self) -> Style {
        self.fg(Color::Yellow).add_modifier(Modifier::BOLD)
    }

    pub fn selected(self) -> Style {
        if self.color {
            Style::new().bg(Color::Blue).fg(Color::White)
        } else {
            Style::new().add_modifier(Modifier::REVERSED)
        }
    }

    pub fn dim(self) -> Style {
        if self.color {
            Style::new().fg(Color::DarkGray)
        } else {
            Style::new()
        }
    }

    pub fn good(self) -> Style {
        self.fg(Color::Green)
    }

    /// What a program wrote to stderr: worth a look, not necessarily wrong.
    pub fn warning(self) -> Style {
        self.fg(Color::Yellow)
    }

    pub fn bad(self) -> Style {
        self.fg(Color::Red).add_modifier(Modifier::BOLD)
    }

    /// A generation's state: `starting` and `draining` stand out from `active`.
    pub fn state(self, state: &str) -> Style {
        match state {
            "active" => self.good(),
            "starting" => self.fg(Color::Yellow),
            // The old generation, serving beside a baking new one until it ends.
            "standby" => self.fg(Color::Cyan),
            "draining" | "old" => self.fg(Color::Magenta),
            _ => Style::new(),
        }
    }

    /// The chart line of the `index`th generation.
    pub fn line(self, index: usize) -> (Style, Marker) {
        if self.color {
            (
                Style::new().fg(LINE_COLORS[index % LINE_COLORS.len()]),
                Marker::Braille,
            )
        } else {
            (Style::new(), LINE_MARKERS[index % LINE_MARKERS.len()])
        }
    }
}
