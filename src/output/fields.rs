//! Field output (`-T fields -e FIELD ... -E OPTION`, and `-F csv`): one line per packet,
//! the chosen fields' values separated, as tshark's `-T fields`. Values are read with
//! the display filter's field accessors ([`crate::dissect::filter::Field`]), so every
//! JSON key is available by its dotted name and no JSON is built.

use std::io::{self, Write};

use crate::dissect::filter::{Field, Subject};

/// How values are quoted (`-E quote=d|s|n`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quote {
    /// Every value in double quotes (`quote=d`), `"` doubled inside.
    Double,
    /// Every value in single quotes (`quote=s`).
    Single,
    /// No quotes (`quote=n`, tshark's default).
    None,
    /// CSV (RFC 4180): quotes only around values holding the separator, a quote or a
    /// line break.
    Minimal,
}

/// The columns and how to write them.
#[derive(Debug, Clone)]
pub struct FieldsSpec {
    pub fields: Vec<(String, Field)>,
    pub separator: String,
    /// Between the values of a field with several (`channels.recipient`).
    pub aggregator: String,
    pub header: bool,
    pub quote: Quote,
}

/// The columns of `-F csv` when no `-e` is given.
pub const DEFAULT_CSV: &[&str] = &[
    "packet",
    "rel",
    "src",
    "src_port",
    "dst",
    "dst_port",
    "direction",
    "type",
    "session",
    "sender",
    "sender_name",
    "seq",
    "text",
    "size",
    "malformed",
];

impl FieldsSpec {
    /// `-T fields`: tab-separated, no header, no quotes (tshark's defaults).
    pub fn tsv(names: &[String]) -> Result<FieldsSpec, String> {
        Ok(FieldsSpec {
            fields: resolve(names)?,
            separator: "\t".into(),
            aggregator: ",".into(),
            header: false,
            quote: Quote::None,
        })
    }

    /// `-F csv`: comma-separated, a header line, quotes where CSV needs them.
    pub fn csv(names: &[String]) -> Result<FieldsSpec, String> {
        let names: Vec<String> = if names.is_empty() {
            DEFAULT_CSV.iter().map(|s| s.to_string()).collect()
        } else {
            names.to_vec()
        };
        Ok(FieldsSpec {
            fields: resolve(&names)?,
            separator: ",".into(),
            aggregator: ";".into(),
            header: true,
            quote: Quote::Minimal,
        })
    }

    /// Applies one `-E NAME=VALUE`: `separator=,` (or `/t`, `/s`), `header=y|n`,
    /// `quote=d|s|n`, `aggregator=;`.
    pub fn option(&mut self, opt: &str) -> Result<(), String> {
        let (k, v) = opt
            .split_once('=')
            .ok_or_else(|| format!("-E {opt}: expected NAME=VALUE, e.g. separator=,"))?;
        let text = |v: &str| match v {
            "/t" => "\t".to_string(),
            "/s" => " ".to_string(),
            v => v.to_string(),
        };
        match k {
            "separator" => self.separator = text(v),
            "aggregator" => self.aggregator = text(v),
            "header" => {
                self.header = match v {
                    "y" | "yes" | "true" => true,
                    "n" | "no" | "false" => false,
                    _ => return Err(format!("-E header={v}: y or n")),
                }
            }
            "quote" => {
                self.quote = match v {
                    "d" => Quote::Double,
                    "s" => Quote::Single,
                    "n" => Quote::None,
                    _ => return Err(format!("-E quote={v}: d, s or n")),
                }
            }
            _ => {
                return Err(format!(
                    "-E {k}: unknown option (separator, aggregator, header, quote)"
                ))
            }
        }
        Ok(())
    }

    /// The header line (field names).
    pub fn write_header(&self, out: &mut impl Write) -> io::Result<()> {
        let mut line = String::new();
        for (i, (name, _)) in self.fields.iter().enumerate() {
            if i > 0 {
                line.push_str(&self.separator);
            }
            self.push_quoted(&mut line, name);
        }
        line.push('\n');
        out.write_all(line.as_bytes())
    }

    /// One packet's line.
    pub fn write_row(&self, out: &mut impl Write, s: &Subject<'_, '_>) -> io::Result<()> {
        let mut line = String::new();
        let mut value = String::new();
        for (i, (_, field)) in self.fields.iter().enumerate() {
            if i > 0 {
                line.push_str(&self.separator);
            }
            value.clear();
            let mut n = 0;
            field.any(s, &mut |v| {
                if n > 0 {
                    value.push_str(&self.aggregator);
                }
                n += 1;
                use std::fmt::Write as _;
                let _ = write!(value, "{v}");
                false
            });
            self.push_quoted(&mut line, &value);
        }
        line.push('\n');
        out.write_all(line.as_bytes())
    }

    fn push_quoted(&self, line: &mut String, v: &str) {
        let q = match self.quote {
            Quote::None => None,
            Quote::Double => Some('"'),
            Quote::Single => Some('\''),
            Quote::Minimal => (v.contains(self.separator.as_str())
                || v.contains(['"', '\n', '\r']))
            .then_some('"'),
        };
        match q {
            None => line.push_str(v),
            Some(q) => {
                line.push(q);
                for c in v.chars() {
                    if c == q {
                        line.push(q);
                    }
                    line.push(c);
                }
                line.push(q);
            }
        }
    }
}

fn resolve(names: &[String]) -> Result<Vec<(String, Field)>, String> {
    if names.is_empty() {
        return Err("-T fields needs at least one -e FIELD".into());
    }
    names
        .iter()
        .map(|n| {
            Field::parse(n)
                .map(|f| (n.clone(), f))
                .ok_or_else(|| format!("-e {n}: unknown field (the JSON keys by dotted name: type, seq, sender_name, channels.recipient, inner.type, ...)"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(spec: &FieldsSpec, values: &[&str]) -> String {
        let mut line = String::new();
        for (i, v) in values.iter().enumerate() {
            if i > 0 {
                line.push_str(&spec.separator);
            }
            spec.push_quoted(&mut line, v);
        }
        line
    }

    #[test]
    fn options_and_quoting() {
        let mut s = FieldsSpec::tsv(&["type".into(), "text".into()]).unwrap();
        assert_eq!(row(&s, &["TextData", "a,b"]), "TextData\ta,b");
        s.option("separator=,").unwrap();
        s.option("quote=d").unwrap();
        assert_eq!(
            row(&s, &["TextData", "say \"hi\""]),
            "\"TextData\",\"say \"\"hi\"\"\""
        );
        s.option("separator=/s").unwrap();
        s.option("quote=n").unwrap();
        assert_eq!(row(&s, &["a", "b"]), "a b");
        let c = FieldsSpec::csv(&[]).unwrap();
        assert_eq!(c.fields.len(), DEFAULT_CSV.len());
        assert_eq!(
            row(&c, &["1", "x,y", "\"q\"", "plain"]),
            "1,\"x,y\",\"\"\"q\"\"\",plain"
        );
        assert!(s.option("header").is_err());
        assert!(s.option("colour=red").is_err());
        assert!(FieldsSpec::tsv(&[]).is_err());
        assert!(FieldsSpec::tsv(&["nope".into()]).is_err());
    }
}
