//! SSH into an ssh-profile kernel (`docker-network-ssh`, `DOCKER_SSH`): the agent serves
//! SSH itself (russh) on the kernel's port from `container/port_range`, so any image with a
//! shell works — no SSH server inside it. `ssh -p PORT work@AGENT_HOST` with the kernel's
//! `DOCKER_SSH` key opens a shell in the kernel as its user (a runtime exec, with a
//! terminal when the client asks for one); `ssh … CMD` runs a command.
//!
//! Only that one public key, and only the user `work`: passwords, keyboard-interactive,
//! other keys, agent forwarding, X11 and port forwarding are refused. The listener lives
//! while the kernel does (one task per kernel, and one per connection) and closes when it
//! ends; the port itself is held in the kernel's record like its other host ports, kept
//! across agent restarts and released when the kernel is removed. The agent's host key is
//! made once, at `<scratch root>/.deckhand/ssh_host_ed25519_key`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use russh::keys::PublicKey;
use russh::server::{Auth, ChannelOpenHandle, Handle, Msg, Session};
use russh::{Channel, ChannelId};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use crate::kernel::state::KernelState;
use crate::kernel::supervisor::Supervisor;
use crate::runtime::Exec;

/// The user name the session must log in as.
pub const USER: &str = "work";
const HOST_KEY_FILE: &str = ".deckhand/ssh_host_ed25519_key";

/// The agent's SSH host key: read from the state dir, or made (ed25519) and kept there.
pub fn host_key(state_dir: &std::path::Path) -> Result<russh::keys::PrivateKey, String> {
    let path = state_dir.join(HOST_KEY_FILE);
    if path.exists() {
        return russh::keys::load_secret_key(&path, None)
            .map_err(|e| format!("{}: {e}", path.display()));
    }
    let key = russh::keys::PrivateKey::random(&mut rand::rng(), russh::keys::Algorithm::Ed25519)
        .map_err(|e| e.to_string())?;
    let text = key
        .to_openssh(russh::keys::ssh_key::LineEnding::LF)
        .map_err(|e| e.to_string())?;
    crate::kernel::registry::write_private(&path, text.as_bytes())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(key)
}

impl Supervisor {
    /// Serves SSH for a running ssh-profile kernel on its port until the kernel ends.
    pub(crate) fn serve_ssh(&self, id: &str) {
        let Some((key, port, state)) = self.lock().kernels.get(id).and_then(|e| {
            let key = e.rec.spec.profile.as_ref()?.ssh_key.clone();
            let port = e.rec.ssh_port()?;
            (!key.is_empty()).then(|| (key, port, e.state.subscribe()))
        }) else {
            return;
        };
        let allowed = match PublicKey::from_openssh(&key) {
            Ok(k) => k,
            Err(e) => {
                tracing::warn!(kernel_id = %id, error = %e, "DOCKER_SSH is not a public key");
                return;
            }
        };
        let config = match self.ssh_config() {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(kernel_id = %id, error = %e, "no SSH host key; SSH access is off");
                return;
            }
        };
        let me = self.clone();
        let id = id.to_string();
        self.spawn(async move { me.listen_ssh(id, port, allowed, config, state).await });
    }

    fn ssh_config(&self) -> Result<Arc<russh::server::Config>, String> {
        let mut slot = self.0.ssh_config.lock();
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let key = host_key(&self.0.state_dir)?;
        let config = Arc::new(russh::server::Config {
            keys: vec![key],
            // Only the kernel's key: no password or keyboard-interactive prompt is offered.
            methods: russh::MethodSet::from(&[russh::MethodKind::PublicKey][..]),
            auth_rejection_time: Duration::from_millis(300),
            auth_rejection_time_initial: Some(Duration::ZERO),
            max_auth_attempts: 3,
            inactivity_timeout: Some(Duration::from_secs(3600)),
            keepalive_interval: Some(Duration::from_secs(30)),
            ..Default::default()
        });
        *slot = Some(config.clone());
        Ok(config)
    }

    async fn listen_ssh(
        self,
        id: String,
        port: u16,
        allowed: PublicKey,
        config: Arc<russh::server::Config>,
        mut state: tokio::sync::watch::Receiver<KernelState>,
    ) {
        let listener = match tokio::net::TcpListener::bind(("0.0.0.0", port)).await {
            Ok(l) => l,
            Err(e) => {
                self.note(
                    &id,
                    format!("SSH access: cannot listen on port {port}: {e}"),
                    None,
                );
                return;
            }
        };
        tracing::info!(kernel_id = %id, port, "SSH access open");
        let ended = |s: &KernelState| s.is_final() || *s == KernelState::Uploading;
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = state.wait_for(ended) => break,
            };
            let Ok((stream, peer)) = accepted else {
                continue;
            };
            let handler = Connection {
                sup: self.clone(),
                kernel_id: id.clone(),
                allowed: allowed.clone(),
                channels: HashMap::new(),
            };
            let config = config.clone();
            let mut state = state.clone();
            let kid = id.clone();
            self.spawn(async move {
                tracing::info!(kernel_id = %kid, %peer, "SSH connection");
                let Ok(session) = russh::server::run_stream(config, stream, handler).await else {
                    return;
                };
                // The connection goes with the kernel.
                tokio::select! {
                    _ = session => {}
                    _ = state.wait_for(|s| s.is_final() || *s == KernelState::Uploading) => {}
                }
            });
        }
        tracing::info!(kernel_id = %id, port, "SSH access closed");
    }
}

/// One SSH connection to one kernel.
struct Connection {
    sup: Supervisor,
    kernel_id: String,
    allowed: PublicKey,
    channels: HashMap<ChannelId, Chan>,
}

#[derive(Default)]
struct Chan {
    /// `TERM` and size, once the client asked for a terminal.
    pty: Option<(String, u16, u16)>,
    /// Bytes for the command's stdin.
    input: Option<mpsc::Sender<Vec<u8>>>,
    exec_id: Option<String>,
}

impl Connection {
    fn key_ok(&self, user: &str, key: &PublicKey) -> bool {
        user == USER && key.key_data() == self.allowed.key_data()
    }

    /// Runs `command` in the kernel for `channel`, its output back to the client.
    async fn start(&mut self, channel: ChannelId, command: Vec<String>, session: &mut Session) {
        let chan = self.channels.entry(channel).or_default();
        let mut env = std::collections::BTreeMap::new();
        let tty = chan.pty.clone();
        if let Some((term, ..)) = &tty {
            env.insert("TERM".to_string(), term.clone());
        }
        let req = Exec {
            command,
            env,
            working_dir: String::new(),
            tty: tty.is_some(),
            stdin: true,
        };
        let handle = session.handle();
        let run = match self.sup.exec(&self.kernel_id, req).await {
            Ok(r) => r,
            Err(e) => {
                let _ = session.channel_failure(channel);
                self.sup
                    .spawn(finish(handle, channel, format!("deckhand: {e}\r\n"), 1));
                return;
            }
        };
        let _ = session.channel_success(channel);
        if let Some((_, cols, rows)) = tty {
            let _ = self
                .sup
                .resize_exec(&self.kernel_id, &run.id, cols, rows)
                .await;
        }
        chan.exec_id = Some(run.id.clone());
        if let Some(mut input) = run.input {
            let (tx, mut rx) = mpsc::channel::<Vec<u8>>(64);
            chan.input = Some(tx);
            self.sup.spawn(async move {
                while let Some(bytes) = rx.recv().await {
                    if input.write_all(&bytes).await.is_err() {
                        return;
                    }
                    let _ = input.flush().await;
                }
                let _ = input.shutdown().await;
            });
        }
        let mut output = run.output;
        let exit_code = run.exit_code;
        self.sup.spawn(async move {
            while let Some(Ok(c)) = output.next().await {
                let sent = if c.stderr {
                    handle.extended_data(channel, 1, c.data).await
                } else {
                    handle.data(channel, c.data).await
                };
                if sent.is_err() {
                    return;
                }
            }
            let code = exit_code.await.unwrap_or(1);
            finish(handle, channel, String::new(), code.clamp(0, 255) as u32).await;
        });
    }
}

/// Ends a channel: a last message on stderr, the exit status, EOF, close.
async fn finish(handle: Handle, channel: ChannelId, message: String, code: u32) {
    if !message.is_empty() {
        let _ = handle.extended_data(channel, 1, message.into_bytes()).await;
    }
    let _ = handle.exit_status_request(channel, code).await;
    let _ = handle.eof(channel).await;
    let _ = handle.close(channel).await;
}

impl russh::server::Handler for Connection {
    type Error = russh::Error;

    async fn auth_publickey_offered(
        &mut self,
        user: &str,
        key: &PublicKey,
    ) -> Result<Auth, Self::Error> {
        Ok(if self.key_ok(user, key) {
            Auth::Accept
        } else {
            Auth::reject()
        })
    }

    async fn auth_publickey(&mut self, user: &str, key: &PublicKey) -> Result<Auth, Self::Error> {
        Ok(if self.key_ok(user, key) {
            tracing::info!(kernel_id = %self.kernel_id, "SSH login with the kernel's DOCKER_SSH key");
            Auth::Accept
        } else {
            tracing::info!(kernel_id = %self.kernel_id, user, "SSH login refused (another user or key)");
            Auth::reject()
        })
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.channels.insert(channel.id(), Chan::default());
        reply.accept().await;
        Ok(())
    }

    async fn pty_request(
        &mut self,
        channel: ChannelId,
        term: &str,
        cols: u32,
        rows: u32,
        _pix_width: u32,
        _pix_height: u32,
        _modes: &[(russh::Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let chan = self.channels.entry(channel).or_default();
        chan.pty = Some((
            term.to_string(),
            cols.clamp(1, 1000) as u16,
            rows.clamp(1, 1000) as u16,
        ));
        session.channel_success(channel)?;
        Ok(())
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.start(channel, vec!["/bin/sh".into(), "-l".into()], session)
            .await;
        Ok(())
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let line = String::from_utf8_lossy(data).into_owned();
        self.start(channel, vec!["/bin/sh".into(), "-c".into(), line], session)
            .await;
        Ok(())
    }

    async fn data(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if let Some(tx) = self.channels.get(&channel).and_then(|c| c.input.clone()) {
            let _ = tx.send(data.to_vec()).await;
        }
        Ok(())
    }

    async fn channel_eof(
        &mut self,
        channel: ChannelId,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        // Without a terminal, EOF closes the command's stdin; a terminal has no EOF (^D is a
        // byte), and closing it would cut the session's output short.
        if let Some(c) = self.channels.get_mut(&channel) {
            if c.pty.is_none() {
                c.input = None;
            }
        }
        Ok(())
    }

    async fn channel_close(
        &mut self,
        channel: ChannelId,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.channels.remove(&channel);
        Ok(())
    }

    async fn agent_request(
        &mut self,
        _channel: ChannelId,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        tracing::info!(kernel_id = %self.kernel_id, "SSH agent forwarding refused");
        Ok(false)
    }

    async fn window_change_request(
        &mut self,
        channel: ChannelId,
        cols: u32,
        rows: u32,
        _pix_width: u32,
        _pix_height: u32,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if let Some(exec) = self.channels.get(&channel).and_then(|c| c.exec_id.clone()) {
            let (c, r) = (cols.clamp(1, 1000) as u16, rows.clamp(1, 1000) as u16);
            let _ = self.sup.resize_exec(&self.kernel_id, &exec, c, r).await;
        }
        Ok(())
    }
}
