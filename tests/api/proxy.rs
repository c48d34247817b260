//! A TCP proxy in front of a test Redis that can cut connections between a
//! request and its reply: with `cut` on, each connection forwards what the
//! client sends (Redis runs it) and is then closed before any reply comes
//! back, so the client never learns the outcome.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub struct Proxy {
    pub port: u16,
    cut: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Listens on a free loopback port and relays to `127.0.0.1:upstream`.
    pub async fn start(upstream: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let cut = Arc::new(AtomicBool::new(false));
        let flag = cut.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(relay(client, upstream, flag.clone()));
            }
        });
        Proxy { port, cut, task }
    }

    /// From now on (`true`), every connection is closed right after it
    /// forwards a request, before the reply; `false` relays normally again.
    pub fn cut(&self, on: bool) {
        self.cut.store(on, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn relay(client: TcpStream, upstream: u16, cut: Arc<AtomicBool>) {
    let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
        return;
    };
    let _ = (client.set_nodelay(true), server.set_nodelay(true));
    let (mut from_client, mut to_client) = client.into_split();
    let (mut from_server, mut to_server) = server.into_split();
    let requests = async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = from_client.read(&mut buf).await?;
            if n == 0 {
                return Ok::<_, std::io::Error>(());
            }
            to_server.write_all(&buf[..n]).await?;
            if cut.load(Ordering::SeqCst) {
                return Ok(());
            }
        }
    };
    let replies = tokio::io::copy(&mut from_server, &mut to_client);
    // Whichever side ends first ends the connection: dropping every half
    // closes both sockets, the client's before a reply to a cut request.
    tokio::select! {
        _ = requests => {}
        _ = replies => {}
    }
}
