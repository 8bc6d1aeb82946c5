//! `\n`-delimited framing, shared by nssocket 0.6 and Node's IPC channel.
//! Splits on 0x0A only (as both JS peers do) and bounds the line length: an
//! over-long line is reported once and discarded up to its newline, so one
//! bad peer message cannot grow the buffer without limit.

use bytes::{Buf, Bytes, BytesMut};

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum LineError {
    #[error("line longer than {0} bytes discarded")]
    TooLong(usize),
}

#[derive(Debug)]
pub struct LineFramer {
    max: usize,
    discarding: bool,
}

impl LineFramer {
    pub fn new(max: usize) -> Self {
        LineFramer {
            max,
            discarding: false,
        }
    }

    /// The rest of an over-long line is being dropped: the bytes buffered
    /// now are its tail, not the start of a line.
    pub fn is_discarding(&self) -> bool {
        self.discarding
    }

    /// Takes the next complete line (without its `\n`) out of `buf`.
    /// `Ok(None)` means more bytes are needed.
    pub fn next_line(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, LineError> {
        loop {
            match memchr(buf) {
                Some(at) => {
                    let line = buf.split_to(at + 1).freeze().slice(..at);
                    if self.discarding {
                        self.discarding = false;
                        continue;
                    }
                    if line.len() > self.max {
                        return Err(LineError::TooLong(self.max));
                    }
                    return Ok(Some(line));
                }
                None if buf.len() > self.max => {
                    buf.advance(buf.len());
                    if self.discarding {
                        return Ok(None);
                    }
                    self.discarding = true;
                    return Err(LineError::TooLong(self.max));
                }
                None => return Ok(None),
            }
        }
    }
}

fn memchr(buf: &[u8]) -> Option<usize> {
    buf.iter().position(|&b| b == b'\n')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_and_waits() {
        let mut f = LineFramer::new(100);
        let mut buf = BytesMut::from(&b"a\nbc\nd"[..]);
        assert_eq!(f.next_line(&mut buf).unwrap().unwrap(), &b"a"[..]);
        assert_eq!(f.next_line(&mut buf).unwrap().unwrap(), &b"bc"[..]);
        assert_eq!(f.next_line(&mut buf).unwrap(), None);
        buf.extend_from_slice(b"\r\n");
        // \r is kept: the JS peers do not strip it either.
        assert_eq!(f.next_line(&mut buf).unwrap().unwrap(), &b"d\r"[..]);
    }

    #[test]
    fn long_lines_are_dropped_then_recovered() {
        let mut f = LineFramer::new(4);
        let mut buf = BytesMut::from(&b"0123456789"[..]);
        assert_eq!(f.next_line(&mut buf), Err(LineError::TooLong(4)));
        assert!(buf.is_empty());
        buf.extend_from_slice(b"abcdefgh");
        assert!(f.is_discarding());
        assert_eq!(f.next_line(&mut buf), Ok(None));
        assert!(buf.is_empty(), "discarded bytes are not kept");
        buf.extend_from_slice(b"xy\nok\n");
        assert_eq!(f.next_line(&mut buf).unwrap().unwrap(), &b"ok"[..]);
        assert!(!f.is_discarding());
        let mut buf = BytesMut::from(&b"toolong\nok\n"[..]);
        assert_eq!(f.next_line(&mut buf), Err(LineError::TooLong(4)));
        assert_eq!(f.next_line(&mut buf).unwrap().unwrap(), &b"ok"[..]);
    }
}
