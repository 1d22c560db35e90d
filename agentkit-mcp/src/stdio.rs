//! The stdio transport of a client connection: the child process agentkit starts, its stderr
//! (logged, and its tail kept for error messages), a watch on stdout for messages over the
//! line limit, and a shutdown that takes a configurable grace period instead of rmcp's fixed
//! 3 s.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use agentkit_core::{Error, Result};
use process_wrap::tokio::{ChildWrapper, CommandWrap, KillOnDrop, ProcessGroup};
use rmcp::RoleClient;
use rmcp::transport::async_rw::AsyncRwTransport;
use tokio::io::{AsyncBufReadExt, AsyncRead, ReadBuf};
use tokio::process::{ChildStdin, ChildStdout};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

/// The longest message (one line) read from a stdio server: rmcp's default. A longer one is
/// discarded by the transport; [`Oversize`] reports it so that the call fails at once.
pub(crate) const MAX_LINE: usize = rmcp::transport::async_rw::DEFAULT_MAX_LINE_LENGTH;

const _: () = assert!(
    MAX_LINE == 16 * 1024 * 1024,
    "update the limit named in errors"
);

/// How many of the last stderr lines an error shows.
const STDERR_TAIL_LINES: usize = 20;
/// At most this many bytes of one stderr line are kept.
const STDERR_LINE_BYTES: usize = 1_000;
/// How long a failed start waits for the child's last stderr lines.
const STDERR_DRAIN: Duration = Duration::from_millis(500);

/// SIGTERM (15 on every unix).
#[cfg(unix)]
const SIGTERM: i32 = 15;

/// The transport rmcp serves on.
pub(crate) type StdioTransport = AsyncRwTransport<RoleClient, LineWatch<ChildStdout>, ChildStdin>;

/// A started stdio server: its transport and the process behind it.
pub(crate) struct Spawned {
    pub(crate) transport: StdioTransport,
    pub(crate) child: StdioChild,
    pub(crate) oversize: Arc<Oversize>,
}

/// Start `command args` in its own process group (so a shutdown also ends what it spawns, e.g.
/// npx -> node), with piped stdio.
pub(crate) fn spawn(server: &str, spec: &crate::stdio_env::SpawnSpec<'_>) -> Result<Spawned> {
    let command = spec.command;
    let (program, argv) = crate::stdio_env::limited_command(command, spec.args, spec.limits)
        .map_err(|e| Error::tool(server, format!("MCP server `{server}`: {e}")))?;
    let env = crate::stdio_env::child_env(std::env::vars_os(), spec.inherit_env, spec.env);
    let cwd = spec.cwd;
    let mut wrap = CommandWrap::with_new(&program, |c| {
        c.args(&argv)
            .env_clear()
            .envs(&env)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        if let Some(dir) = cwd {
            c.current_dir(dir);
        }
    });
    wrap.wrap(ProcessGroup::leader()).wrap(KillOnDrop);
    let mut child = wrap.spawn().map_err(|e| Error::Tool {
        tool: server.to_owned(),
        message: format!(
            "could not start MCP server `{server}` (`{command}`): {e}; check that the command is installed and on PATH"
        ),
        source: Some(Box::new(e)),
    })?;
    let pipes = (
        child.stdin().take(),
        child.stdout().take(),
        child.stderr().take(),
    );
    let (Some(stdin), Some(stdout), stderr) = pipes else {
        return Err(Error::tool(
            server,
            format!("could not open the stdio pipes of MCP server `{server}`"),
        ));
    };
    let tail = Arc::new(StderrTail::default());
    let stderr_task = stderr.map(|stderr| {
        let server = server.to_owned();
        let tail = Arc::clone(&tail);
        tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                tracing::info!(target: "agentkit_mcp::stderr", server = %server, "{line}");
                tail.push(line);
            }
        })
    });
    let oversize = Arc::new(Oversize::new());
    let read = LineWatch::new(stdout, Arc::clone(&oversize));
    let transport = AsyncRwTransport::new_client(read, stdin).with_max_line_length(MAX_LINE);
    Ok(Spawned {
        transport,
        child: StdioChild {
            child,
            tail,
            stderr_task,
        },
        oversize,
    })
}

/// The last lines a server wrote to stderr.
#[derive(Default)]
pub(crate) struct StderrTail {
    lines: Mutex<VecDeque<String>>,
}

impl StderrTail {
    fn push(&self, mut line: String) {
        if line.len() > STDERR_LINE_BYTES {
            let mut cut = STDERR_LINE_BYTES;
            while !line.is_char_boundary(cut) {
                cut -= 1;
            }
            line.truncate(cut);
            line.push('…');
        }
        let mut lines = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        if lines.len() == STDERR_TAIL_LINES {
            lines.pop_front();
        }
        lines.push_back(line);
    }

    /// The kept lines, indented, or `None` when the server wrote nothing.
    pub(crate) fn text(&self) -> Option<String> {
        let lines = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        (!lines.is_empty()).then(|| {
            lines
                .iter()
                .map(|l| format!("  {l}"))
                .collect::<Vec<_>>()
                .join("\n")
        })
    }
}

/// The process of a stdio server.
pub(crate) struct StdioChild {
    child: Box<dyn ChildWrapper>,
    tail: Arc<StderrTail>,
    stderr_task: Option<JoinHandle<()>>,
}

impl StdioChild {
    /// The process id.
    pub(crate) fn id(&self) -> Option<u32> {
        self.child.id()
    }

    /// What to add to an error about a server that failed to start: its exit status when it
    /// has exited, and the tail of its stderr.
    pub(crate) async fn failure_report(&mut self) -> String {
        let status = match self.child.try_wait() {
            Ok(Some(status)) => Some(status),
            _ => tokio::time::timeout(STDERR_DRAIN, self.child.wait())
                .await
                .ok()
                .and_then(std::result::Result::ok),
        };
        if status.is_some()
            && let Some(task) = self.stderr_task.as_mut()
        {
            // The child is gone: its stderr ends soon; take its last lines.
            let _ = tokio::time::timeout(STDERR_DRAIN, task).await;
        }
        let mut out = String::new();
        if let Some(status) = status {
            out.push_str(&format!("; the server exited ({status})"));
        }
        match self.tail.text() {
            Some(text) => out.push_str(&format!("; its stderr ended with:\n{text}")),
            None if status.is_some() => out.push_str("; it wrote nothing to stderr"),
            None => {}
        }
        out
    }

    /// The MCP stdio shutdown: stdin is already closed (the transport is closed); wait up to
    /// `grace` for the server to exit, then send SIGTERM to its process group and wait up to
    /// `grace` again, then kill it.
    pub(crate) async fn shutdown(mut self, grace: Duration) {
        if self.wait_for(grace).await {
            return;
        }
        #[cfg(unix)]
        {
            match self.child.signal(SIGTERM) {
                Ok(()) => {
                    if self.wait_for(grace).await {
                        return;
                    }
                }
                Err(e) => tracing::debug!(error = %e, "could not send SIGTERM to an MCP server"),
            }
        }
        if let Err(e) = Box::into_pin(self.child.kill()).await {
            tracing::warn!(error = %e, "could not kill an MCP server process");
        }
    }

    async fn wait_for(&mut self, d: Duration) -> bool {
        matches!(tokio::time::timeout(d, self.child.wait()).await, Ok(Ok(_)))
    }
}

/// Messages from the server that were longer than [`MAX_LINE`] and so discarded by the
/// transport: the JSON-RPC id of each when it could be read from the message's first or last
/// bytes (`None` otherwise).
pub(crate) struct Oversize {
    tx: broadcast::Sender<(Option<String>, usize)>,
}

impl Oversize {
    fn new() -> Self {
        Self {
            tx: broadcast::channel(16).0,
        }
    }

    /// Receive the discarded messages from now on: (id as JSON text, size in bytes).
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<(Option<String>, usize)> {
        self.tx.subscribe()
    }

    fn report(&self, id: Option<String>, len: usize) {
        tracing::warn!(
            id = id.as_deref().unwrap_or("?"),
            bytes = len,
            limit = MAX_LINE,
            "an MCP server sent a message over the line limit; it was discarded"
        );
        let _ = self.tx.send((id, len));
    }
}

/// How many bytes of a line's start and end are kept to find its id.
const EDGE: usize = 256;

/// Passes stdout through unchanged, measuring each line; reports lines over [`MAX_LINE`].
pub(crate) struct LineWatch<R> {
    inner: R,
    oversize: Arc<Oversize>,
    len: usize,
    head: Vec<u8>,
    tail: VecDeque<u8>,
}

impl<R> LineWatch<R> {
    fn new(inner: R, oversize: Arc<Oversize>) -> Self {
        Self {
            inner,
            oversize,
            len: 0,
            head: Vec::with_capacity(EDGE),
            tail: VecDeque::with_capacity(EDGE),
        }
    }

    fn observe(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            match data.iter().position(|b| *b == b'\n') {
                Some(i) => {
                    self.extend(&data[..i]);
                    self.end_line();
                    data = &data[i + 1..];
                }
                None => {
                    self.extend(data);
                    break;
                }
            }
        }
    }

    fn extend(&mut self, seg: &[u8]) {
        if self.head.len() < EDGE {
            let n = (EDGE - self.head.len()).min(seg.len());
            self.head.extend_from_slice(&seg[..n]);
        }
        self.len = self.len.saturating_add(seg.len());
        if self.len > MAX_LINE / 2 {
            self.tail.extend(&seg[seg.len().saturating_sub(EDGE)..]);
            let extra = self.tail.len().saturating_sub(EDGE);
            self.tail.drain(..extra);
        }
    }

    fn end_line(&mut self) {
        if self.len > MAX_LINE {
            let tail: Vec<u8> = self.tail.iter().copied().collect();
            self.oversize
                .report(message_id(&self.head, &tail), self.len);
        }
        self.len = 0;
        self.head.clear();
        self.tail.clear();
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for LineWatch<R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let res = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &res {
            let new = buf.filled()[before..].to_vec();
            this.observe(&new);
        }
        res
    }
}

/// The JSON-RPC id of a message from its first bytes (`{"jsonrpc":"2.0","id":7,...`, as
/// rmcp and Python write it) or its last bytes (`...,"jsonrpc":"2.0","id":7}`, as the
/// TypeScript SDK writes it), as JSON text (`7`, `"abc"`).
pub(crate) fn message_id(head: &[u8], tail: &[u8]) -> Option<String> {
    let head = String::from_utf8_lossy(head);
    let tail = String::from_utf8_lossy(tail);
    let compact = |s: &str| s.chars().filter(|c| !c.is_whitespace()).collect::<String>();
    let head = compact(&head);
    let tail = compact(&tail);
    for prefix in [r#"{"jsonrpc":"2.0","id":"#, r#"{"id":"#] {
        if let Some(rest) = head.strip_prefix(prefix) {
            return scalar(rest);
        }
    }
    let body = tail.strip_suffix('}')?;
    let at = body.rfind(r#""id":"#)?;
    let value = &body[at + 5..];
    // The id must be the message's last member: nothing but the value after it.
    let v = scalar(value)?;
    (v.len() == value.len()).then_some(v)
}

/// A JSON number or string at the start of `s`.
fn scalar(s: &str) -> Option<String> {
    if let Some(rest) = s.strip_prefix('"') {
        let mut escaped = false;
        for (i, c) in rest.char_indices() {
            match c {
                '\\' if !escaped => escaped = true,
                '"' if !escaped => return Some(s[..i + 2].to_owned()),
                _ => escaped = false,
            }
        }
        None
    } else {
        let end = s
            .find(|c: char| !(c.is_ascii_digit() || c == '-'))
            .unwrap_or(s.len());
        (end > 0).then(|| s[..end].to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_id_at_either_end() {
        assert_eq!(
            message_id(br#"{"jsonrpc":"2.0","id":17,"result":{"#, b"").as_deref(),
            Some("17")
        );
        assert_eq!(
            message_id(
                br#"{"result":{"content":[{"#,
                br#"aaa"}]},"jsonrpc":"2.0","id":"r-1"}"#
            )
            .as_deref(),
            Some(r#""r-1""#)
        );
        // An "id" inside the result is not the message's.
        assert_eq!(message_id(b"{\"result\":{", br#"{"id":3},"x":1}"#), None);
        assert_eq!(message_id(b"garbage", b"garbage"), None);
    }

    #[test]
    fn reports_only_lines_over_the_limit() {
        let o = Arc::new(Oversize::new());
        let mut rx = o.subscribe();
        let mut w = LineWatch::new(tokio::io::empty(), Arc::clone(&o));
        w.observe(b"{\"jsonrpc\":\"2.0\",\"id\":1}\n{\"jsonrpc\":\"2.0\",\"id\":2,\"result\":\"");
        assert!(rx.try_recv().is_err());
        let chunk = vec![b'x'; 1 << 20];
        for _ in 0..17 {
            w.observe(&chunk);
        }
        w.observe(b"\"}\n{\"ok\":1}\n");
        let (id, len) = rx.try_recv().unwrap();
        assert_eq!(id.as_deref(), Some("2"));
        assert!(len > MAX_LINE);
        assert!(rx.try_recv().is_err());
    }
}
