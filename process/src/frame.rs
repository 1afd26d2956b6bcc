//! Frames on the worker pipes: JSON length (u32 LE), blob length (u32 LE),
//! the JSON message, the blob. Event keys and values travel in the blob as
//! `[offset, length]` pairs, so they are neither escaped nor parsed as JSON
//! on either side.

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The largest frame weir accepts from a worker (JSON and blob together);
/// a larger one is a protocol error, so one reply cannot exhaust memory.
pub const MAX_FRAME: usize = 256 << 20;

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The pipe closed (the worker exited).
    #[error("the worker closed its pipe")]
    Closed,
    /// Reading failed.
    #[error("reading from the worker failed: {0}")]
    Io(#[from] std::io::Error),
    /// The frame announces more than [`MAX_FRAME`] bytes.
    #[error("the worker sent a frame of {0} bytes (most: {MAX_FRAME})")]
    TooLarge(usize),
}

/// A frame being written: the JSON part, then the blob.
#[derive(Default)]
pub struct FrameBuf {
    /// The JSON message.
    pub json: Vec<u8>,
    /// Bytes the message refers to by offset.
    pub blob: Vec<u8>,
}

impl FrameBuf {
    /// Empties both parts, keeping their capacity.
    pub fn clear(&mut self) {
        self.json.clear();
        self.blob.clear();
    }

    /// Appends `bytes` to the blob; returns their offset.
    pub fn put(&mut self, bytes: &[u8]) -> usize {
        let at = self.blob.len();
        self.blob.extend_from_slice(bytes);
        at
    }
}

/// Writes one frame.
pub async fn write_frame<W: AsyncWriteExt + Unpin>(
    out: &mut W,
    frame: &FrameBuf,
) -> std::io::Result<()> {
    let mut head = [0u8; 8];
    head[..4].copy_from_slice(&(frame.json.len() as u32).to_le_bytes());
    head[4..].copy_from_slice(&(frame.blob.len() as u32).to_le_bytes());
    out.write_all(&head).await?;
    out.write_all(&frame.json).await?;
    if !frame.blob.is_empty() {
        out.write_all(&frame.blob).await?;
    }
    Ok(())
}

/// Reads one frame into `buf` (replacing what it held); returns where the
/// JSON ends: `buf[..at]` is the message, `buf[at..]` the blob.
pub async fn read_frame<R: AsyncReadExt + Unpin>(
    input: &mut R,
    buf: &mut Vec<u8>,
) -> Result<usize, FrameError> {
    let mut head = [0u8; 8];
    if let Err(e) = input.read_exact(&mut head).await {
        return Err(if e.kind() == std::io::ErrorKind::UnexpectedEof {
            FrameError::Closed
        } else {
            FrameError::Io(e)
        });
    }
    let json = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
    let blob = u32::from_le_bytes([head[4], head[5], head[6], head[7]]) as usize;
    let total = json + blob;
    if total > MAX_FRAME {
        return Err(FrameError::TooLarge(total));
    }
    buf.clear();
    buf.resize(total, 0);
    input.read_exact(buf).await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            FrameError::Closed
        } else {
            FrameError::Io(e)
        }
    })?;
    Ok(json)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_frame_round_trips_and_a_huge_one_is_refused() {
        let mut frame = FrameBuf::default();
        frame.json.extend_from_slice(br#"{"t":"x"}"#);
        let at = frame.put(b"hello");
        assert_eq!(at, 0);
        let mut wire = Vec::new();
        write_frame(&mut wire, &frame).await.unwrap();
        let mut buf = Vec::new();
        let end = read_frame(&mut wire.as_slice(), &mut buf).await.unwrap();
        assert_eq!(&buf[..end], br#"{"t":"x"}"#);
        assert_eq!(&buf[end..], b"hello");

        let mut huge = Vec::new();
        huge.extend_from_slice(&(u32::MAX).to_le_bytes());
        huge.extend_from_slice(&0u32.to_le_bytes());
        assert!(matches!(
            read_frame(&mut huge.as_slice(), &mut buf).await,
            Err(FrameError::TooLarge(_))
        ));
        assert!(matches!(
            read_frame(&mut [1u8, 0].as_slice(), &mut buf).await,
            Err(FrameError::Closed)
        ));
    }
}
