//! Parsing an HTTP/1.x response head from the bytes read so far.
//!
//! The load client sends one request at a time per connection, so a response
//! is a head followed by exactly `Content-Length` body bytes (or, without
//! that header, a body that runs to the end of the connection).

/// Largest response head accepted; the buffer never grows past it.
pub const MAX_HEAD: usize = 16 * 1024;

/// The parts of a response head the client acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    pub status: u16,
    /// Bytes of status line, headers and the empty line.
    pub head_len: usize,
    /// `None` when the body runs until the server closes the connection.
    pub content_length: Option<u64>,
    /// The server will close the connection after this response.
    pub close: bool,
}

impl Head {
    /// Whether a body follows at all (RFC 9112 §6.3: 1xx, 204 and 304 never
    /// have one).
    pub fn has_body(&self) -> bool {
        !(self.status < 200 || self.status == 204 || self.status == 304)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadError {
    /// Not an HTTP/1.x response, or a head longer than [`MAX_HEAD`].
    Malformed,
    /// `Transfer-Encoding` (chunked): not implemented by this client.
    Chunked,
}

/// Parses the head at the start of `buf`; `Ok(None)` means more bytes are
/// needed.
pub fn parse_head(buf: &[u8]) -> Result<Option<Head>, HeadError> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return if buf.len() >= MAX_HEAD {
            Err(HeadError::Malformed)
        } else {
            Ok(None)
        };
    };
    let head = std::str::from_utf8(&buf[..end]).map_err(|_| HeadError::Malformed)?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().ok_or(HeadError::Malformed)?;
    let (version, rest) = status_line.split_once(' ').ok_or(HeadError::Malformed)?;
    let http_1_0 = match version {
        "HTTP/1.1" => false,
        "HTTP/1.0" => true,
        _ => return Err(HeadError::Malformed),
    };
    let code = rest.split(' ').next().unwrap_or_default();
    if code.len() != 3 {
        return Err(HeadError::Malformed);
    }
    let status: u16 = code.parse().map_err(|_| HeadError::Malformed)?;
    let mut close = http_1_0;
    let mut content_length = None;
    for line in lines {
        let (name, value) = line.split_once(':').ok_or(HeadError::Malformed)?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            let n: u64 = value.parse().map_err(|_| HeadError::Malformed)?;
            if content_length.is_some_and(|m| m != n) {
                return Err(HeadError::Malformed);
            }
            content_length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(HeadError::Chunked);
        } else if name.eq_ignore_ascii_case("connection") {
            for token in value.split(',').map(str::trim) {
                if token.eq_ignore_ascii_case("close") {
                    close = true;
                } else if token.eq_ignore_ascii_case("keep-alive") {
                    close = false;
                }
            }
        }
    }
    let mut head = Head {
        status,
        head_len: end + 4,
        content_length,
        close,
    };
    if !head.has_body() {
        head.content_length = Some(0);
    } else if head.content_length.is_none() {
        // The body ends when the connection does, so it cannot be reused.
        head.close = true;
    }
    Ok(Some(head))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_keep_alive_response_gives_status_length_and_head_size() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
        let head = parse_head(raw).unwrap().unwrap();
        assert_eq!(
            head,
            Head {
                status: 200,
                head_len: raw.len() - 5,
                content_length: Some(5),
                close: false
            }
        );
    }

    #[test]
    fn a_partial_head_needs_more_bytes() {
        assert_eq!(parse_head(b"HTTP/1.1 200 OK\r\nContent-Le"), Ok(None));
    }

    #[test]
    fn connection_close_and_http_1_0_close_the_connection() {
        let close =
            parse_head(b"HTTP/1.1 500 Oops\r\nConnection: close\r\nContent-Length: 0\r\n\r\n");
        assert!(close.unwrap().unwrap().close);
        let old = parse_head(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n");
        assert!(old.unwrap().unwrap().close);
    }

    #[test]
    fn a_body_without_length_runs_to_the_end_of_the_connection() {
        let head = parse_head(b"HTTP/1.1 200 OK\r\n\r\n").unwrap().unwrap();
        assert_eq!(head.content_length, None);
        assert!(head.close);
        let empty = parse_head(b"HTTP/1.1 204 No Content\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(empty.content_length, Some(0));
        assert!(!empty.close);
    }

    #[test]
    fn an_empty_reason_phrase_is_accepted() {
        let head = parse_head(b"HTTP/1.1 299 \r\nContent-Length: 0\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(head.status, 299);
    }

    #[test]
    fn chunked_bodies_are_rejected_clearly() {
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(parse_head(raw), Err(HeadError::Chunked));
    }

    #[test]
    fn garbage_is_malformed() {
        for raw in [
            &b"SSH-2.0-OpenSSH\r\n\r\n"[..],
            b"HTTP/1.1 2000 OK\r\n\r\n",
            b"HTTP/1.1 abc OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n",
        ] {
            assert_eq!(parse_head(raw), Err(HeadError::Malformed), "{raw:?}");
        }
        assert_eq!(parse_head(&[b'a'; MAX_HEAD]), Err(HeadError::Malformed));
    }
}
