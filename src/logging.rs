//! The log output of `run` and `dev`: text by default, JSON lines with `--log-json`.
//!
//! Log fields often carry what a client sent: an error description quoting a form value,
//! a `redirect_uri`, an IdP's `error` parameter. In text, a newline in one of them would
//! start a line of the attacker's choosing, and an escape sequence would reach the
//! terminal of whoever reads the log; so every control character in a field is written
//! escaped, as `\n` or `\u{1b}`. Colours only go to a terminal. JSON escapes by itself.

use std::io::IsTerminal;

use tracing_subscriber::field::MakeExt;
use tracing_subscriber::fmt::format::{Writer, debug_fn};

/// Installs the global subscriber: the `RUST_LOG` filter (`info` by default) to stderr.
pub fn init(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder
            .with_ansi(std::io::stderr().is_terminal())
            .fmt_fields(text_fields())
            .init();
    }
}

/// How fields are written in text: `name=value`, space separated, the message bare, with
/// every control character escaped.
pub fn text_fields() -> impl for<'w> tracing_subscriber::fmt::FormatFields<'w> + Send + Sync {
    debug_fn(|writer: &mut Writer<'_>, field, value| {
        let text = escape_controls(&format!("{value:?}"));
        if field.name() == "message" {
            writer.write_str(&text)
        } else {
            write!(writer, "{field}={text}")
        }
    })
    .delimited(" ")
}

/// `text` with each control character as its Rust escape (`\n`, `\t`, `\u{1b}`).
fn escape_controls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::escape_controls;

    #[test]
    fn control_characters_are_escaped_and_the_rest_kept() {
        let forged = "x\n2026-12-03T16:00:00Z  INFO forged\r\u{1b}[2Jé \"q\"";
        assert_eq!(
            escape_controls(forged),
            "x\\n2026-12-03T16:00:00Z  INFO forged\\r\\u{1b}[2Jé \"q\""
        );
    }
}
