//! The filter language: tokens with their columns, and a recursive-descent parser into
//! [`Expr`]. Errors say what was expected and where (1-based column, in characters).

use super::field::{Field, Kind};

/// A parse or compile error, with the column it points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterError {
    pub message: String,
    pub column: usize,
}

impl std::fmt::Display for FilterError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} at column {}", self.message, self.column)
    }
}

impl std::error::Error for FilterError {}

fn err<T>(column: usize, message: impl Into<String>) -> Result<T, FilterError> {
    Err(FilterError {
        message: message.into(),
        column,
    })
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    LParen,
    RParen,
    LBrace,
    RBrace,
    Comma,
    DotDot,
    And,
    Or,
    Not,
    Op(Cmp),
    /// A quoted string (escapes resolved).
    Quoted(String),
    /// A bare word: field name, number, address, keyword or unquoted value.
    Word(String),
}

impl Tok {
    fn show(&self) -> String {
        match self {
            Tok::LParen => "'('".into(),
            Tok::RParen => "')'".into(),
            Tok::LBrace => "'{'".into(),
            Tok::RBrace => "'}'".into(),
            Tok::Comma => "','".into(),
            Tok::DotDot => "'..'".into(),
            Tok::And => "'&&'".into(),
            Tok::Or => "'||'".into(),
            Tok::Not => "'!'".into(),
            Tok::Op(c) => format!("'{}'", c.symbol()),
            Tok::Quoted(s) => format!("\"{s}\""),
            Tok::Word(w) => format!("'{w}'"),
        }
    }
}

/// Comparison operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl Cmp {
    pub fn symbol(self) -> &'static str {
        match self {
            Cmp::Eq => "==",
            Cmp::Ne => "!=",
            Cmp::Lt => "<",
            Cmp::Le => "<=",
            Cmp::Gt => ">",
            Cmp::Ge => ">=",
        }
    }
}

/// Characters of a bare word: names, numbers, addresses (v4 and v6), enum values.
fn word_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '_' | '.' | ':' | '-' | '/' | '+' | '[' | ']')
}

/// Tokens with their 1-based columns.
fn lex(src: &str) -> Result<Vec<(Tok, usize)>, FilterError> {
    let chars: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let col = i + 1;
        let next = chars.get(i + 1).copied();
        let (tok, len) = match (c, next) {
            (c, _) if c.is_whitespace() => {
                i += 1;
                continue;
            }
            ('(', _) => (Tok::LParen, 1),
            (')', _) => (Tok::RParen, 1),
            ('{', _) => (Tok::LBrace, 1),
            ('}', _) => (Tok::RBrace, 1),
            (',', _) => (Tok::Comma, 1),
            ('&', Some('&')) => (Tok::And, 2),
            ('|', Some('|')) => (Tok::Or, 2),
            ('=', Some('=')) => (Tok::Op(Cmp::Eq), 2),
            ('!', Some('=')) => (Tok::Op(Cmp::Ne), 2),
            ('<', Some('=')) => (Tok::Op(Cmp::Le), 2),
            ('>', Some('=')) => (Tok::Op(Cmp::Ge), 2),
            ('<', _) => (Tok::Op(Cmp::Lt), 1),
            ('>', _) => (Tok::Op(Cmp::Gt), 1),
            ('!', _) => (Tok::Not, 1),
            ('~', _) => (Tok::Word("matches".into()), 1),
            ('.', Some('.')) => (Tok::DotDot, 2),
            ('"' | '\'', _) => {
                let quote = c;
                let mut s = String::new();
                let mut j = i + 1;
                loop {
                    match chars.get(j) {
                        None => return err(col, "unterminated string"),
                        Some(&q) if q == quote => break,
                        Some('\\') => {
                            match chars.get(j + 1) {
                                Some('n') => s.push('\n'),
                                Some('t') => s.push('\t'),
                                Some(&e) => s.push(e),
                                None => return err(col, "unterminated string"),
                            }
                            j += 2;
                        }
                        Some(&ch) => {
                            s.push(ch);
                            j += 1;
                        }
                    }
                }
                (Tok::Quoted(s), j + 1 - i)
            }
            (c, _) if word_char(c) => {
                let mut j = i;
                // A word ends before `..` (so `100..200` is a range).
                while j < chars.len()
                    && word_char(chars[j])
                    && !(chars[j] == '.' && chars.get(j + 1) == Some(&'.'))
                {
                    j += 1;
                }
                let w: String = chars[i..j].iter().collect();
                let tok = match w.as_str() {
                    "and" => Tok::And,
                    "or" => Tok::Or,
                    "not" => Tok::Not,
                    "eq" => Tok::Op(Cmp::Eq),
                    "ne" => Tok::Op(Cmp::Ne),
                    "lt" => Tok::Op(Cmp::Lt),
                    "le" => Tok::Op(Cmp::Le),
                    "gt" => Tok::Op(Cmp::Gt),
                    "ge" => Tok::Op(Cmp::Ge),
                    _ => Tok::Word(w),
                };
                (tok, j - i)
            }
            (c, _) => return err(col, format!("unexpected character '{c}'")),
        };
        out.push((tok, col));
        i += len;
    }
    Ok(out)
}

/// A literal as written: quoted or bare, with its column.
#[derive(Debug, Clone, PartialEq)]
pub struct Lit {
    pub text: String,
    pub quoted: bool,
    pub column: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub enum SetItem {
    One(Lit),
    Range(Lit, Lit),
}

/// What is tested about a field.
#[derive(Debug, Clone, PartialEq)]
pub enum Test {
    /// The bare field: present (true for a boolean field only when true).
    Present,
    Cmp(Cmp, Lit),
    Contains(Lit),
    Matches(Lit),
    In(Vec<SetItem>),
}

/// A parsed filter.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    Test {
        field: Field,
        name: String,
        column: usize,
        test: Test,
    },
}

struct Parser {
    toks: Vec<(Tok, usize)>,
    pos: usize,
    /// Column just past the end of the input.
    end: usize,
}

pub fn parse(src: &str) -> Result<Expr, FilterError> {
    let toks = lex(src)?;
    let end = src.chars().count() + 1;
    let mut p = Parser { toks, pos: 0, end };
    if p.toks.is_empty() {
        return err(1, "empty filter");
    }
    let e = p.or()?;
    if let Some((t, col)) = p.peek() {
        return err(
            col,
            format!("unexpected {} after a complete expression", t.show()),
        );
    }
    Ok(e)
}

impl Parser {
    fn peek(&self) -> Option<(Tok, usize)> {
        self.toks.get(self.pos).cloned()
    }
    fn col(&self) -> usize {
        self.toks.get(self.pos).map_or(self.end, |t| t.1)
    }
    fn eat(&mut self, t: &Tok) -> bool {
        if self.toks.get(self.pos).map(|x| &x.0) == Some(t) {
            self.pos += 1;
            true
        } else {
            false
        }
    }
    fn or(&mut self) -> Result<Expr, FilterError> {
        let mut e = self.and()?;
        while self.eat(&Tok::Or) {
            let r = self.operand("'||'", Self::and)?;
            e = Expr::Or(Box::new(e), Box::new(r));
        }
        Ok(e)
    }
    fn and(&mut self) -> Result<Expr, FilterError> {
        let mut e = self.not()?;
        while self.eat(&Tok::And) {
            let r = self.operand("'&&'", Self::not)?;
            e = Expr::And(Box::new(e), Box::new(r));
        }
        Ok(e)
    }
    /// The right side of an operator, with an error naming the operator when missing.
    fn operand(
        &mut self,
        after: &str,
        f: fn(&mut Self) -> Result<Expr, FilterError>,
    ) -> Result<Expr, FilterError> {
        if self.peek().is_none() {
            return err(self.end, format!("expected an expression after {after}"));
        }
        f(self)
    }
    fn not(&mut self) -> Result<Expr, FilterError> {
        if self.eat(&Tok::Not) {
            let e = self.operand("'!'", Self::not)?;
            return Ok(Expr::Not(Box::new(e)));
        }
        self.primary()
    }
    fn primary(&mut self) -> Result<Expr, FilterError> {
        let col = self.col();
        match self.peek() {
            Some((Tok::LParen, _)) => {
                self.pos += 1;
                if self.peek().is_none() {
                    return err(self.end, "expected an expression after '('");
                }
                let e = self.or()?;
                if !self.eat(&Tok::RParen) {
                    return err(
                        self.col(),
                        format!("expected ')' to close the '(' at column {col}"),
                    );
                }
                Ok(e)
            }
            Some((Tok::Word(name), _)) => {
                self.pos += 1;
                let Some(field) = Field::parse(&name) else {
                    return err(col, format!("unknown field '{name}' (see `dissonance dump --help` or the guide for field names)"));
                };
                let test = self.test(&name)?;
                check(&field, &name, &test)?;
                Ok(Expr::Test {
                    field,
                    name,
                    column: col,
                    test,
                })
            }
            Some((t, _)) => err(col, format!("expected a field name, found {}", t.show())),
            None => err(col, "expected a field name"),
        }
    }
    fn test(&mut self, _name: &str) -> Result<Test, FilterError> {
        match self.peek() {
            Some((Tok::Op(op), _)) => {
                self.pos += 1;
                let v = self.value(&format!("'{}'", op.symbol()))?;
                Ok(Test::Cmp(op, v))
            }
            Some((Tok::Word(w), _)) if w == "contains" => {
                self.pos += 1;
                Ok(Test::Contains(self.value("'contains'")?))
            }
            Some((Tok::Word(w), _)) if w == "matches" => {
                self.pos += 1;
                Ok(Test::Matches(self.value("'matches'")?))
            }
            Some((Tok::Word(w), _)) if w == "in" => {
                self.pos += 1;
                self.set()
            }
            _ => Ok(Test::Present),
        }
    }
    fn value(&mut self, after: &str) -> Result<Lit, FilterError> {
        match self.peek() {
            Some((Tok::Quoted(text), column)) => {
                self.pos += 1;
                Ok(Lit {
                    text,
                    quoted: true,
                    column,
                })
            }
            Some((Tok::Word(text), column)) => {
                self.pos += 1;
                Ok(Lit {
                    text,
                    quoted: false,
                    column,
                })
            }
            Some((t, col)) => err(
                col,
                format!("expected a value after {after}, found {}", t.show()),
            ),
            None => err(self.end, format!("expected a value after {after}")),
        }
    }
    /// `{a b c..d}` (commas optional) or a single item `a..b`.
    fn set(&mut self) -> Result<Test, FilterError> {
        let open = self.col();
        if !self.eat(&Tok::LBrace) {
            return Ok(Test::In(vec![self.set_item("'in'")?]));
        }
        let mut items = Vec::new();
        loop {
            if self.eat(&Tok::RBrace) {
                break;
            }
            if self.peek().is_none() {
                return err(
                    self.end,
                    format!("expected '}}' to close the '{{' at column {open}"),
                );
            }
            self.eat(&Tok::Comma);
            if self.eat(&Tok::RBrace) {
                break;
            }
            items.push(self.set_item("'{'")?);
        }
        if items.is_empty() {
            return err(open, "empty set");
        }
        Ok(Test::In(items))
    }
    fn set_item(&mut self, after: &str) -> Result<SetItem, FilterError> {
        let a = self.value(after)?;
        if self.eat(&Tok::DotDot) {
            let b = self.value("'..'")?;
            return Ok(SetItem::Range(a, b));
        }
        Ok(SetItem::One(a))
    }
}

/// Type checks done once, when the filter is compiled: a literal a field can never
/// equal is a mistake worth a message.
fn check(field: &Field, name: &str, test: &Test) -> Result<(), FilterError> {
    let lit_ok = |l: &Lit| -> Result<(), FilterError> {
        match field.kind {
            Kind::Num if super::number(&l.text).is_none() => err(
                l.column,
                format!("{name} is a number; {} is not", show_lit(l)),
            ),
            Kind::Bool if super::boolean(&l.text).is_none() => err(
                l.column,
                format!("{name} is true or false; {} is neither", show_lit(l)),
            ),
            Kind::Addr if super::Net::parse(&l.text).is_none() => err(
                l.column,
                format!(
                    "{name} is an IP address; {} is not an address or address/prefix",
                    show_lit(l)
                ),
            ),
            _ => Ok(()),
        }
    };
    match test {
        Test::Present => Ok(()),
        Test::Cmp(op, l) => {
            if matches!(field.kind, Kind::Bool | Kind::Addr) && !matches!(op, Cmp::Eq | Cmp::Ne) {
                return err(
                    l.column,
                    format!("{name} can only be compared with == or !="),
                );
            }
            lit_ok(l)
        }
        Test::Contains(l) | Test::Matches(l) => {
            if field.kind != Kind::Str {
                let what = if matches!(test, Test::Contains(_)) {
                    "contains"
                } else {
                    "matches"
                };
                return err(
                    l.column,
                    format!("'{what}' needs a text field; {name} is not one"),
                );
            }
            if let Test::Matches(l) = test {
                if let Err(e) = regex::Regex::new(&l.text) {
                    return err(l.column, format!("bad regular expression: {e}"));
                }
            }
            Ok(())
        }
        Test::In(items) => {
            for it in items {
                match it {
                    SetItem::One(l) => lit_ok(l)?,
                    SetItem::Range(a, b) => {
                        if field.kind != Kind::Num {
                            return err(
                                a.column,
                                format!("a range needs a numeric field; {name} is not one"),
                            );
                        }
                        lit_ok(a)?;
                        lit_ok(b)?;
                    }
                }
            }
            Ok(())
        }
    }
}

fn show_lit(l: &Lit) -> String {
    if l.quoted {
        format!("\"{}\"", l.text)
    } else {
        format!("'{}'", l.text)
    }
}
