//! What people and scripts see: colours only on a terminal and never with `NO_COLOR`, aligned
//! tables, JSON (pretty on a terminal, compact when piped), human times and durations, and a
//! spinner on stderr while waiting.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::sys::isatty;

/// A text style.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    /// Headers and names.
    Bold,
    /// Secondary detail.
    Dim,
    /// Failures.
    Red,
    /// Successes.
    Green,
    /// Work in progress.
    Yellow,
    /// Ids and hints.
    Cyan,
}

impl Style {
    fn code(self) -> &'static str {
        match self {
            Style::Bold => "1",
            Style::Dim => "2",
            Style::Red => "31",
            Style::Green => "32",
            Style::Yellow => "33",
            Style::Cyan => "36",
        }
    }
}

/// `text` in `style` when `color` is on.
pub fn paint(text: &str, style: Style, color: bool) -> String {
    if color && !text.is_empty() {
        format!("\x1b[{}m{text}\x1b[0m", style.code())
    } else {
        text.to_string()
    }
}

/// Whether colours may be used on a stream that is (or is not) a terminal: never when
/// `NO_COLOR` is set to anything non-empty (no-color.org) or `TERM=dumb`.
pub fn color_allowed(is_tty: bool, no_color: Option<&str>, term: Option<&str>) -> bool {
    is_tty && !matches!(no_color, Some(v) if !v.is_empty()) && term != Some("dumb")
}

/// How this process prints.
#[derive(Clone, Copy, Debug)]
pub struct Out {
    /// `--json`: machine-readable output on stdout.
    pub json: bool,
    /// stdout is a terminal.
    pub stdout_tty: bool,
    /// stderr is a terminal.
    pub stderr_tty: bool,
    /// Colours on stdout.
    pub color: bool,
    /// Colours on stderr.
    pub color_err: bool,
}

impl Out {
    /// Looks at the real streams and environment.
    pub fn detect(json: bool) -> Out {
        let (stdout_tty, stderr_tty) = (isatty(1), isatty(2));
        let no_color = std::env::var("NO_COLOR").ok();
        let term = std::env::var("TERM").ok();
        Out {
            json,
            stdout_tty,
            stderr_tty,
            color: color_allowed(stdout_tty, no_color.as_deref(), term.as_deref()),
            color_err: color_allowed(stderr_tty, no_color.as_deref(), term.as_deref()),
        }
    }

    /// `text` styled for stdout.
    pub fn paint(&self, text: &str, style: Style) -> String {
        paint(text, style, self.color)
    }

    /// `text` styled for stderr.
    pub fn paint_err(&self, text: &str, style: Style) -> String {
        paint(text, style, self.color_err)
    }

    /// Prints a value as JSON: pretty on a terminal, one compact line when piped.
    pub fn print_json(&self, v: &Value) {
        println!("{}", json_text(v, self.stdout_tty));
    }

    /// Prints a note for people on stderr (hints, warnings), dimmed on a terminal.
    pub fn note(&self, text: &str) {
        eprintln!("{}", self.paint_err(text, Style::Dim));
    }
}

/// A value as JSON text, pretty or compact.
pub fn json_text(v: &Value, pretty: bool) -> String {
    if pretty { serde_json::to_string_pretty(v) } else { serde_json::to_string(v) }.expect("a JSON value serialises")
}

/// A table cell: text and an optional style.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cell {
    /// What is shown.
    pub text: String,
    /// How it is coloured on a terminal.
    pub style: Option<Style>,
}

impl Cell {
    /// A cell in `style`.
    pub fn styled(text: impl Into<String>, style: Style) -> Cell {
        Cell { text: text.into(), style: Some(style) }
    }
}

impl From<String> for Cell {
    fn from(text: String) -> Cell {
        Cell { text, style: None }
    }
}

impl From<&str> for Cell {
    fn from(text: &str) -> Cell {
        Cell { text: text.to_string(), style: None }
    }
}

/// Renders rows under headers, columns padded to their widest cell (two spaces apart, no
/// trailing spaces). Widths count characters, so colours do not shift the columns.
pub fn table(headers: &[&str], rows: &[Vec<Cell>], color: bool) -> String {
    let cols = headers.len();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, c) in row.iter().enumerate().take(cols) {
            widths[i] = widths[i].max(c.text.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<(String, usize)>| {
        let last = cells.len().saturating_sub(1);
        let mut s = String::new();
        for (i, (shown, len)) in cells.into_iter().enumerate() {
            s.push_str(&shown);
            if i < last {
                s.push_str(&" ".repeat(widths[i] - len + 2));
            }
        }
        out.push_str(s.trim_end());
        out.push('\n');
    };
    line(headers.iter().map(|h| (paint(h, Style::Bold, color), h.chars().count())).collect());
    for row in rows {
        line(
            row.iter()
                .take(cols)
                .map(|c| {
                    let shown = match c.style {
                        Some(st) => paint(&c.text, st, color),
                        None => c.text.clone(),
                    };
                    (shown, c.text.chars().count())
                })
                .collect(),
        );
    }
    out
}

/// Renders `key: value` lines with the keys aligned.
pub fn fields(pairs: &[(&str, String)], color: bool) -> String {
    let w = pairs.iter().map(|(k, _)| k.chars().count()).max().unwrap_or(0);
    let mut out = String::new();
    for (k, v) in pairs {
        let key = format!("{k}:");
        out.push_str(&paint(&key, Style::Bold, color));
        out.push_str(&" ".repeat(w + 3 - key.chars().count()));
        out.push_str(v);
        out.push('\n');
    }
    out
}

/// The colour of an execution status.
pub fn status_style(status: &str) -> Style {
    match status {
        "success" => Style::Green,
        "failed" => Style::Red,
        _ => Style::Yellow,
    }
}

/// Seconds since the Unix epoch of an RFC 3339 UTC timestamp such as
/// `2026-11-23T19:39:17.298Z` (the only form the API sends).
pub fn parse_utc(ts: &str) -> Option<i64> {
    let b = ts.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' || !ts.ends_with('Z') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| ts.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hh, mm, ss) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hh * 3600 + mm * 60 + ss)
}

/// Now, in seconds since the Unix epoch.
pub fn now_unix() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// How long ago `ts` was, e.g. `5s ago`, `3m ago`, `2h ago`, `4d ago`; the date (`2026-11-23`)
/// beyond 30 days; `-` for null; the text itself if it does not parse.
pub fn age(ts: &Value, now: i64) -> String {
    let Some(s) = ts.as_str() else { return "-".into() };
    let Some(t) = parse_utc(s) else { return s.to_string() };
    let d = (now - t).max(0);
    match d {
        0..60 => format!("{d}s ago"),
        60..3600 => format!("{}m ago", d / 60),
        3600..86_400 => format!("{}h ago", d / 3600),
        86_400..2_592_000 => format!("{}d ago", d / 86_400),
        _ => s[..10].to_string(),
    }
}

/// A size in bytes for a table: `812 B`, `3.4 KiB`, `1.0 MiB`; `-` when absent.
pub fn bytes(v: &Value) -> String {
    let Some(n) = v.as_u64() else { return "-".into() };
    match n {
        0..1024 => format!("{n} B"),
        1024..1_048_576 => format!("{:.1} KiB", n as f64 / 1024.0),
        _ => format!("{:.1} MiB", n as f64 / 1_048_576.0),
    }
}

/// A timestamp for a detail view: `2026-11-23 19:39:17 UTC`, or `-` for null.
pub fn timestamp(ts: &Value) -> String {
    match ts.as_str() {
        Some(s) if parse_utc(s).is_some() => format!("{} {} UTC", &s[..10], &s[11..19]),
        Some(s) => s.to_string(),
        None => "-".into(),
    }
}

/// A run time in milliseconds: `0.56 ms`, `12.3 ms`, `1.52 s`, `2m 05s`; `-` for null.
pub fn duration(ms: &Value) -> String {
    let Some(ms) = ms.as_f64() else { return "-".into() };
    if ms < 10.0 {
        format!("{ms:.2} ms")
    } else if ms < 1000.0 {
        format!("{ms:.1} ms")
    } else if ms < 60_000.0 {
        format!("{:.2} s", ms / 1000.0)
    } else {
        let s = (ms / 1000.0).round() as u64;
        format!("{}m {:02}s", s / 60, s % 60)
    }
}

/// A spinner on stderr, drawn only when stderr is a terminal; cleared when dropped.
pub struct Spinner {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Spinner {
    /// Starts spinning with `label` (after a short delay, so quick calls do not flicker).
    pub fn start(out: &Out, label: &str) -> Spinner {
        let stop = Arc::new(AtomicBool::new(false));
        if !out.stderr_tty {
            return Spinner { stop, thread: None };
        }
        let (flag, label, color) = (stop.clone(), label.to_string(), out.color_err);
        let thread = std::thread::spawn(move || {
            const FRAMES: [&str; 10] = ["⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"];
            let started = Instant::now();
            let mut drawn = false;
            let mut i = 0;
            while !flag.load(Ordering::Relaxed) {
                let elapsed = started.elapsed();
                if elapsed >= Duration::from_millis(250) {
                    let frame = paint(FRAMES[i % FRAMES.len()], Style::Cyan, color);
                    eprint!("\r\x1b[2K{frame} {label} {}", paint(&format!("{:.1}s", elapsed.as_secs_f64()), Style::Dim, color));
                    let _ = std::io::stderr().flush();
                    drawn = true;
                    i += 1;
                }
                std::thread::sleep(Duration::from_millis(80));
            }
            if drawn {
                eprint!("\r\x1b[2K");
                let _ = std::io::stderr().flush();
            }
        });
        Spinner { stop, thread: Some(thread) }
    }
}

impl Drop for Spinner {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn table_aligns_columns_without_trailing_spaces() {
        let rows = vec![
            vec![Cell::from("hello"), Cell::from("python3.11"), Cell::from("")],
            vec![Cell::from("a-much-longer-name"), Cell::styled("nodejs20", Style::Green), Cell::from("x")],
        ];
        let t = table(&["NAME", "RUNTIME", "ROUTE"], &rows, false);
        let expected = "\
NAME                RUNTIME     ROUTE
hello               python3.11
a-much-longer-name  nodejs20    x
";
        assert_eq!(t, expected);
    }

    #[test]
    fn table_colours_do_not_shift_columns() {
        let rows = vec![vec![Cell::styled("ok", Style::Green), Cell::from("1")], vec![Cell::from("failed"), Cell::from("2")]];
        let t = table(&["STATUS", "N"], &rows, true);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "\x1b[1mSTATUS\x1b[0m  \x1b[1mN\x1b[0m");
        assert_eq!(lines[1], "\x1b[32mok\x1b[0m      1");
        assert_eq!(lines[2], "failed  2");
    }

    #[test]
    fn table_with_no_rows_is_the_header() {
        assert_eq!(table(&["ID", "NAME"], &[], false), "ID  NAME\n");
    }

    #[test]
    fn fields_align_keys() {
        let f = fields(&[("id", "fn_1".into()), ("runtime", "python3.11".into())], false);
        assert_eq!(f, "id:       fn_1\nruntime:  python3.11\n");
    }

    #[test]
    fn no_color_and_dumb_terminals_get_no_colours() {
        assert!(color_allowed(true, None, Some("xterm")));
        assert!(color_allowed(true, Some(""), None));
        assert!(!color_allowed(true, Some("1"), None));
        assert!(!color_allowed(true, None, Some("dumb")));
        assert!(!color_allowed(false, None, None));
        assert_eq!(paint("x", Style::Red, false), "x");
        assert_eq!(paint("x", Style::Red, true), "\x1b[31mx\x1b[0m");
    }

    #[test]
    fn utc_timestamps_parse() {
        assert_eq!(parse_utc("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_utc("2000-03-01T00:00:00.000Z"), Some(951_868_800));
        assert_eq!(parse_utc("2026-11-23T19:39:17.298Z"), Some(1_795_462_757));
        assert_eq!(parse_utc("2026-11-23 19:39:17"), None);
        assert_eq!(parse_utc("2026-13-23T19:39:17Z"), None);
    }

    #[test]
    fn sizes_read_well() {
        assert_eq!(bytes(&serde_json::json!(812)), "812 B");
        assert_eq!(bytes(&serde_json::json!(3500)), "3.4 KiB");
        assert_eq!(bytes(&serde_json::json!(1_048_576)), "1.0 MiB");
        assert_eq!(bytes(&Value::Null), "-");
    }

    #[test]
    fn ages_and_durations_read_well() {
        let now = parse_utc("2026-11-23T12:00:00Z").unwrap();
        assert_eq!(age(&json!("2026-11-23T11:59:55.000Z"), now), "5s ago");
        assert_eq!(age(&json!("2026-11-23T11:57:00.000Z"), now), "3m ago");
        assert_eq!(age(&json!("2026-11-23T10:00:00.000Z"), now), "2h ago");
        assert_eq!(age(&json!("2026-11-19T12:00:00.000Z"), now), "4d ago");
        assert_eq!(age(&json!("2025-01-01T00:00:00.000Z"), now), "2025-01-01");
        assert_eq!(age(&json!(null), now), "-");
        assert_eq!(timestamp(&json!("2026-11-23T19:39:17.298Z")), "2026-11-23 19:39:17 UTC");
        assert_eq!(duration(&json!(0.559)), "0.56 ms");
        assert_eq!(duration(&json!(12.34)), "12.3 ms");
        assert_eq!(duration(&json!(1520.0)), "1.52 s");
        assert_eq!(duration(&json!(125_000.0)), "2m 05s");
        assert_eq!(duration(&json!(null)), "-");
    }
}
