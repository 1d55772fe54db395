//! The stand-in's listener: serves the API router over HTTP/1.1 on one loopback port,
//! and can go down and come back on the same port.
//!
//! [`Mode::Up`] binds the port (SO_REUSEADDR, so a rebind right after a drop works) and
//! serves; [`Mode::Refusing`] closes the listener and every open connection, so clients
//! see refused connections (as when the service is down); [`Mode::Hanging`] accepts
//! connections and never answers (a client's request timeout). Each mode change carries a
//! generation number, and the loop reports the generation it has applied, so the guard's
//! knobs return only once the change is in force.
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Mode {
    Up,
    Refusing,
    Hanging,
    Shutdown,
}

async fn bind(port: u16) -> TcpListener {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let attempt = TcpSocket::new_v4().and_then(|s| {
            s.set_reuseaddr(true)?;
            s.bind(addr)?;
            s.listen(1024)
        });
        match attempt {
            Ok(l) => return l,
            Err(e) if tokio::time::Instant::now() > deadline => {
                panic!("vast stand-in: cannot bind 127.0.0.1:{port}: {e}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Runs until [`Mode::Shutdown`] (or the mode sender is gone).
pub async fn run(
    port: u16,
    router: Router,
    mut mode: watch::Receiver<(Mode, u64)>,
    applied: watch::Sender<u64>,
) {
    loop {
        let (m, generation) = *mode.borrow_and_update();
        match m {
            Mode::Shutdown => {
                let _ = applied.send(generation);
                return;
            }
            Mode::Refusing => {
                let _ = applied.send(generation);
                if mode.changed().await.is_err() {
                    return;
                }
            }
            Mode::Up => {
                let listener = bind(port).await;
                let _ = applied.send(generation);
                let conns = CancellationToken::new();
                loop {
                    tokio::select! {
                        accepted = listener.accept() => {
                            let Ok((stream, _)) = accepted else { continue };
                            let svc = TowerToHyperService::new(router.clone());
                            let stop = conns.clone();
                            tokio::spawn(async move {
                                let conn = hyper::server::conn::http1::Builder::new()
                                    .serve_connection(TokioIo::new(stream), svc);
                                tokio::select! {
                                    _ = conn => {}
                                    _ = stop.cancelled() => {}
                                }
                            });
                        }
                        changed = mode.changed() => {
                            if changed.is_err() {
                                conns.cancel();
                                return;
                            }
                            break;
                        }
                    }
                }
                // Every open connection goes with the listener.
                conns.cancel();
            }
            Mode::Hanging => {
                let listener = bind(port).await;
                let _ = applied.send(generation);
                let mut held = Vec::new();
                loop {
                    tokio::select! {
                        accepted = listener.accept() => {
                            if let Ok((stream, _)) = accepted {
                                held.push(stream);
                            }
                        }
                        changed = mode.changed() => {
                            if changed.is_err() {
                                return;
                            }
                            break;
                        }
                    }
                }
            }
        }
    }
}
