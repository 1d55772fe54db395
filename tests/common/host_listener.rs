//! A listener on the host that kernels reach.

use super::*;

/// An HTTP server on every host address (the kernels' bridge reaches it at its gateway)
/// that answers `hello-from-host`; stops when dropped.
pub struct HostListener {
    pub port: u16,
    stop: Arc<AtomicBool>,
}

impl HostListener {
    pub fn start() -> Self {
        let listener = TcpListener::bind("0.0.0.0:0").expect("bind");
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        std::thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut s, _)) => {
                        let _ = s.set_nonblocking(false);
                        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                        let mut buf = [0u8; 1024];
                        let _ = s.read(&mut buf);
                        let _ = s.write_all(
                            b"HTTP/1.0 200 OK\r\nContent-Length: 15\r\n\r\nhello-from-host",
                        );
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Self { port, stop }
    }
}

impl Drop for HostListener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
