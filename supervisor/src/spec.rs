//! What a server is started with: the binary, its flags, environment and output, and the
//! URL its `/healthz` answers on. [`EngineSpec`] and [`WorkerSpec`] are the one place the
//! engine's and the worker's command lines are written for a supervised child.
//!
//! This module only builds commands; it never spawns one.

use crate::process::Output;
use std::ffi::OsString;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use tokio::process::Command;

/// `--exit-with-parent`: every supervised child ends when its supervisor does.
const EXIT_WITH_PARENT: &str = "--exit-with-parent";
/// An engine run `open`: no credentials (which it allows on loopback only) and no rate
/// limit, for local stacks and tests that drive it faster than any client would.
const OPEN_ENGINE_ARGS: [&str; 3] = ["--open", "--rate-limit", "off"];

/// A command line to supervise.
#[derive(Debug, Clone)]
pub struct Spec {
    /// How it is named in messages, e.g. `shop-engine`.
    pub name: String,
    pub program: PathBuf,
    pub args: Vec<OsString>,
    pub env: Vec<(String, String)>,
    pub output: Output,
    /// The base URL whose `/healthz` says it is ready.
    pub url: String,
}

impl Spec {
    pub fn command(&self) -> Command {
        let mut command = Command::new(&self.program);
        command.args(&self.args).envs(self.env.iter().map(|(k, v)| (k, v)));
        command
    }
}

/// A `shop-engine` server.
#[derive(Debug, Clone)]
pub struct EngineSpec {
    pub binary: PathBuf,
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub workflows: PathBuf,
    /// `--open --rate-limit off`.
    pub open: bool,
    /// More flags; they come last, so they win (the engine takes a flag's last value).
    pub args: Vec<String>,
    pub output: Output,
}

impl EngineSpec {
    pub fn spec(&self) -> Spec {
        let mut args: Vec<OsString> = vec![
            "--data-dir".into(),
            self.data_dir.clone().into(),
            "--listen".into(),
            self.listen.to_string().into(),
            "--workflows".into(),
            self.workflows.clone().into(),
            EXIT_WITH_PARENT.into(),
        ];
        if self.open {
            args.extend(OPEN_ENGINE_ARGS.iter().map(OsString::from));
        }
        args.extend(self.args.iter().map(OsString::from));
        Spec {
            name: "shop-engine".to_owned(),
            program: self.binary.clone(),
            args,
            env: Vec::new(),
            output: self.output.clone(),
            url: connect_url(self.listen),
        }
    }
}

/// A `shop-worker` server.
#[derive(Debug, Clone)]
pub struct WorkerSpec {
    pub binary: PathBuf,
    pub engine_url: String,
    pub data_dir: PathBuf,
    /// The admin API's address.
    pub listen: SocketAddr,
    /// `--activities`, e.g. `inventory,payment,notification`.
    pub activities: String,
    /// `--open`: the admin API needs no credential (loopback only).
    pub open: bool,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub output: Output,
}

impl WorkerSpec {
    pub fn spec(&self) -> Spec {
        let mut args: Vec<OsString> = vec![
            "--engine".into(),
            self.engine_url.clone().into(),
            "--data-dir".into(),
            self.data_dir.clone().into(),
            "--listen".into(),
            self.listen.to_string().into(),
            "--activities".into(),
            self.activities.clone().into(),
            EXIT_WITH_PARENT.into(),
        ];
        if self.open {
            args.push("--open".into());
        }
        args.extend(self.args.iter().map(OsString::from));
        Spec {
            name: "shop-worker".to_owned(),
            program: self.binary.clone(),
            args,
            env: self.env.clone(),
            output: self.output.clone(),
            url: connect_url(self.listen),
        }
    }
}

/// The URL to reach a listen address: an unspecified address (`0.0.0.0`) listens on
/// loopback too, and loopback is the address that always routes.
pub fn connect_url(listen: SocketAddr) -> String {
    let host =
        if listen.ip().is_unspecified() { SocketAddr::new(Ipv4Addr::LOCALHOST.into(), listen.port()) } else { listen };
    format!("http://{host}")
}

/// A loopback address with a port that was free a moment ago: bind port 0, read, drop.
/// Another process may take it before the child binds it; the child then fails to start
/// and says so.
pub fn free_loopback_addr() -> std::io::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    listener.local_addr()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unspecified_listen_addresses_are_reached_on_loopback() -> Result<(), std::net::AddrParseError> {
        assert_eq!(connect_url("0.0.0.0:8080".parse()?), "http://127.0.0.1:8080");
        assert_eq!(connect_url("127.0.0.2:81".parse()?), "http://127.0.0.2:81");
        Ok(())
    }

    #[test]
    fn the_callers_flags_come_last_and_every_child_exits_with_its_parent() -> Result<(), std::net::AddrParseError> {
        let spec = EngineSpec {
            binary: "shop-engine".into(),
            data_dir: "/d".into(),
            listen: "127.0.0.1:9".parse()?,
            workflows: "/w".into(),
            open: true,
            args: vec!["--rate-limit".into(), "2/s".into()],
            output: Output::Inherit,
        }
        .spec();
        let args: Vec<String> = spec.args.iter().map(|a| a.to_string_lossy().into_owned()).collect();
        assert!(args.contains(&EXIT_WITH_PARENT.to_owned()));
        assert_eq!(&args[args.len() - 2..], ["--rate-limit", "2/s"]);
        assert_eq!(spec.url, "http://127.0.0.1:9");
        Ok(())
    }
}
