//! Where and how things are printed: data on stdout (text, or JSON with
//! `--json`), messages and errors on stderr, colour only on a terminal and
//! only when NO_COLOR is not set.

use std::io::{IsTerminal, Write};

use serde_json::Value;

use crate::CliError;

/// ANSI styling for one stream, or none.
#[derive(Debug, Clone, Copy)]
pub struct Style {
    pub enabled: bool,
}

impl Style {
    pub fn for_stream(is_terminal: bool) -> Style {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        let dumb = std::env::var("TERM").is_ok_and(|t| t == "dumb");
        Style {
            enabled: is_terminal && !no_color && !dumb,
        }
    }

    fn paint(&self, code: &str, text: &str) -> String {
        if self.enabled {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    }

    pub fn bold(&self, text: &str) -> String {
        self.paint("1", text)
    }
    pub fn dim(&self, text: &str) -> String {
        self.paint("2", text)
    }
    pub fn red(&self, text: &str) -> String {
        self.paint("31", text)
    }
    pub fn green(&self, text: &str) -> String {
        self.paint("32", text)
    }
    pub fn yellow(&self, text: &str) -> String {
        self.paint("33", text)
    }
    pub fn cyan(&self, text: &str) -> String {
        self.paint("36", text)
    }

    /// A job or document status, coloured by outcome.
    pub fn status(&self, status: &str) -> String {
        match status {
            "SUCCESS" | "PROCESS IMAGE SUCCESS" | "UNZIP FILE SUCCESS" => self.green(status),
            "FAILED" | "PROCESS IMAGE FAILED" | "UNZIP FILE FAILED" => self.red(status),
            _ => self.yellow(status),
        }
    }
}

/// The printer of one command run.
#[derive(Debug, Clone)]
pub struct Out {
    pub json: bool,
    pub out: Style,
    pub err: Style,
    pub stderr_is_terminal: bool,
}

impl Out {
    pub fn new(json: bool) -> Out {
        let stderr_is_terminal = std::io::stderr().is_terminal();
        Out {
            json,
            out: Style::for_stream(std::io::stdout().is_terminal()),
            err: Style::for_stream(stderr_is_terminal),
            stderr_is_terminal,
        }
    }

    /// A line of data on stdout (text mode).
    pub fn line(&self, text: impl AsRef<str>) {
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "{}", text.as_ref());
    }

    /// A JSON document on stdout, pretty on a terminal.
    pub fn json_value(&self, value: &Value) {
        let text = if std::io::stdout().is_terminal() {
            serde_json::to_string_pretty(value)
        } else {
            serde_json::to_string(value)
        }
        .unwrap_or_default();
        self.line(text);
    }

    /// A message for people on stderr.
    pub fn note(&self, text: impl AsRef<str>) {
        let mut stderr = std::io::stderr().lock();
        let _ = writeln!(stderr, "{}", text.as_ref());
    }

    pub fn warn(&self, text: impl AsRef<str>) {
        self.note(format!(
            "{} {}",
            self.err.yellow(&self.err.bold("warning:")),
            text.as_ref()
        ));
    }

    pub fn error(&self, err: &CliError) {
        self.note(format!(
            "{} {}",
            self.err.red(&self.err.bold("error:")),
            err.message
        ));
        if let Some(hint) = &err.hint {
            self.note(format!("{} {hint}", self.err.cyan(&self.err.bold("hint:"))));
        }
    }
}

/// "1 page", "2 pages".
pub fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_colour_off_a_terminal() {
        let s = Style::for_stream(false);
        assert_eq!(s.red("x"), "x");
        assert_eq!(plural(1, "page", "pages"), "1 page");
        assert_eq!(plural(2, "page", "pages"), "2 pages");
    }
}
