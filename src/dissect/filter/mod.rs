//! Display filters (`-Y EXPR`), in the manner of tshark's: comparisons over the fields of
//! the JSON schema by dotted name, combined with `&& || !`. A filter is parsed and
//! type-checked once ([`Filter::compile`]) into a small tree of field reads and
//! comparisons with literals already converted; each packet is then tested against it
//! directly ([`Filter::matches`]), without building its JSON.
//!
//! Semantics (as tshark's): a field may have no value (a VoiceData has no `text`), one, or
//! several (`channels.recipient`, `destinations`). A comparison is true when some value
//! satisfies it; `!=` is true when the field has values and none is equal. Comparisons on
//! a field without values are false, so `!(seq == 5)` differs from `seq != 5`. A bare
//! field is true when it has a value (for a boolean field: a true one).
//!
//! Grammar (`&&` binds tighter than `||`; `!` tightest):
//!
//! ```text
//! expr  := term (("||" | "or") term)*
//! term  := unary (("&&" | "and") unary)*
//! unary := ("!" | "not") unary | "(" expr ")" | test
//! test  := FIELD [ OP value | "contains" value | "matches" value | "in" set ]
//! OP    := == != < <= > >= (or eq ne lt le gt ge); "~" is "matches"
//! set   := "{" item* "}" | item          item := value [".." value]
//! value := "quoted" | 'quoted' | bare word (number, 0xhex, address, name)
//! ```

mod field;
mod parse;

pub use field::{Field, FieldId, Kind, Subject, Value, FIELDS};
pub use parse::{Cmp, FilterError};

use parse::{Expr, Lit, SetItem, Test};
use std::net::IpAddr;

/// A compiled filter.
#[derive(Debug, Clone)]
pub struct Filter {
    root: Node,
    source: String,
}

#[derive(Debug, Clone)]
enum Node {
    And(Box<Node>, Box<Node>),
    Or(Box<Node>, Box<Node>),
    Not(Box<Node>),
    Test(Field, Pred),
}

#[derive(Debug, Clone)]
enum Pred {
    Present,
    Truthy,
    Cmp(Cmp, Const),
    Contains(String),
    Matches(regex::Regex),
    In(Vec<Item>),
}

#[derive(Debug, Clone)]
enum Const {
    Num(f64),
    Str(String),
    Bool(bool),
    Net(Net),
}

#[derive(Debug, Clone)]
enum Item {
    One(Const),
    Range(f64, f64),
}

/// An address, or a network `addr/prefix`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Net {
    addr: IpAddr,
    prefix: u8,
}

impl Net {
    pub fn parse(s: &str) -> Option<Net> {
        let s = s.trim_start_matches('[').trim_end_matches(']');
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p.parse::<u8>().ok()?)),
            None => (s, None),
        };
        let addr: IpAddr = a.parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = p.unwrap_or(max);
        (prefix <= max).then_some(Net { addr, prefix })
    }
    fn contains(&self, ip: IpAddr) -> bool {
        fn masked(bits: u128, len: u32, prefix: u8) -> u128 {
            if prefix == 0 {
                0
            } else {
                bits >> (len - u32::from(prefix))
            }
        }
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                masked(u32::from(n).into(), 32, self.prefix)
                    == masked(u32::from(a).into(), 32, self.prefix)
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                masked(u128::from(n), 128, self.prefix) == masked(u128::from(a), 128, self.prefix)
            }
            _ => false,
        }
    }
}

/// A numeric literal: decimal (integer or not, signed) or 0x hex.
pub(crate) fn number(s: &str) -> Option<f64> {
    if let Some(h) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        return u64::from_str_radix(h, 16).ok().map(|v| v as f64);
    }
    // Rust's float parser accepts "inf" and "nan": not numbers a user means here.
    if !s.starts_with(|c: char| c.is_ascii_digit() || c == '-' || c == '+' || c == '.') {
        return None;
    }
    s.parse::<f64>().ok().filter(|v| v.is_finite())
}

pub(crate) fn boolean(s: &str) -> Option<bool> {
    match s {
        "true" | "1" => Some(true),
        "false" | "0" => Some(false),
        _ => None,
    }
}

impl Filter {
    /// Parses and type-checks `src`.
    pub fn compile(src: &str) -> Result<Filter, FilterError> {
        let e = parse::parse(src)?;
        Ok(Filter {
            root: lower(e)?,
            source: src.to_string(),
        })
    }

    /// The text it was compiled from.
    pub fn source(&self) -> &str {
        &self.source
    }

    pub fn matches(&self, s: &Subject<'_, '_>) -> bool {
        eval(&self.root, s)
    }
}

fn konst(field: &Field, l: &Lit) -> Const {
    // `check` in the parser has already refused what does not convert.
    match field.kind {
        Kind::Num => Const::Num(number(&l.text).unwrap_or(f64::NAN)),
        Kind::Bool => Const::Bool(boolean(&l.text).unwrap_or(false)),
        Kind::Addr => Const::Net(Net::parse(&l.text).unwrap_or(Net {
            addr: IpAddr::from([0, 0, 0, 0]),
            prefix: 32,
        })),
        Kind::Str => Const::Str(l.text.clone()),
    }
}

fn lower(e: Expr) -> Result<Node, FilterError> {
    Ok(match e {
        Expr::And(a, b) => Node::And(Box::new(lower(*a)?), Box::new(lower(*b)?)),
        Expr::Or(a, b) => Node::Or(Box::new(lower(*a)?), Box::new(lower(*b)?)),
        Expr::Not(a) => Node::Not(Box::new(lower(*a)?)),
        Expr::Test {
            field, name, test, ..
        } => {
            let pred = match test {
                Test::Present if field.kind == Kind::Bool => Pred::Truthy,
                Test::Present => Pred::Present,
                Test::Cmp(op, l) => {
                    check_enum(&field, &name, &l)?;
                    Pred::Cmp(op, konst(&field, &l))
                }
                Test::Contains(l) => Pred::Contains(l.text),
                Test::Matches(l) => match regex::Regex::new(&l.text) {
                    Ok(r) => Pred::Matches(r),
                    Err(e) => {
                        return Err(FilterError {
                            message: format!("bad regular expression: {e}"),
                            column: l.column,
                        })
                    }
                },
                Test::In(items) => {
                    let mut out = Vec::with_capacity(items.len());
                    for it in items {
                        out.push(match it {
                            SetItem::One(l) => {
                                check_enum(&field, &name, &l)?;
                                Item::One(konst(&field, &l))
                            }
                            SetItem::Range(a, b) => Item::Range(
                                number(&a.text).unwrap_or(f64::NAN),
                                number(&b.text).unwrap_or(f64::NAN),
                            ),
                        });
                    }
                    Pred::In(out)
                }
            };
            Node::Test(field, pred)
        }
    })
}

/// Fields with a fixed set of values: a literal outside it is a typo, said at compile
/// time rather than matching nothing.
fn check_enum(field: &Field, name: &str, l: &Lit) -> Result<(), FilterError> {
    use crate::codec::MessageType;
    let allowed: Vec<&str> = match field.id {
        FieldId::Type => MessageType::ALL.iter().map(|t| t.name()).collect(),
        FieldId::Direction => vec![
            "client_to_server",
            "server_to_client",
            "peer_to_peer",
            "unknown",
        ],
        FieldId::Transport => vec!["udp", "tcp"],
        FieldId::Variant => vec!["modern", "legacy_6_0"],
        FieldId::ChType | FieldId::RecipientType => vec!["Room", "Player"],
        _ => return Ok(()),
    };
    if allowed.contains(&l.text.as_str()) {
        return Ok(());
    }
    Err(FilterError {
        message: format!(
            "{name} is never '{}'; it is one of: {}",
            l.text,
            allowed.join(", ")
        ),
        column: l.column,
    })
}

fn eval(n: &Node, s: &Subject<'_, '_>) -> bool {
    match n {
        Node::And(a, b) => eval(a, s) && eval(b, s),
        Node::Or(a, b) => eval(a, s) || eval(b, s),
        Node::Not(a) => !eval(a, s),
        Node::Test(field, pred) => test(field, pred, s),
    }
}

fn test(field: &Field, pred: &Pred, s: &Subject<'_, '_>) -> bool {
    match pred {
        Pred::Present => field.any(s, &mut |_| true),
        Pred::Truthy => field.any(s, &mut |v| v == Value::Bool(true)),
        Pred::Cmp(Cmp::Ne, c) => {
            let mut seen = false;
            let equal = field.any(s, &mut |v| {
                seen = true;
                compare(&v, c) == Some(std::cmp::Ordering::Equal)
            });
            seen && !equal
        }
        Pred::Cmp(op, c) => field.any(s, &mut |v| {
            compare(&v, c).is_some_and(|o| match op {
                Cmp::Eq => o.is_eq(),
                Cmp::Lt => o.is_lt(),
                Cmp::Le => o.is_le(),
                Cmp::Gt => o.is_gt(),
                Cmp::Ge => o.is_ge(),
                Cmp::Ne => o.is_ne(),
            })
        }),
        Pred::Contains(needle) => field.any(
            s,
            &mut |v| matches!(v, Value::Str(t) if t.contains(needle.as_str())),
        ),
        Pred::Matches(re) => field.any(s, &mut |v| matches!(v, Value::Str(t) if re.is_match(t))),
        Pred::In(items) => field.any(s, &mut |v| {
            items.iter().any(|it| match it {
                Item::One(c) => compare(&v, c) == Some(std::cmp::Ordering::Equal),
                Item::Range(lo, hi) => matches!(v, Value::Num(x) if *lo <= x && x <= *hi),
            })
        }),
    }
}

/// Orders a value against a literal of its field's kind; `None` when they cannot be
/// ordered (addresses only match or not: `Equal` or `Less`).
fn compare(v: &Value<'_>, c: &Const) -> Option<std::cmp::Ordering> {
    use std::cmp::Ordering;
    match (v, c) {
        (Value::Num(a), Const::Num(b)) => a.partial_cmp(b),
        (Value::Str(a), Const::Str(b)) => Some((*a).cmp(b.as_str())),
        (Value::Bool(a), Const::Bool(b)) => Some(a.cmp(b)),
        (Value::Addr(a), Const::Net(n)) => Some(if n.contains(*a) {
            Ordering::Equal
        } else {
            Ordering::Less
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
