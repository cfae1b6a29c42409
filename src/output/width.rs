//! Fitting output to the terminal: every table is arranged to the width of the terminal
//! (or `COLUMNS`, which wins, so pipes and tests can ask for a width), and text lines are
//! shortened below [`WIDE`] columns.

use comfy_table::{presets, ContentArrangement, Table};

/// Text lines narrower than this use the compact packet line.
pub const WIDE: usize = 100;

/// The width to fit: `COLUMNS` when set to a number, else the terminal's when stdout is
/// one; `None` (no limit) for a pipe or a file.
pub fn columns() -> Option<usize> {
    if let Some(n) = std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.trim().parse::<usize>().ok())
        .filter(|&n| n > 0)
    {
        return Some(n);
    }
    // comfy-table asks the terminal (stdout) itself.
    Table::new().width().map(usize::from)
}

/// A table in the house style, arranged to fit [`columns`].
pub fn table<S: ToString>(header: impl IntoIterator<Item = S>) -> Table {
    let mut t = Table::new();
    t.load_preset(presets::UTF8_FULL_CONDENSED);
    t.set_content_arrangement(ContentArrangement::Dynamic);
    if let Some(w) = columns() {
        t.set_width(w.min(usize::from(u16::MAX)) as u16);
    }
    t.set_header(header.into_iter().map(|h| h.to_string()));
    t
}

/// `s` cut to `width` characters (not bytes), the last one `…` when something was cut.
pub fn fit(s: &str, width: usize) -> std::borrow::Cow<'_, str> {
    if width == 0 || s.chars().count() <= width {
        return s.into();
    }
    let mut out: String = s.chars().take(width - 1).collect();
    out.push('…');
    out.into()
}

/// A line of prose wrapped at spaces to [`columns`] (continuations indented by two);
/// unchanged when there is no limit.
pub fn wrap(line: &str) -> String {
    match columns() {
        Some(w) => wrap_to(line, w),
        None => line.to_string(),
    }
}

fn wrap_to(line: &str, width: usize) -> String {
    let mut out = String::new();
    let mut len = 0;
    for word in line.split(' ') {
        let n = word.chars().count();
        if len > 0 && len + 1 + n > width {
            out.push_str("\n  ");
            len = 2;
        } else if len > 0 {
            out.push(' ');
            len += 1;
        }
        out.push_str(word);
        len += n;
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn wrap_breaks_at_spaces() {
        assert_eq!(super::wrap_to("aaa bbb ccc", 7), "aaa bbb\n  ccc");
        assert_eq!(super::wrap_to("aaa bbb", 80), "aaa bbb");
    }

    #[test]
    fn fit_counts_characters() {
        assert_eq!(super::fit("abcdef", 10), "abcdef");
        assert_eq!(super::fit("abcdef", 4), "abc…");
        assert_eq!(super::fit("ééééé", 3), "éé…");
    }
}
