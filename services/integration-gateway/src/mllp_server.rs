//! The MLLP listener: one task per connection, messages answered one at a time in order (HL7
//! original acknowledgement mode), each ACK written after the fact is committed. Over TLS the
//! sender presents a client certificate of the CA, mapped to a principal that must hold
//! `integration` in the tenant the message's sender belongs to.

use std::sync::Arc;

use callback_kit::Shutdown;
use callback_rules::access::{Principal, Role};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_stream::StreamExt;
use tokio_util::codec::FramedRead;

use crate::app::{Gateway, Handed};
use crate::hl7::{self, Hl7Message, Refusal};
use crate::mapping::MappingError;
use crate::mllp::{frame, MllpCodec};

/// At most this many sender connections at once; more wait to be accepted.
const MAX_CONNECTIONS: usize = 512;

/// Serves MLLP on `listener` until `shutdown`; connections in progress finish their current
/// message.
pub fn spawn(
    gateway: Gateway,
    listener: TcpListener,
    tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    shutdown: Shutdown,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let permits = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
        let acceptor = tls.map(TlsAcceptor::from);
        loop {
            let Ok(permit) = permits.clone().acquire_owned().await else {
                return;
            };
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = shutdown.wait() => return,
            };
            let (stream, _peer) = match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "mllp accept failed");
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let gateway = gateway.clone();
            let acceptor = acceptor.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                let _permit = permit;
                match acceptor {
                    None => serve_connection(gateway, stream, None, shutdown).await,
                    Some(acceptor) => match acceptor.accept(stream).await {
                        Ok(stream) => {
                            let principal = stream
                                .get_ref()
                                .1
                                .peer_certificates()
                                .and_then(|chain| chain.first())
                                .and_then(|der| {
                                    gateway.security().certificate_principal(der.as_ref())
                                })
                                .cloned()
                                .map(Arc::new);
                            serve_connection(gateway, stream, Some(principal), shutdown).await
                        }
                        Err(error) => tracing::info!(%error, "mllp tls handshake failed"),
                    },
                }
            });
        }
    })
}

/// `principal`: `None` on plain TCP; `Some(None)` over TLS with a certificate mapped to nobody.
async fn serve_connection<S>(
    gateway: Gateway,
    stream: S,
    principal: Option<Option<Arc<Principal>>>,
    shutdown: Shutdown,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (read, mut write) = tokio::io::split(stream);
    let mut frames = FramedRead::new(read, MllpCodec::new(gateway.config().mllp_max_frame_bytes));
    loop {
        let next = tokio::select! {
            next = frames.next() => next,
            () = shutdown.wait() => return,
        };
        let message = match next {
            None => return,
            Some(Ok(message)) => message,
            Some(Err(error)) => {
                tracing::warn!(%error, "mllp connection closed");
                return;
            }
        };
        let ack = answer(&gateway, principal.as_ref(), &message).await;
        if write.write_all(&frame(&ack)).await.is_err() || write.flush().await.is_err() {
            return;
        }
    }
}

/// The acknowledgement of one framed message.
pub async fn answer(
    gateway: &Gateway,
    principal: Option<&Option<Arc<Principal>>>,
    bytes: &[u8],
) -> String {
    let now = gateway.now();
    let ack_id = format!("CB{:016X}", rand_id());
    let Ok(text) = std::str::from_utf8(bytes) else {
        let refusal = Refusal::reject(
            102,
            Some("MSH-18"),
            "the message is not UTF-8 (MSH-18 UNICODE UTF-8 is accepted)",
        );
        return hl7::reject_unreadable(&refusal, &ack_id, now);
    };
    let message = match Hl7Message::parse(text) {
        Ok(message) => message,
        Err(refusal) => return hl7::reject_unreadable(&refusal, &ack_id, now),
    };
    let outcome = accept(gateway, principal, &message).await;
    let header = &message.header;
    match &outcome {
        Ok(()) => {
            tracing::info!(message_type = %header.message_type, ack = "AA", "hl7 message accepted")
        }
        Err(refusal) => tracing::info!(
            message_type = %callback_rules::input::excerpt(&header.message_type),
            ack = refusal.code.as_str(),
            reason = %refusal.text,
            "hl7 message refused"
        ),
    }
    hl7::ack(
        header,
        message.separators(),
        outcome.as_ref().map(|_| ()),
        &ack_id,
        now,
    )
}

fn rand_id() -> u64 {
    let id = uuid::Uuid::new_v4();
    let bytes = id.as_bytes();
    u64::from_be_bytes([
        bytes[0], bytes[1], bytes[2], bytes[3], bytes[4], bytes[5], bytes[6], bytes[7],
    ])
}

async fn accept(
    gateway: &Gateway,
    principal: Option<&Option<Arc<Principal>>>,
    message: &Hl7Message<'_>,
) -> Result<(), Refusal> {
    message.check_header()?;
    let header = &message.header;
    let tenant = gateway
        .tenant_of_sender(&header.sending_application, &header.sending_facility)
        .await
        .map_err(|_| Refusal::error("the gateway's database is unavailable; resend later"))?
        .ok_or_else(|| {
            Refusal::reject(
                207,
                Some("MSH-3"),
                "MSH-3/MSH-4: this sending application and facility are not registered to any tenant",
            )
        })?;
    if let Some(principal) = principal {
        let Some(principal) = principal else {
            return Err(Refusal::reject(
                207,
                None,
                "the client certificate is not mapped to a principal",
            ));
        };
        if let Err(refusal) = principal.may(&tenant, &[Role::Integration]) {
            gateway
                .refusals()
                .record(principal, "mllp", Some(&tenant), &refusal.message);
            return Err(Refusal::reject(207, None, refusal.message));
        }
    }
    let published = gateway
        .settings(&tenant)
        .await
        .map_err(|_| Refusal::error("the gateway's database is unavailable; resend later"))?;
    let Some(mapping) = published.settings.hl7_mapping(&header.message_type) else {
        return Err(Refusal::reject(
            200,
            Some("MSH-9"),
            "no mapping for this message type",
        ));
    };
    let fact = mapping
        .apply(message, published.settings.time_zone())
        .map_err(mapping_refusal)?;
    let source = crate::mapping::source_name(
        "hl7",
        &[&header.sending_application, &header.sending_facility],
    );
    match gateway
        .ingest(&tenant, &source, &header.control_id, fact)
        .await
    {
        Handed::Accepted { .. } => Ok(()),
        Handed::Rejected(reason) => Err(Refusal::reject(207, None, reason)),
        Handed::Transient(code, reason) => {
            tracing::warn!(?code, %reason, "hl7 message not committed; the sender will resend");
            Err(Refusal::error(
                "not committed (a service or the database is unavailable); resend later",
            ))
        }
    }
}

/// A mapping fault as the ACK reports it: the segment and field of the first path it read,
/// 101 for a missing value, 103 for a value outside the mapping's table, else 102.
fn mapping_refusal(error: MappingError) -> Refusal {
    let location = error
        .field
        .split_once('(')
        .and_then(|(_, paths)| paths.split([',', ')']).next())
        .map(|path| {
            let path = path.trim();
            let end = path.find(['.', '[']).unwrap_or(path.len());
            path[..end].to_owned()
        });
    let code = if error.reason.contains("missing") {
        101
    } else if error.reason.contains("is not one of") {
        103
    } else {
        102
    };
    Refusal::reject(code, location.as_deref(), error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapping_faults_point_at_the_field() {
        let refusal = mapping_refusal(MappingError::new(
            "subject_id (PID-3.1)",
            "is missing or empty",
        ));
        assert_eq!(
            (refusal.error_code, refusal.location.as_deref()),
            (101, Some("PID-3"))
        );
        let refusal = mapping_refusal(MappingError::new(
            "attributes.visit_type (PV1-2.1)",
            "`X` is not one of E, I, O",
        ));
        assert_eq!(
            (refusal.error_code, refusal.location.as_deref()),
            (103, Some("PV1-2"))
        );
        let refusal = mapping_refusal(MappingError::new(
            "occurred_at (PV1-45.1)",
            "`x` is not a time",
        ));
        assert_eq!(
            (refusal.error_code, refusal.location.as_deref()),
            (102, Some("PV1-45"))
        );
    }
}
