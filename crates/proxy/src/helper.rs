//! Squid's helper protocol: child processes (`basic_ncsa_auth`, any program that speaks it)
//! that read one request line on standard input and answer one line on standard output:
//! `OK [key=value ...]`, `ERR [...]` or `BH [...]` (broken helper), prefixed with the
//! request's channel ID when `concurrency=N` is configured.
//!
//! A pool starts `startup=` children at once and more on demand, up to `children N`. A child
//! that exits or whose pipe breaks is replaced, and the request it held is asked again of
//! another child (twice at most): a crash never turns into an answer. A request that no child
//! answers within [`ANSWER_TIMEOUT`] fails as `BH`, so callers fail closed.
//!
//! Written by hand: no crate speaks Squid's helper protocol, and the process plumbing is a
//! few lines of tokio.

use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::{mpsc, oneshot, Mutex};

/// The longest a caller waits for an answer.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);
/// How many times a request is asked again after the child holding it died.
const RETRIES: u32 = 2;
/// Requests waiting for a child at most (Squid's default queue is 2 × children).
const QUEUE_PER_CHILD: usize = 2;
/// A child that dies sooner than this after starting makes the next start wait a little.
const QUICK_DEATH: Duration = Duration::from_secs(1);
/// An answer line's length at most; a longer one counts as a broken helper.
const MAX_ANSWER: usize = 64 * 1024;

/// How a helper is run (`auth_param basic program` + `children`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HelperSpec {
    /// For messages: "basic auth", "url_rewrite", ...
    pub role: String,
    /// The program and its arguments.
    pub argv: Vec<String>,
    /// `children N`: the most that run at once.
    pub max_children: usize,
    /// `startup=N`: started with the pool.
    pub startup: usize,
    /// `concurrency=N`: 0 means the old protocol without channel IDs.
    pub concurrency: usize,
}

/// RFC 1738 escaping as Squid applies it to helpers' fields (Basic credentials, external
/// ACL values): everything but unreserved characters becomes `%XX`, so a space or newline
/// can never split the line.
pub fn escape_field(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'@') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The first word of an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Ok,
    Err,
    /// Broken helper (`BH`), or no answer at all: callers must refuse.
    Broken,
    /// A first word that is none of these: an old-style answer (a URL rewriter's bare URL,
    /// or an empty line), kept whole in [`Answer::rest`].
    Legacy,
}

/// One answer: its verdict and the `key=value` pairs after it (values percent-decoded
/// where Squid's helpers encode them is up to the caller).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub verdict: Verdict,
    pub pairs: Vec<(String, String)>,
    /// The words after the verdict that are not `key=value` (old helpers' messages).
    pub rest: String,
}

impl Answer {
    fn broken(why: &str) -> Answer {
        Answer {
            verdict: Verdict::Broken,
            pairs: vec![("message".into(), why.into())],
            rest: String::new(),
        }
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Parses `OK user=x message="a b"` (the channel ID already removed).
    pub fn parse(line: &str) -> Answer {
        let line = line.trim_end_matches(['\r', '\n']);
        let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
        let verdict = match word {
            "OK" => Verdict::Ok,
            "ERR" => Verdict::Err,
            "BH" => Verdict::Broken,
            _ => {
                return Answer {
                    verdict: Verdict::Legacy,
                    pairs: Vec::new(),
                    rest: line.trim().to_string(),
                }
            }
        };
        let mut pairs = Vec::new();
        let mut words = Vec::new();
        let mut chars = rest.trim_start();
        while !chars.is_empty() {
            let token_end = token_end(chars);
            let token = &chars[..token_end];
            chars = chars[token_end..].trim_start();
            match token.split_once('=') {
                Some((k, v)) if !k.is_empty() && !k.contains('"') => {
                    pairs.push((k.to_string(), unquote(v)));
                }
                _ => words.push(token),
            }
        }
        Answer {
            verdict,
            pairs,
            rest: words.join(" "),
        }
    }
}

/// Where the token at the start of `s` ends: at a space outside double quotes.
fn token_end(s: &str) -> usize {
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ' ' if !quoted => return i,
            _ => {}
        }
    }
    s.len()
}

fn unquote(v: &str) -> String {
    match v.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
        Some(inner) => inner.replace("\\\"", "\"").replace("\\\\", "\\"),
        None => v.to_string(),
    }
}

struct Job {
    line: String,
    tries: u32,
    reply: oneshot::Sender<Answer>,
}

/// A pool of one helper program's children.
pub struct Helpers {
    spec: Arc<HelperSpec>,
    /// The only strong sender: dropping the pool closes the queue, which ends every child.
    queue: mpsc::Sender<Job>,
    /// Children take jobs from here; shared so that any free child takes the next one.
    jobs: Arc<Mutex<mpsc::Receiver<Job>>>,
    running: Arc<AtomicUsize>,
    busy: Arc<AtomicUsize>,
}

impl Helpers {
    /// Starts `startup` children (at least one, so a program that cannot run shows at once).
    /// Must be called inside a tokio runtime.
    pub fn start(spec: HelperSpec) -> Helpers {
        let capacity = (spec.max_children * QUEUE_PER_CHILD).max(16);
        let (queue, jobs) = mpsc::channel(capacity);
        let helpers = Helpers {
            spec: Arc::new(spec),
            queue,
            jobs: Arc::new(Mutex::new(jobs)),
            running: Arc::default(),
            busy: Arc::default(),
        };
        for _ in 0..helpers.spec.startup.max(1) {
            helpers.spawn_child();
        }
        helpers
    }

    pub fn spec(&self) -> &HelperSpec {
        &self.spec
    }

    /// Children running now.
    pub fn running(&self) -> usize {
        self.running.load(Ordering::Relaxed)
    }

    /// Asks one request line (without its newline or channel ID) and waits for the answer.
    pub async fn ask(&self, line: String) -> Answer {
        if line.contains(['\n', '\r']) {
            return Answer::broken("request line contains a line break");
        }
        let busy = self.busy.load(Ordering::Relaxed);
        let running = self.running.load(Ordering::Relaxed);
        if busy >= running && running < self.spec.max_children {
            self.spawn_child();
        }
        let (reply, answer) = oneshot::channel();
        let job = Job {
            line,
            tries: 0,
            reply,
        };
        // One deadline for waiting in the queue and for the answer.
        let deadline = tokio::time::Instant::now() + ANSWER_TIMEOUT;
        let queued = tokio::time::timeout_at(deadline, self.queue.send(job)).await;
        if !matches!(queued, Ok(Ok(()))) {
            return Answer::broken("the helpers' queue is full");
        }
        match tokio::time::timeout_at(deadline, answer).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) => Answer::broken("the helpers stopped"),
            Err(_) => Answer::broken("no answer in time"),
        }
    }

    fn spawn_child(&self) {
        self.running.fetch_add(1, Ordering::Relaxed);
        let child = ChildSlot {
            spec: self.spec.clone(),
            jobs: self.jobs.clone(),
            requeue: self.queue.downgrade(),
            busy: self.busy.clone(),
            running: self.running.clone(),
        };
        tokio::spawn(child.run());
    }
}

/// One child's place in the pool: it runs the program, restarting it when it dies, until
/// the pool is dropped.
struct ChildSlot {
    spec: Arc<HelperSpec>,
    jobs: Arc<Mutex<mpsc::Receiver<Job>>>,
    /// Weak, so that the children do not keep the queue (and so themselves) alive after
    /// the pool is dropped (a reload replaces it).
    requeue: mpsc::WeakSender<Job>,
    busy: Arc<AtomicUsize>,
    running: Arc<AtomicUsize>,
}

struct Process {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    started: Instant,
}

impl ChildSlot {
    async fn run(self) {
        let mut quick_deaths = 0u32;
        'restart: loop {
            let mut process = match self.launch() {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!(helper = %self.spec.role, program = %self.spec.argv[0], error = %e, "cannot start helper");
                    if !self
                        .fail_next_job("the helper program cannot be started")
                        .await
                    {
                        break;
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            loop {
                let job = { self.jobs.lock().await.recv().await };
                let Some(job) = job else {
                    break 'restart;
                };
                self.busy.fetch_add(1, Ordering::Relaxed);
                let result = process.exchange(&job.line, self.spec.concurrency > 0).await;
                self.busy.fetch_sub(1, Ordering::Relaxed);
                match result {
                    Ok(answer) => {
                        let _ = job.reply.send(answer);
                    }
                    Err(why) => {
                        let lived = process.started.elapsed();
                        let status = process.child.try_wait().ok().flatten();
                        tracing::warn!(helper = %self.spec.role, error = %why, exit = ?status, "helper died; starting another and asking again");
                        self.retry(job).await;
                        quick_deaths = if lived < QUICK_DEATH {
                            quick_deaths + 1
                        } else {
                            0
                        };
                        if quick_deaths > 0 {
                            let pause =
                                Duration::from_millis(100 * u64::from(quick_deaths.min(10)));
                            tokio::time::sleep(pause).await;
                        }
                        continue 'restart;
                    }
                }
            }
        }
        self.running.fetch_sub(1, Ordering::Relaxed);
    }

    fn launch(&self) -> std::io::Result<Process> {
        let mut child = Command::new(&self.spec.argv[0])
            .args(&self.spec.argv[1..])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()?;
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        Ok(Process {
            child,
            stdin,
            stdout,
            started: Instant::now(),
        })
    }

    /// Asks `job` again of another child, or fails it when it has been tried enough.
    async fn retry(&self, mut job: Job) {
        job.tries += 1;
        if job.tries > RETRIES {
            let _ = job
                .reply
                .send(Answer::broken("the helper died on this request"));
            return;
        }
        let Some(queue) = self.requeue.upgrade() else {
            let _ = job.reply.send(Answer::broken("the helpers stopped"));
            return;
        };
        if let Err(mpsc::error::SendError(job)) = queue.send(job).await {
            let _ = job.reply.send(Answer::broken("the helpers stopped"));
        }
    }

    /// While the program cannot start, answers the next waiting request as broken (so it
    /// fails at once rather than after the time-out). False when the pool is gone.
    async fn fail_next_job(&self, why: &str) -> bool {
        let job = {
            let mut jobs = self.jobs.lock().await;
            tokio::select! {
                job = jobs.recv() => job,
                () = tokio::time::sleep(Duration::from_millis(10)) => {
                    return self.requeue.upgrade().is_some();
                }
            }
        };
        match job {
            Some(job) => {
                let _ = job.reply.send(Answer::broken(why));
                true
            }
            None => false,
        }
    }
}

impl Process {
    /// Writes one request and reads its answer; an error means the child is unusable.
    async fn exchange(&mut self, line: &str, with_channel: bool) -> Result<Answer, String> {
        let request = if with_channel {
            format!("0 {line}\n")
        } else {
            format!("{line}\n")
        };
        self.stdin
            .write_all(request.as_bytes())
            .await
            .map_err(|e| format!("writing to the helper: {e}"))?;
        self.stdin
            .flush()
            .await
            .map_err(|e| format!("writing to the helper: {e}"))?;
        let mut answer = String::new();
        let n = (&mut self.stdout)
            .take(MAX_ANSWER as u64)
            .read_line(&mut answer)
            .await
            .map_err(|e| format!("reading from the helper: {e}"))?;
        if n == 0 {
            return Err("the helper closed its output".into());
        }
        if !answer.ends_with('\n') {
            return Err("the helper's answer is too long".into());
        }
        let answer = if with_channel {
            match answer.split_once(' ') {
                Some(("0", rest)) => rest.to_string(),
                _ => return Err(format!("answer without channel ID 0: {answer:?}")),
            }
        } else {
            answer
        };
        Ok(Answer::parse(&answer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_parse_like_squid() {
        let a = Answer::parse("OK user=alice message=\"hello there\" extra\n");
        assert_eq!(a.verdict, Verdict::Ok);
        assert_eq!(a.get("user"), Some("alice"));
        assert_eq!(a.get("message"), Some("hello there"));
        assert_eq!(a.rest, "extra");
        assert_eq!(Answer::parse("ERR").verdict, Verdict::Err);
        assert_eq!(Answer::parse("BH message=oops").verdict, Verdict::Broken);
        assert_eq!(Answer::parse("maybe").verdict, Verdict::Legacy);
        assert_eq!(
            Answer::parse("http://x.test/ 1.2.3.4/- - GET").rest,
            "http://x.test/ 1.2.3.4/- - GET"
        );
        let a = Answer::parse("OK rewrite-url=\"http://h/x\"");
        assert_eq!(a.get("rewrite-url"), Some("http://h/x"));
    }

    fn spec(script: &str, concurrency: usize) -> HelperSpec {
        HelperSpec {
            role: "test".into(),
            argv: vec!["/bin/sh".into(), "-c".into(), script.into()],
            max_children: 3,
            startup: 1,
            concurrency,
        }
    }

    #[tokio::test]
    async fn a_helper_answers_in_order() {
        let pool = Helpers::start(spec(
            r#"while read u p; do if [ "$p" = good ]; then echo OK; else echo ERR; fi; done"#,
            0,
        ));
        assert_eq!(pool.ask("alice good".into()).await.verdict, Verdict::Ok);
        assert_eq!(pool.ask("alice bad".into()).await.verdict, Verdict::Err);
        assert_eq!(
            pool.ask("line\nbreak".into()).await.verdict,
            Verdict::Broken
        );
    }

    /// A reload drops the pool: its children must exit, not linger.
    #[tokio::test]
    async fn dropping_the_pool_ends_its_children() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("pid");
        let script = format!(
            "echo $$ > {}; while read l; do echo OK; done",
            pid_file.display()
        );
        let pool = Helpers::start(spec(&script, 0));
        assert_eq!(pool.ask("a b".into()).await.verdict, Verdict::Ok);
        let pid = std::fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .to_string();
        let proc_dir = std::path::PathBuf::from(format!("/proc/{pid}"));
        assert!(proc_dir.exists());
        drop(pool);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        // The child is killed and reaped once its slot ends (tokio reaps in the background).
        while proc_dir.exists() && !is_zombie(&proc_dir) {
            assert!(
                std::time::Instant::now() < deadline,
                "helper {pid} still runs after its pool was dropped"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn is_zombie(proc_dir: &std::path::Path) -> bool {
        std::fs::read_to_string(proc_dir.join("stat")).is_ok_and(|stat| {
            stat.rsplit_once(") ")
                .is_some_and(|(_, rest)| rest.starts_with('Z'))
        })
    }

    #[tokio::test]
    async fn channel_ids_are_sent_and_stripped() {
        let pool = Helpers::start(spec(
            r#"while read id rest; do echo "$id OK got=$rest"; done"#,
            5,
        ));
        let a = pool.ask("x y".into()).await;
        assert_eq!(a.verdict, Verdict::Ok);
        assert_eq!(a.get("got"), Some("x"));
    }

    /// A child that dies on a request is replaced and the request asked again; one that
    /// always dies makes the request fail (never succeed).
    #[tokio::test]
    async fn crashes_are_retried_and_never_answer_ok() {
        let marker = tempfile::NamedTempFile::new().unwrap();
        let path = marker.path().display().to_string();
        std::fs::remove_file(&path).unwrap();
        // The first child dies on its first request; its replacement answers.
        let script = format!(
            "read l; if [ ! -e {path} ]; then touch {path}; exit 3; fi; echo OK; while read l; do echo OK; done"
        );
        let pool = Helpers::start(spec(&script, 0));
        assert_eq!(pool.ask("a b".into()).await.verdict, Verdict::Ok);
        let always = Helpers::start(spec("read l; exit 1", 0));
        let a = always.ask("a b".into()).await;
        assert_eq!(a.verdict, Verdict::Broken, "{a:?}");
        let missing = Helpers::start(HelperSpec {
            argv: vec!["/nonexistent/helper".into()],
            ..spec("", 0)
        });
        assert_eq!(missing.ask("a b".into()).await.verdict, Verdict::Broken);
    }
}
