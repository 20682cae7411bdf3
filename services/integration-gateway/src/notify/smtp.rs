//! A small SMTP client for e-mail subscriptions: one message per connection to the
//! deployment's relay (`smtp://` plain, `smtps://` implicit TLS; AUTH PLAIN when credentials are
//! given), UTF-8 text in base64, the delivery id as `Message-ID` so that a resend after a crash
//! is recognisable.

use base64::Engine;
use callback_kit::config::SmtpRelay;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};

/// One e-mail.
pub struct Mail<'a> {
    pub to: &'a [String],
    pub subject: &'a str,
    pub body: &'a str,
    /// Unique per delivery: `<delivery_id@callback>`.
    pub message_id: &'a str,
    pub date: chrono::DateTime<chrono::Utc>,
}

/// Sends `mail` through `relay`: the relay's last reply code, or why not (a code and the
/// relay's short text, never the message).
pub async fn send(
    relay: &SmtpRelay,
    tls: &tokio_rustls::TlsConnector,
    mail: &Mail<'_>,
) -> Result<u16, String> {
    let tcp = tokio::net::TcpStream::connect((relay.host.as_str(), relay.port))
        .await
        .map_err(|e| format!("smtp connect: {}", e.kind()))?;
    if relay.tls {
        let name = tokio_rustls::rustls::pki_types::ServerName::try_from(relay.host.clone())
            .map_err(|_| "smtp: invalid host name".to_owned())?;
        let stream = tls
            .connect(name, tcp)
            .await
            .map_err(|e| format!("smtp tls: {}", e.kind()))?;
        dialogue(BufReader::new(stream), relay, mail).await
    } else {
        dialogue(BufReader::new(tcp), relay, mail).await
    }
}

async fn dialogue<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: BufReader<S>,
    relay: &SmtpRelay,
    mail: &Mail<'_>,
) -> Result<u16, String> {
    expect(&mut stream, 220).await?;
    command(&mut stream, "EHLO callback-integration-gateway", 250).await?;
    if let Some((user, password)) = &relay.credentials {
        let token =
            base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{password}"));
        command(&mut stream, &format!("AUTH PLAIN {token}"), 235).await?;
    }
    command(&mut stream, &format!("MAIL FROM:<{}>", relay.from), 250).await?;
    for to in mail.to {
        command(&mut stream, &format!("RCPT TO:<{to}>"), 250).await?;
    }
    command(&mut stream, "DATA", 354).await?;
    let message = render(relay, mail);
    stream
        .get_mut()
        .write_all(message.as_bytes())
        .await
        .map_err(|e| format!("smtp write: {}", e.kind()))?;
    let code = command(&mut stream, ".", 250).await?;
    let _ = command(&mut stream, "QUIT", 221).await;
    Ok(code)
}

/// The message, headers and base64 body, dot-stuffing needless (base64 has no leading dots).
fn render(relay: &SmtpRelay, mail: &Mail<'_>) -> String {
    let engine = &base64::engine::general_purpose::STANDARD;
    let body = engine.encode(mail.body.as_bytes());
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(76)
        .map(|chunk| std::str::from_utf8(chunk).unwrap_or_default())
        .collect();
    format!(
        "From: <{from}>\r\nTo: {to}\r\nSubject: =?UTF-8?B?{subject}?=\r\nDate: {date}\r\n\
         Message-ID: {id}\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Content-Transfer-Encoding: base64\r\n\r\n{body}\r\n",
        from = relay.from,
        to = mail
            .to
            .iter()
            .map(|t| format!("<{t}>"))
            .collect::<Vec<_>>()
            .join(", "),
        subject = engine.encode(mail.subject.as_bytes()),
        date = mail.date.to_rfc2822(),
        id = mail.message_id,
        body = lines.join("\r\n"),
    )
}

async fn command<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut BufReader<S>,
    line: &str,
    wanted: u16,
) -> Result<u16, String> {
    stream
        .get_mut()
        .write_all(format!("{line}\r\n").as_bytes())
        .await
        .map_err(|e| format!("smtp write: {}", e.kind()))?;
    stream
        .get_mut()
        .flush()
        .await
        .map_err(|e| format!("smtp write: {}", e.kind()))?;
    // The command's verb only: addresses and credentials stay out of errors.
    let verb = line.split([' ', ':']).next().unwrap_or("");
    expect(stream, wanted)
        .await
        .map_err(|e| format!("{e} (after {verb})"))
}

/// Reads a (possibly multi-line) reply and checks its code.
async fn expect<S: AsyncRead + Unpin>(
    stream: &mut BufReader<S>,
    wanted: u16,
) -> Result<u16, String> {
    loop {
        let mut line = String::new();
        let n = stream
            .read_line(&mut line)
            .await
            .map_err(|e| format!("smtp read: {}", e.kind()))?;
        if n == 0 {
            return Err("smtp: the relay closed the connection".into());
        }
        let code: u16 = line
            .get(..3)
            .and_then(|c| c.parse().ok())
            .ok_or("smtp: not a reply")?;
        // `250-...` continues; `250 ...` ends the reply.
        if line.as_bytes().get(3) == Some(&b'-') {
            continue;
        }
        return if code == wanted || (wanted == 250 && code == 251) {
            Ok(code)
        } else {
            let text: String = line[3..].trim().chars().take(80).collect();
            Err(format!("smtp {code} {text}"))
        };
    }
}
