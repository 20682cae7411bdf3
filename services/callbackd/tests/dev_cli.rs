//! `callbackd dev` as a new user runs it: it writes a local CA and a token per role, prints one
//! grpcurl line, and that line's call works as printed: the same CA, the same token file, the
//! same address and request, from a client outside the process. Without a token the same call
//! is refused; health stays open.

#![allow(clippy::unwrap_used)]

use std::process::Stdio;
use std::time::Duration;

use callback_testkit::TestDb;
use tokio::io::{AsyncBufReadExt, BufReader};

/// Four free loopback ports.
fn free_ports() -> Vec<u16> {
    let listeners: Vec<std::net::TcpListener> = (0..4)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

/// The value after `flag` in a shell-like line (`-cacert PATH`).
fn after<'a>(line: &'a str, flag: &str) -> &'a str {
    line.split_whitespace()
        .skip_while(|word| *word != flag)
        .nth(1)
        .unwrap_or_else(|| panic!("no {flag} in {line}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_printed_grpcurl_line_works_and_nothing_works_without_credentials() {
    let db = TestDb::new().await;
    let dir = std::env::temp_dir().join(format!("callbackd-dev-{}", std::process::id()));
    let ports = free_ports();
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_callbackd"));
    command
        .arg("dev")
        .env("DATABASE_URL", db.url())
        .env("CALLBACK_DEV_CREDENTIALS_DIR", &dir)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    for (var, port) in [
        "CALLBACK_SCHEDULING_ADDR",
        "CALLBACK_CALL_LOGGING_ADDR",
        "CALLBACK_COMPLAINT_ROUTING_ADDR",
        "CALLBACK_ANALYTICS_ADDR",
    ]
    .into_iter()
    .zip(&ports)
    {
        command.env(var, format!("127.0.0.1:{port}"));
    }
    let mut child = command.spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.trim_start().starts_with("grpcurl") {
                return line;
            }
        }
        panic!("no grpcurl line printed");
    })
    .await
    .unwrap();

    // What the line does: TLS against the printed CA, the token file's token, the request.
    let ca = std::fs::read(after(&line, "-cacert")).unwrap();
    let token_file = line
        .split("$(cat ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .unwrap();
    let token = std::fs::read_to_string(token_file).unwrap();
    let request: serde_json::Value = serde_json::from_str(
        line.split(" -d '")
            .nth(1)
            .and_then(|rest| rest.split('\'').next())
            .unwrap(),
    )
    .unwrap();
    let words: Vec<&str> = line.split_whitespace().collect();
    let (addr, method) = (words[words.len() - 2], words[words.len() - 1]);
    assert_eq!(method, "callback.v1.Scheduling/ListCallbacks");
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(ca));
    let channel =
        callback_kit::grpc::channel_with_config(&format!("https://{addr}"), Some(tls)).unwrap();
    let list = callback_proto::v1::ListCallbacksRequest {
        tenant_id: request["tenant_id"].as_str().unwrap().into(),
        view: request["view"].as_str().unwrap().into(),
        ..Default::default()
    };
    // The services may still be starting.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut anonymous =
        callback_proto::v1::scheduling_client::SchedulingClient::new(channel.clone());
    loop {
        match anonymous.list_callbacks(list.clone()).await {
            Err(status) if status.code() == tonic::Code::Unauthenticated => break,
            other => {
                assert!(tokio::time::Instant::now() < deadline, "{other:?}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    let bearer: tonic::metadata::MetadataValue<_> =
        format!("Bearer {}", token.trim()).parse().unwrap();
    let mut client = callback_proto::v1::scheduling_client::SchedulingClient::with_interceptor(
        channel.clone(),
        move |mut request: tonic::Request<()>| {
            request
                .metadata_mut()
                .insert("authorization", bearer.clone());
            Ok(request)
        },
    );
    client.list_callbacks(list).await.unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    health
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .unwrap();
    // Every role has its token.
    for role in [
        "admin",
        "supervisor",
        "integration",
        "middleware",
        "agent",
        "handler",
        "bi",
    ] {
        assert!(
            dir.join("tokens").join(format!("{role}.jwt")).exists(),
            "{role}"
        );
    }
    child.kill().await.unwrap();
}

/// `--help`, alone or after any command, lists every command and every environment variable.
#[test]
fn help_lists_every_command_and_variable() {
    for args in [
        &["--help"][..],
        &["dev", "--help"],
        &["rebuild", "-h"],
        &["migrate", "--help"],
    ] {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_callbackd"))
            .args(args)
            .output()
            .unwrap();
        assert!(output.status.success(), "{args:?}");
        let text = String::from_utf8(output.stdout).unwrap();
        for command in [
            "dev",
            "demo",
            "serve SERVICE",
            "migrate",
            "rebuild SERVICE",
            "rewrap-keys",
            "credentials DIR",
            "health URL",
        ] {
            assert!(text.contains(command), "{args:?}: {command} missing");
        }
        for variable in callback_kit::config::VARIABLES {
            assert!(text.contains(variable), "{args:?}: {variable} missing");
        }
        for kind in callback_kit::ServiceKind::ALL {
            assert!(
                text.contains(&kind.addr_var()) && text.contains(&kind.url_var()),
                "{args:?}"
            );
        }
    }
}
