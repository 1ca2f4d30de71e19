//! Lines in, requests out. [`LineReader`] frames bounded lines: a peer that sends a line
//! longer than [`MAX_LINE`] gets an error for that line and the rest of it is skipped, so one
//! bad client can neither exhaust the supervisor's memory nor desynchronise the stream.
//! [`parse_request`] reads one line strictly: every line gets a request or the error reply
//! it deserves, and nothing a client sends can be read two ways.

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};
use tokio::io::{AsyncBufRead, AsyncBufReadExt};

use super::types::{ErrorKind, Op, Reply};

/// The longest line either side accepts, newline excluded.
pub const MAX_LINE: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LineError {
    #[error("line longer than {max} bytes")]
    TooLong { max: usize },
    #[error("reading the control socket failed")]
    Io(#[from] std::io::Error),
}

/// Reads newline-terminated lines of at most [`MAX_LINE`] bytes.
pub struct LineReader<R> {
    inner: R,
    max: usize,
    /// The line read so far. Kept here rather than in [`LineReader::next_line`]'s future so
    /// that dropping that future (a `select!` that took another branch) loses nothing.
    line: Vec<u8>,
    /// The current line passed `max`: the rest of it is skipped up to its newline.
    too_long: bool,
}

impl<R: AsyncBufRead + Unpin> LineReader<R> {
    pub fn new(inner: R) -> Self {
        Self::with_max(inner, MAX_LINE)
    }

    pub fn with_max(inner: R, max: usize) -> Self {
        Self {
            inner,
            max,
            line: Vec::new(),
            too_long: false,
        }
    }

    /// The next line without its newline, `None` at end of stream. An over-long line is
    /// consumed up to its newline and reported as [`LineError::TooLong`]; the reader stays
    /// usable for the lines after it.
    ///
    /// Cancel safe: the only await is `fill_buf`, which consumes nothing, and what was
    /// consumed before it is kept in the reader, so a `select!` may drop this future and
    /// call it again without losing a byte.
    pub async fn next_line(&mut self) -> Result<Option<Vec<u8>>, LineError> {
        loop {
            let buf = self.inner.fill_buf().await?;
            if buf.is_empty() {
                // End of stream: a final unterminated line still counts.
                if std::mem::take(&mut self.too_long) {
                    return Err(LineError::TooLong { max: self.max });
                }
                let line = std::mem::take(&mut self.line);
                return Ok((!line.is_empty()).then_some(line));
            }
            let found = buf.iter().position(|&b| b == b'\n');
            let chunk = &buf[..found.unwrap_or(buf.len())];
            if !self.too_long {
                if self.line.len() + chunk.len() > self.max {
                    self.too_long = true;
                    self.line = Vec::new();
                } else {
                    self.line.extend_from_slice(chunk);
                }
            }
            let consumed = found.map_or(buf.len(), |i| i + 1);
            self.inner.consume(consumed);
            if found.is_some() {
                if std::mem::take(&mut self.too_long) {
                    return Err(LineError::TooLong { max: self.max });
                }
                return Ok(Some(std::mem::take(&mut self.line)));
            }
        }
    }
}

/// The ops this supervisor knows, for the message about one it does not.
const KNOWN_OPS: &[&str] = &[
    "status", "restart", "revert", "stop", "signal", "watch", "reexec", "logs",
];

/// Parses one request line, or builds the error reply it deserves.
///
/// Strict where two readings could differ, lenient where they cannot: a key given twice is
/// refused (one parser would take the first `"op"`, another the last), `v` must be exactly
/// the integer 1 and `id` a non-negative integer; keys this version does not know are
/// ignored, so that newer clients may add some.
pub fn parse_request(line: &[u8]) -> Result<(u64, Op), Reply> {
    let mut de = serde_json::Deserializer::from_slice(line);
    let value = Strict::deserialize(&mut de)
        .and_then(|Strict(value)| de.end().map(|()| value))
        .map_err(|e| {
            let message = if e.classify() == serde_json::error::Category::Data {
                // The only data error Strict raises: a repeated key.
                format!("{e}; send each key once")
            } else {
                format!("invalid JSON: {e}")
            };
            Reply::error(0, ErrorKind::Malformed, message)
        })?;
    let Value::Object(fields) = value else {
        return Err(Reply::error(
            0,
            ErrorKind::Malformed,
            r#"a request must be a JSON object, like {"v":1,"id":1,"op":"status"}"#,
        ));
    };
    // The id first, so that the errors about the rest can name it when it is valid.
    let id = match fields.get("id") {
        None => Err("missing \"id\"; number each request, like \"id\":1".to_owned()),
        Some(id) => id
            .as_u64()
            .ok_or_else(|| format!("\"id\" must be a non-negative integer, not {id}")),
    };
    let reply_id = *id.as_ref().unwrap_or(&0);
    match fields.get("v") {
        Some(v) if v.as_u64() == Some(u64::from(super::VERSION)) => {}
        Some(v) => {
            return Err(Reply::error(
                reply_id,
                ErrorKind::Version,
                format!(
                    "unsupported protocol version {v}; this supervisor speaks v{0} (\"v\":{0})",
                    super::VERSION
                ),
            ));
        }
        None => {
            return Err(Reply::error(
                reply_id,
                ErrorKind::Malformed,
                format!(
                    "missing \"v\"; this supervisor speaks v{0} (\"v\":{0})",
                    super::VERSION
                ),
            ));
        }
    }
    let id = id.map_err(|message| Reply::error(0, ErrorKind::Malformed, message))?;
    let op_name = match fields.get("op") {
        Some(Value::String(op)) => op.clone(),
        Some(other) => {
            return Err(Reply::error(
                id,
                ErrorKind::Malformed,
                format!("\"op\" must be a string, like \"status\", not {other}"),
            ));
        }
        None => return Err(Reply::error(id, ErrorKind::Malformed, "missing \"op\"")),
    };
    if !KNOWN_OPS.contains(&op_name.as_str()) {
        return Err(Reply::error(
            id,
            ErrorKind::UnknownOp,
            format!(
                "unknown op '{op_name}'; known ops: {}",
                KNOWN_OPS.join(", ")
            ),
        ));
    }
    let op: Op = serde_json::from_value(Value::Object(fields)).map_err(|e| {
        Reply::error(
            id,
            ErrorKind::Malformed,
            format!("invalid '{op_name}' request: {e}"),
        )
    })?;
    Ok((id, op))
}

/// A JSON value whose objects, at every depth, were checked for repeated keys.
/// `serde_json::Value` keeps the last of two equal keys without a word.
struct Strict(Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // Through deserialize_any, so serde_json's nesting limit still applies.
        deserializer.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        // JSON text has no NaN or infinity, so this is never Null in practice.
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(Strict(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut fields = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if fields.contains_key(&key) {
                return Err(de::Error::custom(format_args!("duplicate key \"{key}\"")));
            }
            let Strict(value) = map.next_value()?;
            fields.insert(key, value);
        }
        Ok(Value::Object(fields))
    }
}

#[cfg(test)]
mod tests;
