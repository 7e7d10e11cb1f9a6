//! Frames over quinn streams: reading one frame (bounded before anything is allocated) and
//! writing frames and entries. The only place that turns stream errors into
//! [`ReplicationError`]s.

use std::net::SocketAddr;

use quinn::{ReadExactError, RecvStream, SendStream};

use crate::format::Entry;
use crate::replication::error::ReplicationError;
use crate::replication::frame::{
    FRAME_HEADER_LEN, Frame, FrameHeader, PROOF_LEN, encode_entry_header,
};

/// Reads the next frame. A stream that ends cleanly between frames is `Closed`.
///
/// # Errors
/// `Closed` at the end of the stream, `Frame` for invalid bytes (the stream is unusable
/// after it), `Connection` if the connection failed.
pub(crate) async fn read_frame(
    recv: &mut RecvStream,
    peer: SocketAddr,
) -> Result<Frame, ReplicationError> {
    let mut header_bytes = [0u8; FRAME_HEADER_LEN];
    read_exact(recv, &mut header_bytes, peer).await?;
    let header = FrameHeader::decode(&header_bytes)
        .map_err(|source| ReplicationError::Frame { peer, source })?;
    // Bounded per kind by `FrameHeader::decode`, so this allocation is too.
    let mut body = vec![0u8; header.body_len];
    read_exact(recv, &mut body, peer).await?;
    Frame::decode_body(header.kind, body).map_err(|source| ReplicationError::Frame { peer, source })
}

async fn read_exact(
    recv: &mut RecvStream,
    buf: &mut [u8],
    peer: SocketAddr,
) -> Result<(), ReplicationError> {
    match recv.read_exact(buf).await {
        Ok(()) => Ok(()),
        Err(ReadExactError::FinishedEarly(_)) => Err(ReplicationError::Closed { peer }),
        Err(ReadExactError::ReadError(error)) => Err(read_error(error, peer)),
    }
}

fn read_error(error: quinn::ReadError, peer: SocketAddr) -> ReplicationError {
    match error {
        quinn::ReadError::ConnectionLost(source) => ReplicationError::Connection { peer, source },
        _ => ReplicationError::Closed { peer },
    }
}

fn write_error(error: quinn::WriteError, peer: SocketAddr) -> ReplicationError {
    match error {
        quinn::WriteError::ConnectionLost(source) => ReplicationError::Connection { peer, source },
        _ => ReplicationError::Closed { peer },
    }
}

/// Writes one frame.
///
/// # Errors
/// `Connection` or `Closed` if the stream cannot take it.
pub(crate) async fn write_frame(
    send: &mut SendStream,
    frame: &Frame,
    peer: SocketAddr,
) -> Result<(), ReplicationError> {
    send.write_all(&frame.to_bytes())
        .await
        .map_err(|error| write_error(error, peer))
}

/// Writes one entry frame without copying its payload into a frame buffer; returns the bytes
/// written.
///
/// # Errors
/// `Connection` or `Closed` if the stream cannot take it.
pub(crate) async fn write_entry(
    send: &mut SendStream,
    entry: &Entry,
    peer: SocketAddr,
) -> Result<u64, ReplicationError> {
    let header = encode_entry_header(entry.epoch, entry.lsn, entry.payload.len());
    send.write_all(&header)
        .await
        .map_err(|error| write_error(error, peer))?;
    send.write_all(&entry.payload)
        .await
        .map_err(|error| write_error(error, peer))?;
    Ok((header.len() + entry.payload.len()) as u64)
}

/// Reads the peer's `Hello` and returns its proof.
///
/// # Errors
/// As [`read_frame`]; `Protocol` if the first frame is not a `Hello`.
pub(crate) async fn read_hello(
    recv: &mut RecvStream,
    peer: SocketAddr,
) -> Result<Option<[u8; PROOF_LEN]>, ReplicationError> {
    match read_frame(recv, peer).await? {
        Frame::Hello { proof } => Ok(proof),
        other => Err(ReplicationError::Protocol {
            peer,
            kind: other.kind(),
            expected: "a hello first",
        }),
    }
}
