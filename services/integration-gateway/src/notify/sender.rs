//! Sending one notification over HTTP(S): a signed generic webhook, a WeCom or DingTalk group
//! robot's `text` message. No transaction is open while it runs.

use std::sync::Arc;

use chrono::Utc;
use serde_json::{json, Value};

use super::{Due, SEND_TIMEOUT};
use crate::settings::{Subscription, SubscriptionKind};

/// The text a group robot shows.
fn robot_text(topic: &str, message: &Value) -> String {
    let text = |key: &str| match message.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => String::new(),
    };
    match topic {
        "complaint.escalated" => format!(
            "【投诉升级 Complaint escalated】{} → {} (level {}) at {}",
            text("complaint_id"),
            text("to"),
            text("level"),
            text("at")
        ),
        "complaint.sla_breached" => format!(
            "【投诉超时 SLA breached】{}: {} breached ({} of {} min) at {}",
            text("complaint_id"),
            text("clock"),
            text("elapsed_minutes"),
            text("target_minutes"),
            text("at")
        ),
        "callback.lost" => format!(
            "【失访 Callback lost】{}: {} after {} attempts at {}",
            text("callback_id"),
            text("reason"),
            text("attempts"),
            text("at")
        ),
        _ => format!(
            "【回访真实性 Honesty flag】attempt {} by {}: {} at {}",
            text("attempt_id"),
            text("agent_id"),
            text("kind"),
            text("at")
        ),
    }
}

/// Sends one notification over HTTP(S).
#[derive(Clone)]
pub struct Sender {
    tls: tokio_rustls::TlsConnector,
    smtp: Option<callback_kit::config::SmtpRelay>,
}

impl Sender {
    pub fn new(
        tls: Arc<tokio_rustls::rustls::ClientConfig>,
        smtp: Option<callback_kit::config::SmtpRelay>,
    ) -> Self {
        Self {
            tls: tokio_rustls::TlsConnector::from(tls),
            smtp,
        }
    }

    /// The receiver's 2xx status, or why not (no personal data: a status, a transport error).
    pub(super) async fn send(
        &self,
        subscription: &Subscription,
        secret: Option<&[u8]>,
        due: &Due,
    ) -> std::result::Result<u16, String> {
        let message = &due.message;
        let now = Utc::now();
        if subscription.kind == SubscriptionKind::Email {
            let relay = self
                .smtp
                .as_ref()
                .ok_or("no mail relay (CALLBACK_SMTP_URL)")?;
            let text = robot_text(&due.topic, message);
            let mail = super::smtp::Mail {
                to: &subscription.to,
                subject: &text,
                body: &format!(
                    "{text}\n\n{}\n",
                    serde_json::to_string_pretty(message).unwrap_or_default()
                ),
                message_id: &format!("<{}@callback>", due.delivery_id),
                date: now,
            };
            return tokio::time::timeout(SEND_TIMEOUT, super::smtp::send(relay, &self.tls, &mail))
                .await
                .map_err(|_| "timed out".to_owned())?;
        }
        let (url, body, headers) = match subscription.kind {
            SubscriptionKind::Email => unreachable!("sent above"),
            SubscriptionKind::Webhook => {
                let body = message.to_string();
                let mut headers = vec![
                    ("idempotency-key".to_owned(), due.delivery_id.to_string()),
                    ("x-callback-topic".to_owned(), due.topic.clone()),
                ];
                if let Some(secret) = secret {
                    headers.push((
                        crate::webhooks::TIMESTAMP_HEADER.to_owned(),
                        now.timestamp().to_string(),
                    ));
                    headers.push((
                        crate::webhooks::SIGNATURE_HEADER.to_owned(),
                        crate::webhooks::sign(secret, now.timestamp(), body.as_bytes()),
                    ));
                }
                (subscription.url.clone(), body, headers)
            }
            SubscriptionKind::Wecom => {
                let body = json!({"msgtype": "text", "text": {"content": robot_text(&due.topic, message)}}).to_string();
                (
                    subscription.url.clone(),
                    body,
                    vec![("idempotency-key".to_owned(), due.delivery_id.to_string())],
                )
            }
            SubscriptionKind::Dingtalk => {
                let body = json!({"msgtype": "text", "text": {"content": robot_text(&due.topic, message)}}).to_string();
                let url = match secret {
                    None => subscription.url.clone(),
                    Some(secret) => {
                        let millis = now.timestamp_millis();
                        let signature = dingtalk_signature(secret, millis);
                        let separator = if subscription.url.contains('?') {
                            '&'
                        } else {
                            '?'
                        };
                        format!(
                            "{}{separator}timestamp={millis}&sign={signature}",
                            subscription.url
                        )
                    }
                };
                (
                    url,
                    body,
                    vec![("idempotency-key".to_owned(), due.delivery_id.to_string())],
                )
            }
        };
        let (status, response) =
            tokio::time::timeout(SEND_TIMEOUT, self.post(&url, body, &headers))
                .await
                .map_err(|_| "timed out".to_owned())??;
        if !(200..300).contains(&status) {
            return Err(format!("HTTP {status}"));
        }
        // The robots answer 200 with an error code in the body.
        if subscription.kind != SubscriptionKind::Webhook {
            let code = serde_json::from_slice::<Value>(&response)
                .ok()
                .and_then(|v| v.get("errcode").and_then(Value::as_i64));
            if code.is_some_and(|c| c != 0) {
                return Err(format!("robot error code {}", code.unwrap_or_default()));
            }
        }
        Ok(status)
    }

    async fn post(
        &self,
        url: &str,
        body: String,
        headers: &[(String, String)],
    ) -> std::result::Result<(u16, Vec<u8>), String> {
        use http_body_util::BodyExt;
        let uri: http::Uri = url.parse().map_err(|_| "invalid URL".to_owned())?;
        let https = uri.scheme_str() == Some("https");
        let host = uri.host().ok_or("URL without a host")?.to_owned();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let stream = tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| format!("connect: {}", e.kind()))?;
        let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
        let mut request = http::Request::post(path)
            .header(
                http::header::HOST,
                uri.authority().map_or(host.clone(), |a| a.to_string()),
            )
            .header(
                http::header::CONTENT_TYPE,
                "application/json; charset=utf-8",
            )
            .header(http::header::USER_AGENT, "callback-integration-gateway");
        for (name, value) in headers {
            request = request.header(name.as_str(), value.as_str());
        }
        let request = request
            .body(http_body_util::Full::new(bytes::Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        let response = if https {
            let name = tokio_rustls::rustls::pki_types::ServerName::try_from(host.clone())
                .map_err(|_| "invalid host name".to_owned())?;
            let stream = self
                .tls
                .connect(name, stream)
                .await
                .map_err(|e| format!("tls: {}", e.kind()))?;
            exchange(hyper_util::rt::TokioIo::new(stream), request).await?
        } else {
            exchange(hyper_util::rt::TokioIo::new(stream), request).await?
        };
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes().to_vec())
            .unwrap_or_default();
        Ok((status, body))
    }
}

async fn exchange<I>(
    io: I,
    request: http::Request<http_body_util::Full<bytes::Bytes>>,
) -> std::result::Result<http::Response<hyper::body::Incoming>, String>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| format!("http: {e}"))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    sender
        .send_request(request)
        .await
        .map_err(|e| format!("http: {e}"))
}

/// DingTalk's robot signature: base64(HMAC-SHA256(secret, "<millis>\n<secret>")), URL-encoded.
fn dingtalk_signature(secret: &[u8], millis: i64) -> String {
    use base64::Engine;
    use hmac::{Hmac, Mac};
    #[allow(clippy::expect_used)]
    let mut mac =
        Hmac::<sha2::Sha256>::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(format!("{millis}\n").as_bytes());
    mac.update(secret);
    let encoded = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    encoded
        .replace('+', "%2B")
        .replace('/', "%2F")
        .replace('=', "%3D")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn robot_texts_name_the_topic_in_both_languages() {
        let text = robot_text(
            "callback.lost",
            &json!({"callback_id": "c1", "reason": "unreachable", "attempts": 3, "at": "t"}),
        );
        assert!(
            text.contains("失访") && text.contains("Callback lost") && text.contains("c1"),
            "{text}"
        );
    }

    #[test]
    fn dingtalk_signatures_are_url_safe() {
        let signature = dingtalk_signature(b"SEC-secret", 1_764_489_600_000);
        assert!(!signature.contains('+') && !signature.contains('/') && !signature.contains('='));
    }
}
