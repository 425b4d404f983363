//! `tally invoke --bootstrap`: run a built Lambda `bootstrap` binary as
//! Lambda runs it, for one invocation, and measure it.
//!
//! The in-process `tally invoke` shows what a handler does; it cannot show
//! what the deployed artefact costs: the release binary's start-up, its
//! memory at 128 MB, its own allocator and runtime. So this serves the
//! Lambda Runtime API (the interface a `provided.al2023` function's
//! `bootstrap` talks to) on 127.0.0.1 for exactly one invocation:
//!
//! - `GET /2018-06-01/runtime/invocation/next` answers the first call with
//!   the event and Lambda's headers (`Lambda-Runtime-Aws-Request-Id`,
//!   `-Deadline-Ms`, `-Invoked-Function-Arn`, `-Trace-Id`); the second call
//!   (the function finished and asks for more) is never answered, as Lambda
//!   freezes a function between invocations;
//! - `POST .../invocation/{id}/response` and `.../invocation/{id}/error`
//!   end the invocation; `POST /2018-06-01/runtime/init/error` ends init.
//!
//! The binary starts with `AWS_LAMBDA_RUNTIME_API` and the variables Lambda
//! sets (function name, version, memory size, log group, task root), on top
//! of this process's environment, which carries the function's own
//! variables (`TALLY_*`) and the AWS configuration, as `eval "$(tally dev
//! up)"` leaves them.
//!
//! What is measured, and how:
//!
//! - **init**: from spawning the process to its first `next` request, what
//!   Lambda reports as Init Duration (the binary loading, settings, SDK
//!   clients; no network call happens before the first event);
//! - **duration**: from handing out the event to the response (or error)
//!   arriving, what Lambda bills;
//! - **peak memory**: the process's `VmHWM` (resident high-water mark) from
//!   `/proc/<pid>/status`, read when the function asks for the next event,
//!   so after everything the invocation did; Lambda's "Max Memory Used" is
//!   the same kind of figure. Only Linux has it; elsewhere it is reported
//!   as unknown.
//!
//! Then the process is killed by its PID (Lambda would freeze it, and one
//! invocation is all this runs).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

const PREFIX: &str = "/2018-06-01/runtime";
/// How long the function may take to ask for its first event. Lambda
/// allows 10 s of init.
const INIT_LIMIT: Duration = Duration::from_secs(10);
/// How long to wait, after the response, for the function to ask for the
/// next event (when its memory is read). A function that does not ask is
/// measured when this runs out.
const SETTLE_LIMIT: Duration = Duration::from_secs(2);

/// How to run the bootstrap.
#[derive(Debug, Clone)]
pub struct Options {
    /// The `bootstrap` binary.
    pub path: PathBuf,
    /// `AWS_LAMBDA_FUNCTION_NAME`.
    pub function_name: String,
    /// `AWS_LAMBDA_FUNCTION_MEMORY_SIZE`, in MB.
    pub memory_mb: u32,
    /// The invocation's timeout (its deadline is this far from the event).
    pub timeout: Duration,
    /// The region named in the function's ARN.
    pub region: String,
}

/// How the invocation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// `POST .../response`: the body.
    Response(Bytes),
    /// `POST .../error`: the error type header and the body.
    Error { kind: Option<String>, body: Bytes },
}

/// One invocation of a bootstrap, measured.
#[derive(Debug, Clone)]
pub struct Measured {
    pub ending: Ending,
    /// Process start to its first `next` request.
    pub init: Duration,
    /// Event handed out to response received.
    pub duration: Duration,
    /// `VmHWM` in kB, when the platform has it.
    pub peak_kb: Option<u64>,
}

/// What the server saw, in order.
#[derive(Debug)]
enum Seen {
    /// The first `next`: the event went out.
    Delivered(Instant),
    /// A later `next`: the function is done and idle.
    AskedAgain,
    Ended(Instant, Ending),
    InitError {
        kind: Option<String>,
        body: Bytes,
    },
    /// A request the Runtime API would refuse (wrong id, unknown path).
    Refused(String),
}

/// The server's shared state.
struct Api {
    event: Bytes,
    request_id: String,
    function_arn: String,
    trace_id: String,
    delivered: Mutex<bool>,
    seen: mpsc::UnboundedSender<Seen>,
}

/// Runs `options.path` for one invocation on `event` (the JSON Lambda
/// would deliver) and measures it.
pub async fn invoke(options: &Options, event: Bytes) -> anyhow::Result<Measured> {
    check_binary(&options.path)?;
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding 127.0.0.1 for the Lambda Runtime API; is the loopback interface up?")?;
    let address = listener
        .local_addr()
        .context("reading the Runtime API's address")?;
    let (seen_tx, mut seen) = mpsc::unbounded_channel();
    let epoch_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default();
    let api = Arc::new(Api {
        event,
        request_id: request_id(epoch_ms),
        function_arn: format!(
            "arn:aws:lambda:{}:000000000000:function:{}",
            options.region, options.function_name
        ),
        trace_id: format!(
            "Root=1-{:08x}-{:024x};Parent={:016x};Sampled=0",
            epoch_ms / 1000,
            epoch_ms,
            std::process::id()
        ),
        delivered: Mutex::new(false),
        seen: seen_tx,
    });
    let server = tokio::spawn(serve(listener, api.clone(), options.timeout));

    let started = Instant::now();
    let mut child = spawn(options, address)?;
    let pid = child.id();
    let result = async {
        // Init: until the first `next`, an init error, or the process exits.
        // Biased to the messages: a bootstrap that takes the event and
        // crashes at once has both ready, and what it said comes first.
        let delivered_at = tokio::select! {
            biased;
            message = seen.recv() => match message {
                Some(Seen::Delivered(at)) => at,
                Some(Seen::InitError { kind, body }) => bail!(
                    "{} failed to start: it reported an init error{}: {}; its log above says why (a missing TALLY_* variable? run `eval \"$(tally dev up)\"` first)",
                    options.path.display(),
                    kind.map(|k| format!(" ({k})")).unwrap_or_default(),
                    String::from_utf8_lossy(&body)
                ),
                Some(Seen::Refused(why)) => bail!("{} broke the Runtime API at init: {why}", options.path.display()),
                Some(other) => bail!("{} sent {other:?} before asking for an event", options.path.display()),
                None => bail!("the Runtime API server stopped"),
            },
            status = child.wait() => bail!(
                "{} exited ({}) before asking for an event; its log above says why (a missing TALLY_* variable? run `eval \"$(tally dev up)\"` first; not a Lambda bootstrap? pass the file scripts/build-lambdas builds)",
                options.path.display(),
                status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string())
            ),
            () = tokio::time::sleep(INIT_LIMIT) => bail!(
                "{} did not ask for an event within {INIT_LIMIT:?} (Lambda's init limit); is it a Lambda bootstrap reading AWS_LAMBDA_RUNTIME_API?",
                options.path.display()
            ),
        };
        let init = delivered_at.duration_since(started);
        // The invocation: until the response or error, within the timeout.
        let (ended_at, ending) = tokio::select! {
                biased;
                message = seen.recv() => match message {
                    Some(Seen::Ended(at, ending)) => (at, ending),
                    Some(Seen::Refused(why)) => bail!("{} broke the Runtime API: {why}", options.path.display()),
                    Some(Seen::AskedAgain) => bail!("{} asked for another event without answering this one", options.path.display()),
                    Some(other) => bail!("{} sent {other:?} during the invocation", options.path.display()),
                    None => bail!("the Runtime API server stopped"),
                },
                status = child.wait() => bail!(
                    "{} exited ({}) during the invocation, without a response (a crash; Lambda would retry the event); its log above says why",
                    options.path.display(),
                    status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string())
                ),
                () = tokio::time::sleep_until((delivered_at + options.timeout).into()) => bail!(
                    "{} did not answer within the {:?} timeout; raise --timeout or look at its log above",
                    options.path.display(),
                    options.timeout
                ),
        };
        // Let it come back for the next event, then read its high-water mark.
        let _ = tokio::time::timeout(SETTLE_LIMIT, async {
            while let Some(message) = seen.recv().await {
                if matches!(message, Seen::AskedAgain) {
                    return;
                }
            }
        })
        .await;
        let peak_kb = pid.and_then(peak_kb);
        Ok(Measured {
            ending,
            init,
            duration: ended_at.duration_since(delivered_at),
            peak_kb,
        })
    }
    .await;
    // Stop it by its PID, whatever happened.
    if child.start_kill().is_ok() {
        let _ = child.wait().await;
    }
    server.abort();
    result
}

/// Refuses what cannot be a bootstrap, saying what to pass instead.
fn check_binary(path: &Path) -> anyhow::Result<()> {
    let metadata = std::fs::metadata(path).with_context(|| {
        format!(
            "cannot read {}; pass the function's bootstrap, as scripts/build-lambdas leaves it in target/lambda/<arch>/<function>/ (unzipped)",
            path.display()
        )
    })?;
    if !metadata.is_file() {
        bail!(
            "{} is not a file; pass the function's bootstrap binary",
            path.display()
        );
    }
    let mut magic = [0u8; 4];
    if let Ok(mut file) = std::fs::File::open(path) {
        use std::io::Read;
        let _ = file.read(&mut magic);
    }
    if &magic == b"PK\x03\x04" {
        bail!(
            "{} is a zip; unzip it first (for example `unzip -o {} -d DIR`) and pass DIR/bootstrap",
            path.display(),
            path.display()
        );
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if metadata.permissions().mode() & 0o111 == 0 {
            bail!(
                "{} is not executable; `chmod +x {}` (unzipping keeps the mode a Lambda zip stores)",
                path.display(),
                path.display()
            );
        }
    }
    Ok(())
}

/// Starts the bootstrap with Lambda's variables; its stdout (the function's
/// log) goes to this process's stderr, keeping stdout for the response.
fn spawn(options: &Options, address: SocketAddr) -> anyhow::Result<tokio::process::Child> {
    let task_root = options
        .path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let name = &options.function_name;
    let mut command = tokio::process::Command::new(&options.path);
    command
        .env("AWS_LAMBDA_RUNTIME_API", address.to_string())
        .env("AWS_LAMBDA_FUNCTION_NAME", name)
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env(
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
            options.memory_mb.to_string(),
        )
        .env("AWS_LAMBDA_LOG_GROUP_NAME", format!("/aws/lambda/{name}"))
        .env("AWS_LAMBDA_LOG_STREAM_NAME", "tally-invoke/[$LATEST]local")
        .env("AWS_LAMBDA_INITIALIZATION_TYPE", "on-demand")
        .env("AWS_EXECUTION_ENV", "AWS_Lambda_provided.al2023")
        .env("LAMBDA_TASK_ROOT", &task_root)
        .env("LAMBDA_RUNTIME_DIR", &task_root)
        .env("_HANDLER", "bootstrap")
        .env("TZ", ":UTC")
        .current_dir(&task_root)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    if std::env::var_os("AWS_REGION").is_none() {
        command.env("AWS_REGION", &options.region);
    }
    // What Lambda sets for the deployment's LoggingConfig (JSON, INFO),
    // unless the caller chose otherwise.
    for (name, value) in [
        ("AWS_LAMBDA_LOG_FORMAT", "JSON"),
        ("AWS_LAMBDA_LOG_LEVEL", "INFO"),
    ] {
        if std::env::var_os(name).is_none() {
            command.env(name, value);
        }
    }
    if let Ok(stderr) = std::io::stderr().as_fd().try_clone_to_owned() {
        command.stdout(Stdio::from(stderr));
    }
    command.spawn().with_context(|| {
        format!(
            "cannot start {}; is it a Linux binary for this machine's architecture (scripts/build-lambdas x86_64 or arm64)?",
            options.path.display()
        )
    })
}

/// Serves the Runtime API until aborted.
async fn serve(listener: TcpListener, api: Arc<Api>, timeout: Duration) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let api = api.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let api = api.clone();
                async move { Ok::<_, Infallible>(answer(&api, request, timeout).await) }
            });
            // Header names as Lambda writes them (`Lambda-Runtime-Aws-Request-Id`):
            // clients should not care, but some compare them exactly.
            let _ = http1::Builder::new()
                .title_case_headers(true)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn answer(api: &Api, request: Request<Incoming>, timeout: Duration) -> Response<Full<Bytes>> {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let error_type = header("Lambda-Runtime-Function-Error-Type");
    let Some(route) = path.strip_prefix(PREFIX) else {
        return refuse(
            api,
            StatusCode::NOT_FOUND,
            format!("{method} {path}: not a Runtime API path"),
        );
    };
    match (&method, route) {
        (&Method::GET, "/invocation/next") => {
            let first = match api.delivered.lock() {
                Ok(mut delivered) => !std::mem::replace(&mut *delivered, true),
                Err(_) => false,
            };
            if !first {
                let _ = api.seen.send(Seen::AskedAgain);
                // Lambda freezes the function here; it is killed instead.
                std::future::pending::<()>().await;
            }
            let deadline = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| (d + timeout).as_millis())
                .unwrap_or_default();
            let _ = api.seen.send(Seen::Delivered(Instant::now()));
            let mut response = Response::new(Full::new(api.event.clone()));
            let headers = response.headers_mut();
            for (name, value) in [
                ("Lambda-Runtime-Aws-Request-Id", api.request_id.clone()),
                ("Lambda-Runtime-Deadline-Ms", deadline.to_string()),
                (
                    "Lambda-Runtime-Invoked-Function-Arn",
                    api.function_arn.clone(),
                ),
                ("Lambda-Runtime-Trace-Id", api.trace_id.clone()),
                ("Content-Type", "application/json".to_owned()),
            ] {
                if let Ok(value) = value.parse() {
                    headers.insert(name, value);
                }
            }
            response
        }
        (&Method::POST, "/init/error") => {
            let body = read_body(request).await;
            let _ = api.seen.send(Seen::InitError {
                kind: error_type,
                body,
            });
            accepted()
        }
        (&Method::POST, _) => {
            let Some((id, what)) = route
                .strip_prefix("/invocation/")
                .and_then(|rest| rest.split_once('/'))
            else {
                return refuse(
                    api,
                    StatusCode::NOT_FOUND,
                    format!("POST {path}: not a Runtime API path"),
                );
            };
            if id != api.request_id {
                return refuse(
                    api,
                    StatusCode::BAD_REQUEST,
                    format!(
                        "POST {path}: request id {id} is not the invocation's ({})",
                        api.request_id
                    ),
                );
            }
            let body = read_body(request).await;
            let ending = match what {
                "response" => Ending::Response(body),
                "error" => Ending::Error {
                    kind: error_type,
                    body,
                },
                _ => {
                    return refuse(
                        api,
                        StatusCode::NOT_FOUND,
                        format!("POST {path}: not a Runtime API path"),
                    );
                }
            };
            let _ = api.seen.send(Seen::Ended(Instant::now(), ending));
            accepted()
        }
        _ => refuse(
            api,
            StatusCode::NOT_FOUND,
            format!("{method} {path}: not a Runtime API path"),
        ),
    }
}

async fn read_body(request: Request<Incoming>) -> Bytes {
    match request.into_body().collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => Bytes::new(),
    }
}

fn accepted() -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(b"{\"status\":\"OK\"}")));
    *response.status_mut() = StatusCode::ACCEPTED;
    response
}

fn refuse(api: &Api, status: StatusCode, why: String) -> Response<Full<Bytes>> {
    let _ = api.seen.send(Seen::Refused(why.clone()));
    let mut response = Response::new(Full::new(Bytes::from(
        serde_json::json!({"errorType": "InvalidRequest", "errorMessage": why}).to_string(),
    )));
    *response.status_mut() = status;
    response
}

/// A request id unique enough for one run: time and process id.
fn request_id(epoch_ms: u128) -> String {
    let pid = std::process::id();
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        (epoch_ms >> 16) as u32,
        (epoch_ms & 0xffff) as u16,
        pid & 0xfff,
        nanos & 0xfff,
        (u64::from(nanos) << 8) | u64::from(pid & 0xff)
    )
}

/// The process's resident high-water mark in kB (`VmHWM`), on Linux.
fn peak_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_vm_hwm(&status)
}

fn parse_vm_hwm(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_high_water_mark_is_read_from_proc_status() {
        let status = "Name:\tbootstrap\nVmPeak:\t  20000 kB\nVmHWM:\t   12345 kB\nVmRSS:\t 1 kB\n";
        assert_eq!(parse_vm_hwm(status), Some(12345));
        assert_eq!(parse_vm_hwm("Name:\tx\n"), None);
    }

    #[test]
    fn request_ids_look_like_lambdas() {
        let id = request_id(1_447_668_000_000);
        assert_eq!(id.len(), 36, "{id}");
        assert_eq!(id.matches('-').count(), 4, "{id}");
    }

    #[test]
    fn a_zip_or_a_missing_file_says_what_to_pass() {
        let dir = tempfile::tempdir().unwrap();
        let zip = dir.path().join("bootstrap.zip");
        std::fs::write(&zip, b"PK\x03\x04rest").unwrap();
        let error = check_binary(&zip).unwrap_err().to_string();
        assert!(error.contains("is a zip; unzip it first"), "{error}");
        let missing = check_binary(&dir.path().join("nothing"))
            .unwrap_err()
            .to_string();
        assert!(
            missing.contains("pass the function's bootstrap"),
            "{missing}"
        );
    }
}
