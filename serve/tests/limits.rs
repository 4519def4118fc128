//! The bounds `hale_serve::serve` promises, over real sockets.

use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::routing::get;
use hale_serve::{Limits, serve};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn start(limits: Limits) -> (std::net::SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = Router::new()
        .route("/", get(|ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>| async move { peer.to_string() }));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve(listener, app, limits, async move {
        let _ = stopped.await;
    }));
    (addr, stop)
}

/// Reads until the server closes the connection, within `deadline`; what was read.
async fn read_to_close(stream: &mut TcpStream, deadline: Duration) -> Option<String> {
    let mut out = Vec::new();
    tokio::time::timeout(deadline, stream.read_to_end(&mut out)).await.ok()?.ok()?;
    Some(String::from_utf8_lossy(&out).into_owned())
}

const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nhost: x\r\n\r\n";

#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_cut_off() {
    let limits = Limits { header_read_timeout: Duration::from_millis(300), ..Limits::default() };
    let (addr, _stop) = start(limits).await;
    let mut slow = TcpStream::connect(addr).await.expect("connect");
    slow.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n").await.expect("write");
    assert!(
        read_to_close(&mut slow, Duration::from_secs(10)).await.is_some(),
        "the server closes a slow-header socket"
    );
    let mut silent = TcpStream::connect(addr).await.expect("connect");
    assert!(read_to_close(&mut silent, Duration::from_secs(10)).await.is_some(), "and a socket that sends nothing");
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed() {
    let limits = Limits { header_read_timeout: Duration::from_millis(300), ..Limits::default() };
    let (addr, _stop) = start(limits).await;
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(REQUEST).await.expect("write");
    let answer = read_to_close(&mut stream, Duration::from_secs(10)).await.expect("closed after going idle");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let local = stream.local_addr().expect("local").to_string();
    assert!(answer.ends_with(&local), "the handler sees the peer's address: {answer}");
}

#[tokio::test]
async fn connections_past_the_cap_wait_until_one_closes() {
    let limits = Limits { max_connections: 2, ..Limits::default() };
    let (addr, _stop) = start(limits).await;
    let first = TcpStream::connect(addr).await.expect("connect");
    let mut second = TcpStream::connect(addr).await.expect("connect");
    // The second is being served: it answers.
    second.write_all(REQUEST).await.expect("write");
    let mut buf = [0u8; 12];
    tokio::time::timeout(Duration::from_secs(10), second.read_exact(&mut buf)).await.expect("answer").expect("read");
    assert_eq!(&buf, b"HTTP/1.1 200");
    // A third is left in the backlog while both stay open.
    let mut third = TcpStream::connect(addr).await.expect("connect");
    third.write_all(REQUEST).await.expect("write");
    let early = tokio::time::timeout(Duration::from_millis(500), third.read_exact(&mut buf)).await;
    assert!(early.is_err(), "a connection over the cap is not served");
    drop(first);
    tokio::time::timeout(Duration::from_secs(10), third.read_exact(&mut buf))
        .await
        .expect("served once a slot frees")
        .expect("read");
    assert_eq!(&buf, b"HTTP/1.1 200");
}

#[tokio::test]
async fn shutdown_stops_accepting_and_ends() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(listener, Router::new(), Limits::default(), async move {
        let _ = stopped.await;
    }));
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(10), server).await.expect("ends").expect("join").expect("ok");
    assert!(TcpStream::connect(addr).await.is_err(), "the listener is closed");
}

#[tokio::test]
async fn a_body_trickled_a_byte_at_a_time_is_cut_off_at_its_deadline() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = Router::new().route(
        "/",
        axum::routing::post(|body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>| async move {
            match body {
                Ok(b) => format!("got {}", b.len()),
                Err(e) => format!("refused: {}", e.body_text()),
            }
        }),
    );
    let limits = Limits { body_timeout: Duration::from_millis(500), ..Limits::default() };
    let (_stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve(listener, app, limits, async move {
        let _ = stopped.await;
    }));
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 1000\r\n\r\n").await.expect("headers");
    // A byte every 100 ms: each read is quick, the whole body never comes.
    let trickle = async {
        for _ in 0..1000 {
            if stream.write_all(b"x").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(3), trickle).await;
    let answer = read_to_close(&mut stream, Duration::from_secs(10)).await.unwrap_or_default();
    assert!(!answer.contains("got 1000"), "{answer}");
    assert!(answer.starts_with("HTTP/1.1 200") && answer.contains("refused"), "{answer}");
}

#[tokio::test]
async fn one_address_cannot_take_every_connection() {
    let limits = Limits { max_connections_per_ip: 2, ..Limits::default() };
    let (addr, _stop) = start(limits).await;
    let _a = TcpStream::connect(addr).await.expect("connect");
    let _b = TcpStream::connect(addr).await.expect("connect");
    let mut c = TcpStream::connect(addr).await.expect("connect");
    assert!(read_to_close(&mut c, Duration::from_secs(10)).await.is_some(), "the third from one address is closed");
    // Another address is still served.
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.bind("127.0.0.2:0".parse().expect("addr")).expect("bind");
    let mut other = socket.connect(addr).await.expect("connect");
    other.write_all(REQUEST).await.expect("write");
    let mut buf = [0u8; 12];
    tokio::time::timeout(Duration::from_secs(10), other.read_exact(&mut buf)).await.expect("answer").expect("read");
    assert_eq!(&buf, b"HTTP/1.1 200");
}
