//! Bounded line framing. A peer that sends a line longer than [`MAX_LINE`] gets an error for
//! that line and the rest of it is skipped, so one bad client can neither exhaust the
//! supervisor's memory nor desynchronise the stream.

use tokio::io::{AsyncBufRead, AsyncBufReadExt};

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
}

impl<R: AsyncBufRead + Unpin> LineReader<R> {
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            max: MAX_LINE,
        }
    }

    pub fn with_max(inner: R, max: usize) -> Self {
        Self { inner, max }
    }

    /// The next line without its newline, `None` at end of stream. An over-long line is
    /// consumed up to its newline and reported as [`LineError::TooLong`]; the reader stays
    /// usable for the lines after it.
    pub async fn next_line(&mut self) -> Result<Option<Vec<u8>>, LineError> {
        let mut line = Vec::new();
        let mut too_long = false;
        loop {
            let buf = self.inner.fill_buf().await?;
            if buf.is_empty() {
                // End of stream: a final unterminated line still counts.
                if too_long {
                    return Err(LineError::TooLong { max: self.max });
                }
                return Ok((!line.is_empty()).then_some(line));
            }
            let (chunk, found) = match memchr_newline(buf) {
                Some(i) => (&buf[..i], Some(i)),
                None => (buf, None),
            };
            if !too_long {
                if line.len() + chunk.len() > self.max {
                    too_long = true;
                    line = Vec::new();
                } else {
                    line.extend_from_slice(chunk);
                }
            }
            let consumed = found.map_or(buf.len(), |i| i + 1);
            self.inner.consume(consumed);
            if found.is_some() {
                if too_long {
                    return Err(LineError::TooLong { max: self.max });
                }
                return Ok(Some(line));
            }
        }
    }
}

fn memchr_newline(buf: &[u8]) -> Option<usize> {
    buf.iter().position(|&b| b == b'\n')
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::BufReader;

    #[tokio::test]
    async fn over_long_line_is_reported_and_the_next_line_still_reads() {
        let mut input = vec![b'x'; 100];
        input.extend_from_slice(b"\nshort\nlast");
        let mut r = LineReader::with_max(BufReader::with_capacity(8, &input[..]), 10);
        assert!(matches!(
            r.next_line().await,
            Err(LineError::TooLong { max: 10 })
        ));
        assert_eq!(r.next_line().await.unwrap(), Some(b"short".to_vec()));
        assert_eq!(r.next_line().await.unwrap(), Some(b"last".to_vec()));
        assert_eq!(r.next_line().await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_line_of_exactly_the_maximum_is_accepted() {
        let mut input = vec![b'y'; 10];
        input.push(b'\n');
        let mut r = LineReader::with_max(&input[..], 10);
        assert_eq!(r.next_line().await.unwrap(), Some(vec![b'y'; 10]));
    }
}
