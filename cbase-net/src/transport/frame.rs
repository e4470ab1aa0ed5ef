//! Authenticated frames on an established session.

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _, BufWriter};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use super::{Role, TransportConfig, TransportError};

/// Bytes of the length prefix.
const HEADER: usize = 4;
/// Bytes of the MAC trailer.
const MAC: usize = 32;
/// The most room the reader adds to its buffer at once: a large frame's
/// buffer grows with the bytes that actually arrive, not with its announced
/// length.
const READ_CHUNK: usize = 64 * 1024;
/// The least room offered to one socket read.
const MIN_READ: usize = 8 * 1024;
/// Write buffer size.
const WRITE_BUFFER: usize = 64 * 1024;
/// A read buffer larger than this is shrunk once it is empty again.
const KEEP_READ_BUFFER: usize = 1024 * 1024;

/// The MAC of frame number `counter` with `payload`.
fn frame_mac(key: &[u8; 32], counter: u64, payload: &[u8]) -> blake3::Hash {
    let mut hasher = blake3::Hasher::new_keyed(key);
    hasher.update(&counter.to_be_bytes());
    hasher.update(payload);
    hasher.finalize()
}

/// The effective frame limit: a frame length must fit in the u32 prefix.
fn effective_max(max_frame: usize) -> usize {
    max_frame.min(u32::MAX as usize)
}

/// An authenticated connection with a known peer, as returned by
/// [`connect`](super::connect) and [`accept`](super::accept).
#[derive(Debug)]
pub struct Session {
    peer: Role,
    reader: FrameReader,
    writer: FrameWriter,
}

impl Session {
    /// Wraps a stream whose handshake is complete.
    pub(super) fn new(
        stream: TcpStream,
        peer: Role,
        send_key: [u8; 32],
        recv_key: [u8; 32],
        config: &TransportConfig,
    ) -> Session {
        let (read, write) = stream.into_split();
        let max_frame = effective_max(config.max_frame);
        Session {
            peer,
            reader: FrameReader {
                half: read,
                buffer: Vec::new(),
                start: 0,
                key: recv_key,
                counter: 0,
                max_frame,
                broken: false,
            },
            writer: FrameWriter {
                half: BufWriter::with_capacity(WRITE_BUFFER, write),
                key: send_key,
                counter: 0,
                max_frame,
                broken: false,
            },
        }
    }

    /// Who is on the other end, as proven in the handshake.
    pub fn peer(&self) -> Role {
        self.peer
    }

    /// Splits the session into its receiving and sending halves, which can be
    /// used from different tasks.
    pub fn split(self) -> (FrameReader, FrameWriter) {
        (self.reader, self.writer)
    }
}

/// The receiving half of a [`Session`].
pub struct FrameReader {
    half: OwnedReadHalf,
    /// Bytes read from the socket; `buffer[start..]` is not yet consumed.
    buffer: Vec<u8>,
    start: usize,
    key: [u8; 32],
    counter: u64,
    max_frame: usize,
    broken: bool,
}

impl std::fmt::Debug for FrameReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameReader")
            .field("frames", &self.counter)
            .field("max_frame", &self.max_frame)
            .field("broken", &self.broken)
            .finish_non_exhaustive()
    }
}

impl FrameReader {
    /// Receives the next frame and returns its payload once its MAC verified.
    ///
    /// Returns [`TransportError::Closed`] when the peer closed the connection
    /// between frames. After any error the reader is unusable: later calls
    /// return `Closed`.
    ///
    /// Cancel safety: this method is cancel safe. If it is cancelled (say as
    /// the losing branch of `tokio::select!`), no frame is lost; the next call
    /// resumes where it stopped.
    pub async fn recv(&mut self) -> Result<Vec<u8>, TransportError> {
        if self.broken {
            return Err(TransportError::Closed);
        }
        let result = self.next_frame().await;
        if result.is_err() {
            self.broken = true;
        }
        result
    }

    /// Receives the next frame and decodes its payload with
    /// [`cbase_core::codec::decode`]. A payload that does not decode makes the
    /// reader unusable, like any other error.
    pub async fn recv_value<T: DeserializeOwned>(&mut self) -> Result<T, TransportError> {
        let payload = self.recv().await?;
        cbase_core::codec::decode(&payload).map_err(|e| {
            self.broken = true;
            TransportError::Decode(e)
        })
    }

    async fn next_frame(&mut self) -> Result<Vec<u8>, TransportError> {
        self.fill(HEADER).await?;
        let mut header = [0u8; HEADER];
        header.copy_from_slice(&self.buffer[self.start..self.start + HEADER]);
        let len = u32::from_be_bytes(header) as usize;
        if len > self.max_frame {
            return Err(TransportError::Oversized {
                len,
                max: self.max_frame,
            });
        }
        let total = HEADER + len + MAC;
        self.fill(total).await?;
        let body = &self.buffer[self.start + HEADER..self.start + total];
        let (payload, mac) = body.split_at(len);
        let mut received = [0u8; MAC];
        received.copy_from_slice(mac);
        // blake3::Hash compares in constant time.
        if blake3::Hash::from_bytes(received) != frame_mac(&self.key, self.counter, payload) {
            return Err(TransportError::BadMac);
        }
        let payload = payload.to_vec();
        self.counter = self.counter.wrapping_add(1);
        self.start += total;
        if self.start == self.buffer.len() {
            self.buffer.clear();
            self.start = 0;
            if self.buffer.capacity() > KEEP_READ_BUFFER {
                self.buffer.shrink_to(READ_CHUNK);
            }
        }
        Ok(payload)
    }

    /// Reads until at least `needed` unconsumed bytes are buffered. Cancel safe:
    /// every byte read is kept in `self.buffer`.
    async fn fill(&mut self, needed: usize) -> Result<(), TransportError> {
        while self.buffer.len() - self.start < needed {
            if self.start > 0 {
                // Only the incomplete rest of one frame moves.
                self.buffer.drain(..self.start);
                self.start = 0;
            }
            let missing = needed - self.buffer.len();
            // At least MIN_READ of room, so small frames arrive in batches,
            // and at most READ_CHUNK beyond what is known to be coming.
            self.buffer.reserve(missing.clamp(MIN_READ, READ_CHUNK));
            let read = self.half.read_buf(&mut self.buffer).await?;
            if read == 0 {
                return Err(if self.buffer.is_empty() {
                    TransportError::Closed
                } else {
                    TransportError::Io(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the peer closed the connection in the middle of a frame",
                    ))
                });
            }
        }
        Ok(())
    }
}

/// The sending half of a [`Session`]. Frames are buffered: call
/// [`FrameWriter::flush`] to push them onto the network.
pub struct FrameWriter {
    half: BufWriter<OwnedWriteHalf>,
    key: [u8; 32],
    counter: u64,
    max_frame: usize,
    broken: bool,
}

impl std::fmt::Debug for FrameWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameWriter")
            .field("frames", &self.counter)
            .field("max_frame", &self.max_frame)
            .field("broken", &self.broken)
            .finish_non_exhaustive()
    }
}

impl FrameWriter {
    /// Queues one frame holding `payload` (it may or may not reach the socket
    /// before [`FrameWriter::flush`]).
    ///
    /// A payload larger than `max_frame` is refused with
    /// [`TransportError::Oversized`] and nothing is written (the writer stays
    /// usable). After any other error, or if a call is cancelled midway, the
    /// writer is unusable: later calls return [`TransportError::Closed`].
    pub async fn send(&mut self, payload: &[u8]) -> Result<(), TransportError> {
        if self.broken {
            return Err(TransportError::Closed);
        }
        if payload.len() > self.max_frame {
            return Err(TransportError::Oversized {
                len: payload.len(),
                max: self.max_frame,
            });
        }
        let len = u32::try_from(payload.len()).map_err(|_| TransportError::Oversized {
            len: payload.len(),
            max: self.max_frame,
        })?;
        let mac = frame_mac(&self.key, self.counter, payload);
        // Stays set if this future is dropped midway: a half-written frame
        // desynchronises the stream for good.
        self.broken = true;
        self.half.write_all(&len.to_be_bytes()).await?;
        self.half.write_all(payload).await?;
        self.half.write_all(mac.as_bytes()).await?;
        self.counter = self.counter.wrapping_add(1);
        self.broken = false;
        Ok(())
    }

    /// Encodes `value` with [`cbase_core::codec::encode`] and queues it as one
    /// frame.
    pub async fn send_value<T: Serialize + ?Sized>(
        &mut self,
        value: &T,
    ) -> Result<(), TransportError> {
        let payload = cbase_core::codec::encode(value)?;
        self.send(&payload).await
    }

    /// Writes every queued frame to the socket.
    pub async fn flush(&mut self) -> Result<(), TransportError> {
        if self.broken {
            return Err(TransportError::Closed);
        }
        self.half.flush().await.map_err(|e| {
            self.broken = true;
            TransportError::Io(e)
        })
    }

    /// Flushes queued frames and closes the sending direction; the peer's
    /// reader then sees [`TransportError::Closed`] after the last frame.
    pub async fn shutdown(&mut self) -> Result<(), TransportError> {
        self.flush().await?;
        self.broken = true;
        self.half.shutdown().await?;
        Ok(())
    }
}
