//! A real `supervisord` (Debian's `supervisor`) for one test: its config, socket, pid file
//! and logs all live under the test's dir, laid out as Debian's
//! `/etc/supervisor/supervisord.conf` does with `conf.d/*.conf` included. Dropping the guard
//! stops supervisord and its programs (killing what does not stop in time), also when the
//! test failed, after printing every log.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// A real supervisord with a config of its own under `dir` (socket, logs, pid file), as
/// Debian's `/etc/supervisor/supervisord.conf` lays it out with `conf.d/` included.
pub struct Supervisord {
    child: Option<Child>,
    conf: PathBuf,
    dir: PathBuf,
}

impl Supervisord {
    /// Starts supervisord over `programs` (file name, contents) placed in `dir/conf.d/`.
    pub fn start(dir: &Path, programs: &[(&str, String)]) -> Self {
        Self::start_appending(dir, &[], programs)
    }

    /// Like [`start`](Self::start), with `appended` added to the end of supervisord.conf
    /// itself, as an operator appends a program file to a host's existing config.
    pub fn start_appending(dir: &Path, appended: &[String], programs: &[(&str, String)]) -> Self {
        std::fs::create_dir_all(dir.join("conf.d")).unwrap();
        std::fs::create_dir_all(dir.join("log")).unwrap();
        for (name, text) in programs {
            std::fs::write(dir.join("conf.d").join(name), text).unwrap();
        }
        let d = dir.display();
        let conf = dir.join("supervisord.conf");
        std::fs::write(
            &conf,
            format!(
                "[unix_http_server]\nfile={d}/supervisor.sock\nchmod=0700\n\n\
                 [supervisord]\nlogfile={d}/supervisord.log\npidfile={d}/supervisord.pid\n\
                 childlogdir={d}/log\nnodaemon=true\n\n\
                 [rpcinterface:supervisor]\n\
                 supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n\n\
                 [supervisorctl]\nserverurl=unix://{d}/supervisor.sock\n\n\
                 [include]\nfiles = conf.d/*.conf\n{}",
                appended
                    .iter()
                    .map(|a| format!("\n{a}"))
                    .collect::<String>()
            ),
        )
        .unwrap();
        // Started with the soft descriptor limit most hosts give (1024), so that the limit
        // the programs get is the one `minfds` asks for.
        let child = Command::new("prlimit")
            .args(["--nofile=1024:", "--", "supervisord", "-c"])
            .arg(&conf)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("supervisord.stderr")).unwrap())
            .spawn()
            .expect("supervisord: install Debian's supervisor (scripts/deps.sh does)");
        Self {
            child: Some(child),
            conf,
            dir: dir.to_path_buf(),
        }
    }

    pub fn ctl(&self, args: &[&str]) -> Output {
        Command::new("supervisorctl")
            .arg("-c")
            .arg(&self.conf)
            .args(args)
            .output()
            .expect("supervisorctl")
    }

    /// The pid of `program` while supervisord says it is RUNNING.
    pub fn running_pid(&self, program: &str) -> Option<u32> {
        let out = self.ctl(&["status", program]);
        let status = String::from_utf8_lossy(&out.stdout);
        let (_, rest) = status.split_once(" RUNNING ")?;
        let pid = rest.trim().strip_prefix("pid ")?.split(',').next()?;
        pid.parse().ok()
    }

    /// supervisord.conf as it was started.
    pub fn conf_text(&self) -> String {
        std::fs::read_to_string(&self.conf).unwrap_or_default()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("supervisord.log")).unwrap_or_default()
    }

    /// Prints supervisord's log and every program's, for a failed test.
    pub fn print_logs(&self) {
        let stderr = std::fs::read_to_string(self.dir.join("supervisord.stderr"));
        eprintln!("--- supervisord stderr\n{}", stderr.unwrap_or_default());
        eprintln!("--- supervisord.log\n{}", self.log());
        for entry in std::fs::read_dir(self.dir.join("log"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
            eprintln!("--- {}\n{text}", entry.path().display());
        }
    }

    /// A program's log (`stdout_logfile`, moved under `dir/log/`).
    pub fn program_log(&self, file: &str) -> String {
        std::fs::read_to_string(self.dir.join("log").join(file)).unwrap_or_default()
    }
}

impl Drop for Supervisord {
    /// SIGTERM to supervisord stops every program with its own stop signal and timeout; if
    /// that does not end it in time, it and whatever it still runs are killed.
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if std::thread::panicking() {
            self.print_logs();
        }
        let out = self.ctl(&["pid", "all"]);
        let programs: Vec<u32> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .filter(|p| *p != 0)
            .collect();
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(45);
        while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        let _ = child.wait();
        for pid in programs {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
    }
}
