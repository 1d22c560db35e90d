//! An agentkit server served in this test's process on a free 127.0.0.1 port, stopped when
//! the handle is dropped (`mod inproc;` in a test file).
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use agentkit_server::Server;

/// A served server; dropping it stops the server.
pub struct InProcess {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for InProcess {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// Serve `server` on a free 127.0.0.1 port.
pub async fn serve(server: Server) -> InProcess {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        server
            .serve(listener, async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });
    InProcess {
        base,
        stop: Some(stop),
    }
}
