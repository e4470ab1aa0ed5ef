//! The signed ephemeral Diffie-Hellman handshake that opens every session.

use cbase_core::codec::{decode, encode};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use x25519_dalek::{PublicKey as DhPublic, StaticSecret};

use super::{Identity, Role, Session, TransportConfig, TransportError};
use crate::config::{ClusterConfig, ReplicaId};
use crate::crypto::{PublicKey, Signature};

/// The version of the wire protocol spoken by this build; peers must match.
/// 3: client batches may travel unsigned, and backups send the primary
/// the digests of those they have. 4: status messages carry a restarted
/// replica's probe and the answer's echo of it, and a replica's answer to
/// a status query says whether it is recovering.
pub const PROTOCOL_VERSION: u16 = 4;

/// The largest handshake message accepted, in bytes.
const HANDSHAKE_MAX: usize = 4096;
/// Signature domain of handshake signatures.
const SIGNATURE_DOMAIN: &str = "cbase handshake v1";
/// Key derivation context of the transcript hash.
const TRANSCRIPT_CONTEXT: &str = "cbase handshake transcript v1";
/// Key derivation context of the initiator-to-responder session key.
const INITIATOR_TO_RESPONDER: &str = "cbase session v1 initiator->responder";
/// Key derivation context of the responder-to-initiator session key.
const RESPONDER_TO_INITIATOR: &str = "cbase session v1 responder->initiator";

/// The first handshake message, sent by both sides.
#[derive(Serialize, Deserialize)]
struct Hello {
    protocol_version: u16,
    role: Role,
    ephemeral: [u8; 32],
    nonce: [u8; 32],
    /// A replica's agreement settings digest (zeros for a client).
    settings: [u8; 32],
}

/// The second handshake message: proof of identity.
#[derive(Serialize, Deserialize)]
struct Auth {
    signature: Signature,
}

/// Which end of the connection signs.
#[derive(Clone, Copy)]
enum Side {
    Initiator,
    Responder,
}

/// Opens a session over `stream` with replica `expect`, proving `me`.
///
/// Fails with [`TransportError::UnknownReplica`] if the cluster file has no
/// replica `expect`, [`TransportError::WrongPeer`] if someone else answers,
/// [`TransportError::BadSignature`] if the peer cannot prove it holds replica
/// `expect`'s key, and [`TransportError::Timeout`] if the handshake takes longer
/// than `config.handshake_timeout`.
pub async fn connect(
    stream: TcpStream,
    me: &Identity,
    expect: ReplicaId,
    cluster: &ClusterConfig,
    config: &TransportConfig,
) -> Result<Session, TransportError> {
    let expected_key = *cluster
        .public_key(expect)
        .ok_or(TransportError::UnknownReplica(expect))?;
    stream.set_nodelay(true)?;
    let handshake = initiate(stream, me, expect, expected_key, config);
    let result = tokio::time::timeout(config.handshake_timeout, handshake)
        .await
        .unwrap_or(Err(TransportError::Timeout));
    if let Err(error) = &result {
        tracing::debug!(%error, "outgoing handshake with replica {expect} failed");
    }
    result
}

/// Completes the handshake of an incoming connection, proving `me` and
/// learning who the peer is ([`Session::peer`]).
///
/// A peer claiming [`Role::Replica`] `j` must prove it holds the key the
/// cluster file lists for `j` ([`TransportError::UnknownReplica`] if there is no
/// such replica, [`TransportError::BadSignature`] if the proof fails); a peer
/// claiming [`Role::Client`] must prove it holds the key it names.
pub async fn accept(
    stream: TcpStream,
    me: &Identity,
    cluster: &ClusterConfig,
    config: &TransportConfig,
) -> Result<Session, TransportError> {
    stream.set_nodelay(true)?;
    let handshake = respond(stream, me, cluster, config);
    let result = tokio::time::timeout(config.handshake_timeout, handshake)
        .await
        .unwrap_or(Err(TransportError::Timeout));
    if let Err(error) = &result {
        tracing::debug!(%error, "incoming handshake failed");
    }
    result
}

async fn initiate(
    mut stream: TcpStream,
    me: &Identity,
    expect: ReplicaId,
    expected_key: PublicKey,
    config: &TransportConfig,
) -> Result<Session, TransportError> {
    let (secret, my_hello) = make_hello(me)?;
    write_message(&mut stream, &my_hello).await?;
    let peer_hello_bytes = read_message(&mut stream).await?;
    let peer_hello = decode_hello(&peer_hello_bytes)?;
    if peer_hello.role != Role::Replica(expect) {
        return Err(TransportError::WrongPeer {
            expected: expect,
            found: peer_hello.role,
        });
    }
    let transcript = transcript_hash(&my_hello, &peer_hello_bytes);
    let shared = agree(&secret, &peer_hello)?;
    drop(secret);

    send_auth(&mut stream, me, &transcript, Side::Initiator).await?;
    let peer_auth = read_auth(&mut stream).await?;
    let signed = auth_message(&transcript, Side::Responder, &peer_hello.role)?;
    if !expected_key.verify(SIGNATURE_DOMAIN, &signed, &peer_auth.signature) {
        return Err(TransportError::BadSignature);
    }
    // Checked once the peer proved who it is (its hello, settings included,
    // is in the transcript it signed).
    same_settings(me, &peer_hello)?;
    let send_key = session_key(INITIATOR_TO_RESPONDER, &shared, &transcript);
    let recv_key = session_key(RESPONDER_TO_INITIATOR, &shared, &transcript);
    Ok(Session::new(
        stream,
        peer_hello.role,
        send_key,
        recv_key,
        config,
    ))
}

async fn respond(
    mut stream: TcpStream,
    me: &Identity,
    cluster: &ClusterConfig,
    config: &TransportConfig,
) -> Result<Session, TransportError> {
    let (secret, my_hello) = make_hello(me)?;
    write_message(&mut stream, &my_hello).await?;
    let peer_hello_bytes = read_message(&mut stream).await?;
    let peer_hello = decode_hello(&peer_hello_bytes)?;
    let peer_key = match peer_hello.role {
        Role::Replica(id) => *cluster
            .public_key(id)
            .ok_or(TransportError::UnknownReplica(id))?,
        Role::Client(key) => key,
    };
    let transcript = transcript_hash(&peer_hello_bytes, &my_hello);
    let shared = agree(&secret, &peer_hello)?;
    drop(secret);

    // The responder proves itself only after the initiator has: a refused
    // initiator then sees the connection close instead of a session that
    // looks established.
    let peer_auth = read_auth(&mut stream).await?;
    let signed = auth_message(&transcript, Side::Initiator, &peer_hello.role)?;
    if !peer_key.verify(SIGNATURE_DOMAIN, &signed, &peer_auth.signature) {
        return Err(TransportError::BadSignature);
    }
    send_auth(&mut stream, me, &transcript, Side::Responder).await?;
    // After proving ourselves, so a peer replica with other settings learns
    // why it is refused (it checks the same, once it has our proof).
    same_settings(me, &peer_hello)?;
    let send_key = session_key(RESPONDER_TO_INITIATOR, &shared, &transcript);
    let recv_key = session_key(INITIATOR_TO_RESPONDER, &shared, &transcript);
    Ok(Session::new(
        stream,
        peer_hello.role,
        send_key,
        recv_key,
        config,
    ))
}

/// Refuses a peer replica that runs other agreement settings than `me`
/// (clients are not checked: they take part in no agreement).
fn same_settings(me: &Identity, peer: &Hello) -> Result<(), TransportError> {
    match (me.role, peer.role) {
        (Role::Replica(_), Role::Replica(id)) if peer.settings != me.settings => {
            Err(TransportError::SettingsMismatch {
                peer: id,
                theirs: crate::crypto::short_hex(&peer.settings).to_string(),
                ours: crate::crypto::short_hex(&me.settings).to_string(),
            })
        }
        _ => Ok(()),
    }
}

/// A fresh ephemeral secret and the encoded hello announcing it.
fn make_hello(me: &Identity) -> Result<(StaticSecret, Vec<u8>), TransportError> {
    let role = me.role;
    let mut random = [0u8; 64];
    getrandom::fill(&mut random).map_err(|e| {
        TransportError::Handshake(format!("no randomness from the operating system: {e}"))
    })?;
    let mut seed = [0u8; 32];
    let mut nonce = [0u8; 32];
    seed.copy_from_slice(&random[..32]);
    nonce.copy_from_slice(&random[32..]);
    random.fill(0);
    // Used for this one handshake only, then dropped (and zeroized).
    let secret = StaticSecret::from(seed);
    seed.fill(0);
    let hello = Hello {
        protocol_version: PROTOCOL_VERSION,
        role,
        ephemeral: DhPublic::from(&secret).to_bytes(),
        nonce,
        settings: me.settings,
    };
    let bytes = encode(&hello)
        .map_err(|e| TransportError::Handshake(format!("cannot encode hello: {e}")))?;
    Ok((secret, bytes))
}

fn decode_hello(bytes: &[u8]) -> Result<Hello, TransportError> {
    let hello: Hello = decode(bytes)
        .map_err(|e| TransportError::Handshake(format!("malformed hello from the peer: {e}")))?;
    if hello.protocol_version != PROTOCOL_VERSION {
        return Err(TransportError::Handshake(format!(
            "the peer speaks protocol version {}, this build speaks {PROTOCOL_VERSION}",
            hello.protocol_version
        )));
    }
    Ok(hello)
}

/// The Diffie-Hellman shared secret with the peer's ephemeral key. Refuses
/// low-order keys, which would make the secret predictable.
fn agree(secret: &StaticSecret, peer: &Hello) -> Result<[u8; 32], TransportError> {
    let shared = secret.diffie_hellman(&DhPublic::from(peer.ephemeral));
    if !shared.was_contributory() {
        return Err(TransportError::Handshake(
            "the peer's ephemeral key is of low order".into(),
        ));
    }
    Ok(shared.to_bytes())
}

/// The hash of both hellos, initiator's first.
fn transcript_hash(initiator_hello: &[u8], responder_hello: &[u8]) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new_derive_key(TRANSCRIPT_CONTEXT);
    for hello in [initiator_hello, responder_hello] {
        hasher.update(&(hello.len() as u64).to_be_bytes());
        hasher.update(hello);
    }
    *hasher.finalize().as_bytes()
}

/// What a side signs: the transcript, which side it is and its role.
fn auth_message(transcript: &[u8; 32], side: Side, role: &Role) -> Result<Vec<u8>, TransportError> {
    let mut message = Vec::with_capacity(80);
    message.extend_from_slice(transcript);
    message.push(match side {
        Side::Initiator => 0,
        Side::Responder => 1,
    });
    let role =
        encode(role).map_err(|e| TransportError::Handshake(format!("cannot encode role: {e}")))?;
    message.extend_from_slice(&role);
    Ok(message)
}

fn session_key(context: &str, shared: &[u8; 32], transcript: &[u8; 32]) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new_derive_key(context);
    hasher.update(shared);
    hasher.update(transcript);
    *hasher.finalize().as_bytes()
}

async fn send_auth(
    stream: &mut TcpStream,
    me: &Identity,
    transcript: &[u8; 32],
    side: Side,
) -> Result<(), TransportError> {
    let message = auth_message(transcript, side, &me.role)?;
    let auth = Auth {
        signature: me.key.sign(SIGNATURE_DOMAIN, &message),
    };
    let bytes =
        encode(&auth).map_err(|e| TransportError::Handshake(format!("cannot encode auth: {e}")))?;
    write_message(stream, &bytes).await
}

async fn read_auth(stream: &mut TcpStream) -> Result<Auth, TransportError> {
    let bytes = read_message(stream).await?;
    decode(&bytes)
        .map_err(|e| TransportError::Handshake(format!("malformed auth from the peer: {e}")))
}

/// Writes one length-prefixed handshake message.
async fn write_message(stream: &mut TcpStream, payload: &[u8]) -> Result<(), TransportError> {
    let len = u32::try_from(payload.len())
        .ok()
        .filter(|&len| len as usize <= HANDSHAKE_MAX)
        .ok_or_else(|| TransportError::Handshake("handshake message too large".into()))?;
    let mut frame = Vec::with_capacity(4 + payload.len());
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(payload);
    stream.write_all(&frame).await?;
    Ok(())
}

/// Reads one length-prefixed handshake message of at most [`HANDSHAKE_MAX`]
/// bytes. Reads exactly its bytes, so frames the peer sends right after the
/// handshake stay in the socket for the session.
async fn read_message(stream: &mut TcpStream) -> Result<Vec<u8>, TransportError> {
    let mut header = [0u8; 4];
    stream.read_exact(&mut header).await.map_err(closed_early)?;
    let len = u32::from_be_bytes(header) as usize;
    if len > HANDSHAKE_MAX {
        return Err(TransportError::Handshake(format!(
            "the peer sent a handshake message of {len} bytes (at most {HANDSHAKE_MAX} are \
             allowed); is it speaking the cbase protocol?"
        )));
    }
    let mut payload = vec![0u8; len];
    stream
        .read_exact(&mut payload)
        .await
        .map_err(closed_early)?;
    Ok(payload)
}

fn closed_early(error: std::io::Error) -> TransportError {
    if error.kind() == std::io::ErrorKind::UnexpectedEof {
        TransportError::Handshake(
            "the peer closed the connection during the handshake (a responder does so when it \
             refuses the identity we claim)"
                .into(),
        )
    } else {
        TransportError::Io(error)
    }
}

#[cfg(test)]
mod fuzz {
    //! The handshake decoders see bytes from anyone who connects: random and
    //! mutated input must be refused with an error, never a panic.

    use super::*;

    #[test]
    fn handshake_decoders_refuse_garbage() {
        let count: usize = std::env::var("FUZZ_INPUTS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(50_000);
        let valid = encode(&Hello {
            protocol_version: PROTOCOL_VERSION,
            role: Role::Replica(1),
            ephemeral: [7; 32],
            nonce: [9; 32],
            settings: [3; 32],
        })
        .expect("hellos encode");
        // A small deterministic generator (xorshift): no extra dependency.
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for i in 0..count {
            let mut bytes = if i % 2 == 0 {
                (0..next() % 200).map(|_| next() as u8).collect::<Vec<u8>>()
            } else {
                valid.clone()
            };
            if !bytes.is_empty() {
                let at = (next() as usize) % bytes.len();
                bytes[at] ^= (next() as u8) | 1;
            }
            let _ = decode_hello(&bytes);
            let _ = decode::<Auth>(&bytes);
        }
    }
}
