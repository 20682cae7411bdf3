//! Clients of the integration gateway's non-gRPC listeners, as outside systems are: an MLLP
//! sender (plain TCP or TLS with a client certificate) and an HTTP(S) client, on real sockets.

use std::sync::Arc;
use std::time::Duration;

use callback_integration_gateway::mllp::{frame, MllpCodec};
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use tokio_stream::StreamExt;
use tokio_util::codec::FramedRead;

use crate::test_pki;

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

fn tls_config(client_certificate: bool) -> Arc<ClientConfig> {
    let pki = test_pki();
    let mut roots = RootCertStore::empty();
    for certificate in CertificateDer::pem_slice_iter(pki.ca_pem.as_bytes()) {
        roots.add(certificate.unwrap()).unwrap();
    }
    let builder = ClientConfig::builder_with_provider(Arc::new(
        tokio_rustls::rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    let config = if client_certificate {
        let chain = CertificateDer::pem_slice_iter(pki.harness.cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_slice(pki.harness.key_pem.as_bytes()).unwrap();
        builder.with_client_auth_cert(chain, key).unwrap()
    } else {
        builder.with_no_client_auth()
    };
    Arc::new(config)
}

async fn connect(addr: impl tokio::net::ToSocketAddrs, tls: Option<bool>) -> Box<dyn Stream> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    match tls {
        None => Box::new(tcp),
        Some(client_certificate) => {
            let connector = tokio_rustls::TlsConnector::from(tls_config(client_certificate));
            let name = ServerName::try_from("localhost").unwrap();
            Box::new(connector.connect(name, tcp).await.unwrap())
        }
    }
}

/// An HL7 sender on one MLLP connection.
pub struct MllpClient {
    acks: FramedRead<ReadHalf<Box<dyn Stream>>, MllpCodec>,
    writer: WriteHalf<Box<dyn Stream>>,
}

impl MllpClient {
    /// Plain TCP.
    pub async fn plain(addr: std::net::SocketAddr) -> Self {
        Self::over(connect(addr, None).await)
    }

    /// TLS with the harness's client certificate (`*:integration`).
    pub async fn tls(addr: std::net::SocketAddr) -> Self {
        Self::over(connect(addr, Some(true)).await)
    }

    fn over(stream: Box<dyn Stream>) -> Self {
        let (reader, writer) = tokio::io::split(stream);
        Self {
            acks: FramedRead::new(reader, MllpCodec::new(1 << 20)),
            writer,
        }
    }

    /// Writes bytes as they are (frames split or coalesced by the caller).
    pub async fn write(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).await.unwrap();
        self.writer.flush().await.unwrap();
    }

    /// Frames and sends one message (segments separated by CR).
    pub async fn send(&mut self, message: &str) {
        self.write(&frame(message)).await;
    }

    /// The next acknowledgement.
    pub async fn ack(&mut self) -> String {
        let frame = tokio::time::timeout(Duration::from_secs(30), self.acks.next())
            .await
            .expect("an ACK within 30 s")
            .expect("the connection stays open")
            .unwrap();
        String::from_utf8(frame.to_vec()).unwrap()
    }

    /// Whether the gateway closed the connection (within 10 s).
    pub async fn closed(&mut self) -> bool {
        matches!(
            tokio::time::timeout(Duration::from_secs(10), self.acks.next()).await,
            Ok(None | Some(Err(_)))
        )
    }

    /// Sends one message and reads its acknowledgement.
    pub async fn exchange(&mut self, message: &str) -> String {
        self.send(message).await;
        self.ack().await
    }
}

/// A field of an ACK, e.g. `field(&ack, "MSA", 1)`.
pub fn field(message: &str, segment: &str, number: usize) -> String {
    message
        .split('\r')
        .find(|s| s.starts_with(segment))
        .and_then(|s| {
            let fields: Vec<&str> = s.split('|').collect();
            // MSH-1 is the separator itself: MSH fields are shifted by one.
            let index = if segment == "MSH" { number - 1 } else { number };
            fields.get(index).map(|f| (*f).to_owned())
        })
        .unwrap_or_default()
}

/// An HTTP answer.
pub struct HttpAnswer {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Vec<u8>,
}

impl HttpAnswer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&self.body)))
    }
}

/// One HTTP/1.1 request over a new connection (HTTPS against the tests' CA).
pub async fn http(
    method: &str,
    url: &str,
    headers: &[(&str, String)],
    body: impl Into<Vec<u8>>,
) -> HttpAnswer {
    let uri: http::Uri = url.parse().unwrap();
    let https = uri.scheme_str() == Some("https");
    let stream = connect(
        (uri.host().unwrap(), uri.port_u16().unwrap()),
        https.then_some(false),
    )
    .await;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let mut request = http::Request::builder()
        .method(method)
        .uri(uri.path_and_query().unwrap().as_str())
        .header("host", uri.authority().unwrap().as_str());
    for (name, value) in headers {
        request = request.header(*name, value.as_str());
    }
    let request = request
        .body(http_body_util::Full::new(bytes::Bytes::from(body.into())))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    HttpAnswer {
        status,
        headers,
        body,
    }
}

/// A mail relay that accepts everything and keeps each message's text (headers and body).
#[derive(Clone, Default)]
pub struct SmtpReceiver {
    pub messages: Arc<std::sync::Mutex<Vec<String>>>,
}

impl SmtpReceiver {
    /// Listens on a free loopback port: its address.
    pub async fn start() -> (SmtpReceiver, std::net::SocketAddr) {
        use tokio::io::AsyncBufReadExt;
        let receiver = SmtpReceiver::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let messages = receiver.messages.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let messages = messages.clone();
                tokio::spawn(async move {
                    let (read, mut write) = stream.into_split();
                    let mut lines = tokio::io::BufReader::new(read).lines();
                    write.write_all(b"220 test relay\r\n").await.unwrap();
                    let mut data: Option<String> = None;
                    while let Ok(Some(line)) = lines.next_line().await {
                        if let Some(text) = data.as_mut() {
                            if line == "." {
                                messages.lock().unwrap().push(std::mem::take(text));
                                data = None;
                                write.write_all(b"250 queued\r\n").await.unwrap();
                            } else {
                                text.push_str(&line);
                                text.push('\n');
                            }
                            continue;
                        }
                        let reply: &[u8] = match line.split(' ').next().unwrap_or("") {
                            "EHLO" => b"250-test relay\r\n250 8BITMIME\r\n",
                            "DATA" => {
                                data = Some(String::new());
                                b"354 go on\r\n"
                            }
                            "QUIT" => {
                                write.write_all(b"221 bye\r\n").await.unwrap();
                                return;
                            }
                            _ => b"250 ok\r\n",
                        };
                        write.write_all(reply).await.unwrap();
                    }
                });
            }
        });
        (receiver, addr)
    }
}
