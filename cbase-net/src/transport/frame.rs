//! Authenticated frames on an established session.

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _, BufWriter};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use super::{FrameBudget, Role, TransportConfig, TransportError};

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
                budget: None,
                taken: None,
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
    /// Shared with other connections' readers, if this one's frames count
    /// against a budget ([`FrameReader::share_budget`]).
    budget: Option<FrameBudget>,
    /// What the frame being read took from the budget.
    taken: Option<super::budget::Taken>,
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
    /// Makes every later frame larger than [`FREE_FRAME`](super::FREE_FRAME)
    /// take its size beyond that from `budget` before its buffer grows past
    /// it (waiting while the budget is spent), and give it back once read.
    /// A frame larger than the budget could ever let through is refused as
    /// [`TransportError::Oversized`].
    pub fn share_budget(&mut self, budget: FrameBudget) {
        self.budget = Some(budget);
    }

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
        if let Some(budget) = &self.budget
            && total > super::FREE_FRAME
            && self.taken.is_none()
        {
            if total > budget.largest_frame() {
                return Err(TransportError::Oversized {
                    len,
                    max: budget.largest_frame() - HEADER - MAC,
                });
            }
            self.taken = budget.take(total).await;
        }
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
        if self.taken.take().is_some() {
            // The budget's share goes back with the memory it stood for:
            // what is left of the buffer (the start of the next frames)
            // moves to a small one.
            self.buffer = self.buffer.split_off(self.start);
            self.start = 0;
        } else if self.start == self.buffer.len() {
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
            // Growing geometrically (few copies), and with room for many
            // small frames in one read, but never more than READ_CHUNK past
            // the frame being read, however large: its buffer is its size,
            // not twice.
            let room = missing.clamp(MIN_READ, READ_CHUNK);
            let len = self.buffer.len();
            if self.buffer.capacity() - len < room {
                let grown = (self.buffer.capacity() * 2)
                    .max(len + room)
                    .min(needed.max(len + READ_CHUNK));
                self.buffer.reserve_exact(grown - len);
            }
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::transport::FREE_FRAME;

    /// A connected pair over loopback: what one writes, the other reads.
    async fn pair() -> (FrameWriter, FrameReader) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (connected, accepted) = tokio::join!(TcpStream::connect(address), listener.accept());
        let config = TransportConfig::default();
        let role = Role::Replica(0);
        let (a, b) = ([1; 32], [2; 32]);
        let writing = Session::new(connected.unwrap(), role, a, b, &config);
        let reading = Session::new(accepted.unwrap().0, role, b, a, &config);
        (writing.split().1, reading.split().0)
    }

    async fn send(writer: &mut FrameWriter, len: usize) {
        writer.send(&vec![7; len]).await.unwrap();
        writer.flush().await.unwrap();
    }

    #[tokio::test]
    async fn frames_up_to_the_free_size_need_no_budget_and_one_larger_than_it_can_give_is_refused()
    {
        let (mut writer, mut reader) = pair().await;
        reader.share_budget(FrameBudget::new(0));
        let small = FREE_FRAME - HEADER - MAC;
        send(&mut writer, small).await;
        assert_eq!(reader.recv().await.unwrap().len(), small);
        send(&mut writer, small + 1).await;
        assert!(matches!(
            reader.recv().await,
            Err(TransportError::Oversized { .. })
        ));
    }

    #[tokio::test]
    async fn a_large_frame_waits_while_the_budget_is_taken_and_gives_its_share_back() {
        let (mut writer, mut reader) = pair().await;
        let budget = FrameBudget::new(200 << 10);
        reader.share_budget(budget.clone());
        // Another connection's frame holds 150 KiB of the 200.
        let other = budget.take(FREE_FRAME + (150 << 10)).await.unwrap();
        assert_eq!(budget.available(), 50 << 10);
        let len = FREE_FRAME + (100 << 10);
        send(&mut writer, len).await;
        let mut receiving = Box::pin(reader.recv());
        // It needs 100 KiB and 50 are free: it cannot complete, however
        // long it is given.
        assert!(
            tokio::time::timeout(Duration::from_millis(200), &mut receiving)
                .await
                .is_err()
        );
        drop(other);
        let frame = tokio::time::timeout(Duration::from_secs(20), receiving)
            .await
            .expect("it completes once the budget is free")
            .unwrap();
        assert_eq!(frame.len(), len);
        assert_eq!(budget.available(), 200 << 10, "its share is back");
        assert!(
            reader.buffer.capacity() <= READ_CHUNK,
            "and so is the memory it stood for ({} bytes held)",
            reader.buffer.capacity()
        );
    }

    #[tokio::test]
    async fn a_large_frames_buffer_is_its_size_not_twice() {
        let (mut writer, mut reader) = pair().await;
        let len = 3 << 20;
        let total = HEADER + len + MAC;
        // Sent in pieces, so that the buffer grows as they arrive.
        let sending = tokio::spawn(async move {
            send(&mut writer, len).await;
            writer
        });
        reader.fill(total).await.unwrap();
        assert!(
            reader.buffer.capacity() <= total + READ_CHUNK,
            "a buffer of {} bytes for a frame of {total}",
            reader.buffer.capacity()
        );
        drop(sending.await.unwrap());
        assert_eq!(reader.recv().await.unwrap().len(), len);
    }
}
