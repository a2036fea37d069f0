//! The front door's server: one task a connection, the caller named by the kernel, each request
//! judged by its [`Route`] and then passed to dockerd over the connection's own upstream
//! connection. Bodies stream both ways frame by frame (never gathered, but for the small JSON of
//! a create and its answer); upgraded connections (`attach`, `exec`, BuildKit's `/session` and
//! `/grpc`) are spliced byte for byte once both sides have switched.

use std::convert::Infallible;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE, HOST, TRANSFER_ENCODING, UPGRADE};
use hyper::{Request, Response, StatusCode, Uri};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::Value;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Mutex, OnceCell};

use super::caller::{self, Caller, PolicyCache};
use super::create_body::{self, Creator};
use super::filters;
use super::route::{self, Act, Route};
use crate::owner::identity::{LEGACY_USER_LABELS, USER_KEY};
use crate::owner::verified::{self, Verified};
use crate::policy::settings::{BuildKit, FrontDoorSettings};

/// A body of either side: dockerd's streamed, or one the front door made.
pub type Body = BoxBody<Bytes, hyper::Error>;

/// What every connection shares.
pub struct Shared {
    /// The settings' `front_door` section.
    pub settings: FrontDoorSettings,
    /// Where refusals are recorded (`audit_log`, `journal`).
    pub audit: Option<crate::policy::settings::Settings>,
    /// The policy, for who is an admin.
    pub policy: PolicyCache,
    /// Callers resolved lately, by uid: the user database and the admin group may be a
    /// directory service (`getent` forks), and the docker CLI opens a few connections a command.
    callers: std::sync::Mutex<std::collections::HashMap<u32, (std::time::Instant, Caller)>>,
    /// Idle connections to dockerd, left by caller connections that ended: the next caller
    /// connection takes one instead of dialling (the docker CLI opens a connection a command,
    /// `docker run` three). dockerd's HTTP carries no caller, so a connection serves anyone.
    idle: std::sync::Mutex<Vec<SendRequest<Body>>>,
}

/// Idle dockerd connections kept at most.
const IDLE_KEPT: usize = 16;

/// How long a resolved caller is reused: a change of admins or accounts takes effect within it.
const CALLER_TTL: Duration = Duration::from_secs(10);

/// Callers remembered before the map is emptied.
const CALLERS_KEPT: usize = 4096;

impl Shared {
    /// The state for `settings`, with the policy at `policy`; refusals are recorded in the
    /// audit log of `audit` when given.
    pub fn new(
        settings: FrontDoorSettings,
        policy: PathBuf,
        audit: Option<crate::policy::settings::Settings>,
    ) -> Shared {
        Shared {
            settings,
            audit,
            policy: PolicyCache::new(policy),
            callers: Default::default(),
            idle: Default::default(),
        }
    }
}

/// Accepts connections until the listener fails for good; each is served on its own task, so a
/// connection that misbehaves costs only itself.
pub async fn serve(listener: UnixListener, shared: Arc<Shared>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(connection(stream, shared.clone()));
            }
            Err(e) => {
                // Out of descriptors or memory: wait for connections to end rather than spin.
                eprintln!("ds01-front-door: accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// One connection: who is calling, then HTTP/1 with upgrades.
async fn connection(stream: UnixStream, shared: Arc<Shared>) {
    let uid = match stream.peer_cred() {
        Ok(c) => c.uid(),
        Err(e) => {
            eprintln!("ds01-front-door: no peer credentials: {e}");
            return;
        }
    };
    wide_buffers(&stream);
    serve_io(stream, uid, shared).await;
}

/// Socket buffers of 1 MiB each way: a stream then moves in fewer, larger steps (the
/// default, about 200 KiB, wakes the front door several times per MiB on each side).
fn wide_buffers(stream: &UnixStream) {
    use nix::sys::socket::{setsockopt, sockopt};
    let _ = setsockopt(stream, sockopt::SndBuf, &(1 << 20));
    let _ = setsockopt(stream, sockopt::RcvBuf, &(1 << 20));
}

/// Serves one connection whose caller the kernel named `uid` (public for the fuzz targets,
/// which feed it arbitrary bytes).
pub async fn serve_io<I>(io: I, uid: u32, shared: Arc<Shared>)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let max_head = shared.settings.max_header_bytes;
    let conn = Arc::new(Conn { shared, uid, caller: OnceCell::new(), upstream: Mutex::new(None) });
    let service = hyper::service::service_fn(move |req| {
        let conn = conn.clone();
        async move { Ok::<_, Infallible>(conn.handle(req).await) }
    });
    let mut http = hyper::server::conn::http1::Builder::new();
    http.preserve_header_case(true)
        .auto_date_header(false)
        .max_header_size(max_head)
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(120));
    // A client that vanishes or sends garbage ends here: hyper answers 400 or 431 and closes.
    let _ = http.serve_connection(TokioIo::new(io), service).with_upgrades().await;
}

/// A refusal or failure the caller sees as dockerd's error form.
struct Answer {
    status: StatusCode,
    message: String,
}

impl Answer {
    fn refused(message: String) -> Answer {
        Answer { status: StatusCode::FORBIDDEN, message }
    }

    fn into_response(self) -> Response<Body> {
        let body = format!("{{\"message\":{}}}\n", Value::String(self.message));
        let mut r = Response::new(full(Bytes::from(body)));
        *r.status_mut() = self.status;
        r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        r
    }
}

fn full(b: Bytes) -> Body {
    Full::new(b).map_err(|never: Infallible| match never {}).boxed()
}

/// What the front door does with a request it let through.
enum Plan {
    /// Pass it as it is.
    Forward,
    /// Pass it with this query (filters narrowed to the caller, a commit's container by id).
    Query(String),
    /// Pass it with this path (the container by the id judged).
    Path(String),
    /// A network connect or disconnect: its container judged from the body.
    Network,
    /// A create, rewritten for its caller.
    Create,
    /// A build, run for this owner.
    Build(Verified),
}

/// Reads and drops what is left of a refused request's body, in the background: up to 4 GiB
/// or a minute, then the connection is given up.
fn drain(mut body: Incoming) {
    tokio::spawn(async move {
        let mut left: u64 = 4 << 30;
        let _ = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(Ok(frame)) = body.frame().await {
                let n = frame.data_ref().map_or(0, |d| d.len() as u64);
                match left.checked_sub(n) {
                    Some(l) => left = l,
                    None => break,
                }
            }
        })
        .await;
    });
}

/// What an owner lookup found.
enum Found {
    /// dockerd does not know the reference (404): it answers the request itself.
    Missing,
    /// The container, its name for messages and its owner (None: nobody's).
    Container { id: String, name: String, owner: Option<String> },
}

/// One downstream connection.
struct Conn {
    shared: Arc<Shared>,
    uid: u32,
    caller: OnceCell<Caller>,
    upstream: Mutex<Option<SendRequest<Body>>>,
}

impl Conn {
    /// The caller, resolved once a connection and only when a request needs it.
    async fn caller(&self) -> &Caller {
        self.caller
            .get_or_init(|| async {
                let uid = self.uid;
                let cached = |shared: &Shared| {
                    let map = shared.callers.lock().unwrap_or_else(|p| p.into_inner());
                    map.get(&uid).filter(|(at, _)| at.elapsed() < CALLER_TTL).map(|(_, c)| c.clone())
                };
                if let Some(c) = cached(&self.shared) {
                    return c;
                }
                let shared = self.shared.clone();
                let c = tokio::task::spawn_blocking(move || caller::resolve(uid, &shared.policy))
                    .await
                    .unwrap_or(Caller { uid, login: None, admin: false });
                let mut map = self.shared.callers.lock().unwrap_or_else(|p| p.into_inner());
                if map.len() >= CALLERS_KEPT {
                    map.clear();
                }
                map.insert(uid, (std::time::Instant::now(), c.clone()));
                c
            })
            .await
    }

    async fn handle(self: &Arc<Self>, req: Request<Incoming>) -> Response<Body> {
        let route = route::classify(req.method().as_str(), req.uri().path());
        let mut what = format!("{} {}", req.method(), req.uri().path());
        if what.len() > 200 {
            let cut = (0..=200).rev().find(|&i| what.is_char_boundary(i)).unwrap_or(0);
            what.truncate(cut);
            what.push('…');
        }
        let decided = match self.decide(route, &req).await {
            Ok(plan) => self.act(plan, req).await,
            Err(a) => {
                // The caller may still be sending a body (a build context, a copy): it is read
                // and dropped while the answer goes out, so the client reads the refusal
                // rather than a broken pipe.
                drain(req.into_body());
                Err(a)
            }
        };
        match decided {
            Ok(r) => r,
            Err(a) => {
                if a.status == StatusCode::FORBIDDEN {
                    self.record_refusal(what, &a).await;
                }
                a.into_response()
            }
        }
    }

    async fn record_refusal(&self, what: String, a: &Answer) {
        let c = self.caller().await;
        eprintln!("ds01-front-door: refused {} (uid {}) {what}: {}", c.name(), c.uid, a.message);
        if let Some(s) = &self.shared.audit {
            let mut ev = crate::audit::Event::new(
                crate::audit::Kind::Request,
                std::time::SystemTime::now(),
                "refused",
            );
            ev.owner = Some(c.name());
            ev.name = Some(what);
            ev.reason = Some(a.message.clone());
            crate::audit::record_quietly(s, &ev.to_line());
        }
    }

    /// What to do with a request, or its refusal; nothing is sent to dockerd but the owner
    /// lookups.
    async fn decide(&self, route: Route, req: &Request<Incoming>) -> Result<Plan, Answer> {
        let open = self.shared.settings.open_reads;
        let query = req.uri().query().unwrap_or("");
        if query.contains(';') && !self.caller().await.is_root() {
            // Go before 1.17 splits a query at `;` too: the parameters dockerd reads would not
            // be the ones judged here.
            return Err(Answer::refused(
                "ds01: a query with `;` is refused: engines differ on where its parameters end".to_owned(),
            ));
        }
        if is_form(req) && !self.caller().await.is_root() {
            // dockerd reads a form body's fields before the query's (Go's FormValue): the
            // container of a commit, the filters of a prune, a build's cgroup parent.
            return Err(Answer::refused(
                "ds01: a form-encoded body is refused: dockerd would read it as the request's parameters"
                    .to_owned(),
            ));
        }
        match route {
            Route::Pass | Route::ListContainers if open => Ok(Plan::Forward),
            Route::Container { act: Act::Inspect | Act::Read, .. } if open => Ok(Plan::Forward),
            Route::Exec { act: Act::Read, .. } | Route::Pass => Ok(Plan::Forward),
            Route::Create => Ok(Plan::Create),
            Route::Build => self.decide_build(query).await,
            Route::ListContainers | Route::PruneContainers => {
                let c = self.caller().await.clone();
                if c.admin {
                    return Ok(Plan::Forward);
                }
                let login = self.login(&c)?;
                Ok(Plan::Query(filters::owned_by(query, login).map_err(Answer::refused)?))
            }
            Route::Container { reference, act } => {
                let verb = if let Act::Touch(v) = act { v } else { "inspect" };
                Ok(match self.owner_only(&reference, verb).await? {
                    Some(id) if id != reference => match route::with_id(req.uri().path(), &reference, &id) {
                        Some(path) => Plan::Path(path),
                        None => {
                            return Err(Answer::refused(
                                "ds01: the container's path could not be resolved".to_owned(),
                            ))
                        }
                    },
                    _ => Plan::Forward,
                })
            }
            Route::Exec { id, act } => {
                let verb = if let Act::Touch(v) = act { v } else { "use" };
                if !self.caller().await.admin {
                    if let Some(container) = self.exec_container(&id).await? {
                        self.owner_only(&container, verb).await?;
                    }
                }
                Ok(Plan::Forward)
            }
            Route::Commit => match route::query_param(query, "container") {
                Some(c) => Ok(match self.owner_only(&c, "commit").await? {
                    Some(id) => Plan::Query(route::set_param(query, "container", &id)),
                    None => Plan::Forward,
                }),
                None => Ok(Plan::Forward),
            },
            Route::AdminOnly(what) => {
                let c = self.caller().await;
                if c.admin {
                    return Ok(Plan::Forward);
                }
                Err(Answer::refused(format!("ds01: {} may not {what}: admins only", c.name())))
            }
            Route::BuildKitGrpc => {
                self.buildkit_allowed().await?;
                Ok(Plan::Forward)
            }
            Route::Network if self.caller().await.admin => Ok(Plan::Forward),
            Route::Network => Ok(Plan::Network),
            Route::Unreadable if self.caller().await.is_root() => Ok(Plan::Forward),
            Route::Unreadable => Err(Answer {
                status: StatusCode::BAD_REQUEST,
                message: "ds01: the request's path does not decode".to_owned(),
            }),
        }
    }

    /// Carries out a decision.
    async fn act(&self, plan: Plan, req: Request<Incoming>) -> Result<Response<Body>, Answer> {
        match plan {
            Plan::Forward => self.forward(req).await,
            Plan::Query(q) => self.forward(with_query(req, &q)?).await,
            Plan::Path(p) => self.forward(with_path(req, &p)?).await,
            Plan::Network => self.network(req).await,
            Plan::Create => self.create(req).await,
            Plan::Build(build) => self.build(req, build).await,
        }
    }

    fn login<'c>(&self, c: &'c Caller) -> Result<&'c str, Answer> {
        c.login
            .as_deref()
            .ok_or_else(|| Answer::refused(format!("ds01: uid {} has no login in the user database", c.uid)))
    }

    async fn buildkit_allowed(&self) -> Result<(), Answer> {
        let c = self.caller().await;
        if c.admin || self.shared.settings.buildkit == BuildKit::Allow {
            return Ok(());
        }
        Err(Answer::refused(
            "ds01: BuildKit runs build steps around the runtime on this engine, outside your slice: build with DOCKER_BUILDKIT=0 (front_door.buildkit)"
                .to_owned(),
        ))
    }

    /// Refuses unless the caller is an admin or owns the container `reference` names; gives
    /// the id of the container judged (None for an admin, or a reference dockerd does not
    /// know), which the request is then sent with, so a rename meanwhile changes nothing.
    async fn owner_only(&self, reference: &str, verb: &str) -> Result<Option<String>, Answer> {
        let c = self.caller().await.clone();
        if c.admin {
            return Ok(None);
        }
        let me = c.name();
        let mine = |o: &Option<String>| o.as_deref().is_some_and(|o| o == me || o == c.uid.to_string());
        let (id, name, owner) = match self.lookup(reference, true).await? {
            Found::Missing => return Ok(None),
            Found::Container { id, owner, .. } if mine(&owner) => return Ok(Some(id)),
            // A refusal names the container as its owner knows it: dockerd is asked.
            Found::Container { .. } => match self.lookup(reference, false).await? {
                Found::Missing => return Ok(None),
                Found::Container { id, name, owner } => (id, name, owner),
            },
        };
        let name = create_body::shown(&name);
        match owner {
            _ if mine(&owner) => Ok(Some(id)),
            Some(o) => Err(Answer::refused(format!(
                "ds01: {me} may not {verb} {}'s container {name}",
                create_body::shown(&o)
            ))),
            None => Err(Answer::refused(format!(
                "ds01: {me} may not {verb} container {name}: it has no owner, only an admin may"
            ))),
        }
    }

    /// The container's owner: the verified record (read directly for a full id), else what
    /// dockerd's inspect says (its owner label, then DS01's name convention).
    async fn lookup(&self, reference: &str, fast: bool) -> Result<Found, Answer> {
        let dir = &self.shared.settings.verified_dir;
        if fast && reference.len() == 64 && reference.bytes().all(|b| b.is_ascii_hexdigit()) {
            if let Ok(Some(v)) = verified::read(dir, reference) {
                return Ok(Found::Container {
                    id: reference.to_owned(),
                    name: reference[..12].to_owned(),
                    owner: Some(v.user),
                });
            }
        }
        let uri = format!("/containers/{}/json", route::encode(reference));
        let Some(doc) = self.get_json(&uri).await? else { return Ok(Found::Missing) };
        let id = doc.get("Id").and_then(Value::as_str).filter(|i| !i.is_empty()).ok_or_else(|| Answer {
            status: StatusCode::BAD_GATEWAY,
            message: format!(
                "ds01: dockerd did not say which container {} is",
                create_body::shown(reference)
            ),
        })?;
        let name = doc.get("Name").and_then(Value::as_str).unwrap_or(reference).trim_start_matches('/');
        let owner = match verified::read(dir, id) {
            Ok(Some(v)) => Some(v.user),
            _ => {
                let labels = doc.pointer("/Config/Labels").and_then(Value::as_object);
                std::iter::once(USER_KEY)
                    .chain(LEGACY_USER_LABELS.iter().copied())
                    .find_map(|k| labels?.get(k)?.as_str().map(str::trim).filter(|u| !u.is_empty()))
                    .map(str::to_owned)
                    .or_else(|| name.rsplit_once("._.").map(|(_, u)| u.to_owned()).filter(|u| !u.is_empty()))
            }
        };
        Ok(Found::Container { id: id.to_owned(), name: name.to_owned(), owner })
    }

    /// The container (its full id) of exec instance `id`, as dockerd knows it.
    async fn exec_container(&self, id: &str) -> Result<Option<String>, Answer> {
        let doc = self.get_json(&format!("/exec/{}/json", route::encode(id))).await?;
        Ok(doc.and_then(|d| d.get("ContainerID")?.as_str().map(str::to_owned)))
    }

    /// A GET to dockerd on this connection's upstream: None for a 404; any other answer but
    /// 200 with JSON is an error (an ambiguous id prefix, dockerd failing), never a pass.
    async fn get_json(&self, path: &str) -> Result<Option<Value>, Answer> {
        let mut req = Request::new(full(Bytes::new()));
        *req.uri_mut() =
            path.parse::<Uri>().map_err(|e| Answer::refused(format!("ds01: bad reference: {e}")))?;
        req.headers_mut().insert(HOST, HeaderValue::from_static("docker"));
        let resp = self.send(req).await?;
        let status = resp.status();
        if status != StatusCode::OK {
            let _ = resp.into_body().collect().await;
            if status == StatusCode::NOT_FOUND {
                return Ok(None);
            }
            return Err(Answer {
                status: StatusCode::BAD_GATEWAY,
                message: format!("ds01: dockerd could not say whose container this is ({status})"),
            });
        }
        let bytes = Limited::new(resp.into_body(), 64 << 20)
            .collect()
            .await
            .map_err(|e| Answer {
                status: StatusCode::BAD_GATEWAY,
                message: format!("ds01: reading dockerd's answer: {e}"),
            })?
            .to_bytes();
        serde_json::from_slice(&bytes).map(Some).map_err(|e| Answer {
            status: StatusCode::BAD_GATEWAY,
            message: format!("ds01: dockerd's answer is not JSON: {e}"),
        })
    }

    /// `POST /containers/create`: claims checked, the owner label set, the verified record
    /// written before the caller learns the id.
    async fn create(&self, req: Request<Incoming>) -> Result<Response<Body>, Answer> {
        let c = self.caller().await.clone();
        if c.is_root() {
            return self.forward(req).await;
        }
        let login = self.login(&c)?.to_owned();
        let name = route::query_param(req.uri().query().unwrap_or(""), "name");
        let max = self.shared.settings.max_create_body;
        let (mut parts, body) = req.into_parts();
        let bytes = read_limited(body, max).await?;
        let who = Creator { login: &login, uid: c.uid, admin: c.admin };
        let out = create_body::rewrite(&bytes, name.as_deref(), who).map_err(Answer::refused)?;
        parts.headers.remove(TRANSFER_ENCODING);
        parts.headers.insert(CONTENT_LENGTH, HeaderValue::from(out.body.len()));
        let resp = self.send(Request::from_parts(parts, full(Bytes::from(out.body)))).await?;
        if resp.status() != StatusCode::CREATED {
            return Ok(resp.map(BodyExt::boxed));
        }
        let (parts, body) = resp.into_parts();
        let answer = read_limited(body, 1 << 20).await?;
        let id = serde_json::from_slice::<Value>(&answer)
            .ok()
            .and_then(|v| v.get("Id")?.as_str().map(str::to_owned))
            .unwrap_or_default();
        let record =
            Verified { user: out.owner.clone(), uid: c.uid, by: (out.owner != login).then_some(login) };
        if let Err(e) = verified::write(&self.shared.settings.verified_dir, &id, &record) {
            // The container must not run unverified: it is removed before anyone can start it.
            let mut del = Request::new(full(Bytes::new()));
            *del.method_mut() = hyper::Method::DELETE;
            if let Ok(u) = format!("/containers/{}?force=1", route::encode(&id)).parse() {
                *del.uri_mut() = u;
            }
            del.headers_mut().insert(HOST, HeaderValue::from_static("docker"));
            let removed = !id.is_empty() && self.send(del).await.is_ok_and(|r| r.status().is_success());
            let what =
                if removed { "it was removed" } else { "removing it failed too: an admin must remove it" };
            return Err(Answer {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                message: format!("ds01: the new container's owner could not be recorded ({e}); {what}"),
            });
        }
        Ok(Response::from_parts(parts, full(answer)))
    }

    /// `POST /build`, judged: BuildKit and a cgroup parent of the caller's own are refused
    /// for non-admins; root's build passes as it is.
    async fn decide_build(&self, query: &str) -> Result<Plan, Answer> {
        let c = self.caller().await.clone();
        if c.is_root() {
            return Ok(Plan::Forward);
        }
        let login = self.login(&c)?.to_owned();
        if route::query_param(query, "version").as_deref() == Some("2") {
            self.buildkit_allowed().await?;
        }
        if let Some(parent) = route::query_param(query, "cgroupparent").filter(|p| !p.is_empty()) {
            if !c.admin {
                return Err(Answer::refused(format!(
                    "ds01: {login} may not choose a cgroup parent ({parent}): build steps run in their owner's slice"
                )));
            }
        }
        Ok(Plan::Build(Verified { user: login, uid: c.uid, by: None }))
    }

    /// `POST /build`: the build's containers get a cgroup parent naming a verified record of
    /// the caller, removed when the build's answer ends.
    async fn build(&self, req: Request<Incoming>, owner: Verified) -> Result<Response<Body>, Answer> {
        let query = req.uri().query().unwrap_or("").to_owned();
        let token = random_token().map_err(|e| Answer {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: format!("ds01: no random token for the build: {e}"),
        })?;
        let key = verified::build_key(&token);
        let dir = self.shared.settings.verified_dir.clone();
        verified::write(&dir, &key, &owner).map_err(|e| Answer {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: format!("ds01: the build's owner could not be recorded: {e}"),
        })?;
        let guard = Forget { dir, key };
        let parent = format!("{}{token}.slice", verified::BUILD_PARENT_PREFIX);
        let req = with_query(req, &route::set_param(&query, "cgroupparent", &parent))?;
        let resp = self.forward(req).await?;
        Ok(resp.map(|b| Guarded { inner: b, _guard: guard }.boxed()))
    }

    /// `POST /networks/{id}/connect|disconnect` by a non-admin: the body's container must be
    /// the caller's own, and is sent by the id judged.
    async fn network(&self, req: Request<Incoming>) -> Result<Response<Body>, Answer> {
        let max = self.shared.settings.max_create_body;
        let (mut parts, body) = req.into_parts();
        let bytes = read_limited(body, max).await?;
        let mut doc: Value = serde_json::from_slice(&bytes).map_err(|e| Answer {
            status: StatusCode::BAD_REQUEST,
            message: format!("ds01: the request is not JSON: {e}"),
        })?;
        if create_body::field(&doc, "Container").map_err(Answer::refused)?.is_some() {
            let reference = doc.get("Container").and_then(Value::as_str).unwrap_or("").to_owned();
            if let Some(id) = self.owner_only(&reference, "connect or disconnect").await? {
                doc["Container"] = Value::String(id);
            }
        }
        let out = serde_json::to_vec(&doc).map_err(|e| Answer::refused(format!("ds01: the request: {e}")))?;
        parts.headers.remove(TRANSFER_ENCODING);
        parts.headers.insert(CONTENT_LENGTH, HeaderValue::from(out.len()));
        let resp = self.send(Request::from_parts(parts, full(Bytes::from(out)))).await?;
        Ok(resp.map(BodyExt::boxed))
    }

    /// Sends the request to dockerd and hands its answer back; an upgrade is spliced.
    async fn forward(&self, mut req: Request<Incoming>) -> Result<Response<Body>, Answer> {
        let downstream = req.headers().contains_key(UPGRADE).then(|| hyper::upgrade::on(&mut req));
        let mut resp = self.send(req.map(BodyExt::boxed)).await?;
        if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            if let Some(down) = downstream {
                let up = hyper::upgrade::on(&mut resp);
                tokio::spawn(async move {
                    if let (Ok(down), Ok(up)) = tokio::join!(down, up) {
                        let _ = tokio::io::copy_bidirectional(&mut TokioIo::new(down), &mut TokioIo::new(up))
                            .await;
                    }
                });
            }
        }
        Ok(resp.map(BodyExt::boxed))
    }

    /// One request on this connection's upstream connection, dialled again when dockerd
    /// closed it (or was restarted).
    async fn send(&self, req: Request<Body>) -> Result<Response<Incoming>, Answer> {
        let mut slot = self.upstream.lock().await;
        let mut sender = match slot.take() {
            Some(mut s) => match s.ready().await {
                Ok(()) => s,
                Err(_) => self.dial().await?,
            },
            None => self.pooled_or_dial().await?,
        };
        let pending = sender.send_request(req);
        *slot = Some(sender);
        drop(slot);
        pending.await.map_err(|e| Answer {
            status: StatusCode::BAD_GATEWAY,
            message: format!("ds01: dockerd closed the connection: {e}"),
        })
    }

    /// An idle dockerd connection another caller connection left, else a new one.
    async fn pooled_or_dial(&self) -> Result<SendRequest<Body>, Answer> {
        loop {
            let idle = self.shared.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
            let Some(mut s) = idle else { return self.dial().await };
            if s.ready().await.is_ok() {
                return Ok(s);
            }
        }
    }

    async fn dial(&self) -> Result<SendRequest<Body>, Answer> {
        let s = &self.shared.settings;
        dial(&s.upstream).await.map_err(|_| Answer {
            status: StatusCode::BAD_GATEWAY,
            message: format!(
                "Cannot connect to the Docker daemon at unix://{}. Is the docker daemon running?",
                s.listen.display()
            ),
        })
    }
}

impl Drop for Conn {
    /// An idle dockerd connection goes back for the next caller connection; one that is busy
    /// (an answer not read to its end) or upgraded is closed with this one.
    fn drop(&mut self) {
        if let Some(s) = self.upstream.get_mut().take().filter(|s| s.is_ready()) {
            let mut idle = self.shared.idle.lock().unwrap_or_else(|p| p.into_inner());
            if idle.len() < IDLE_KEPT {
                idle.push(s);
            }
        }
    }
}

/// A new HTTP/1 connection to dockerd.
async fn dial(upstream: &std::path::Path) -> std::io::Result<SendRequest<Body>> {
    let stream = UnixStream::connect(upstream).await?;
    wide_buffers(&stream);
    let (sender, conn) = hyper::client::conn::http1::Builder::new()
        .preserve_header_case(true)
        .read_buf_exact_size(Some(READ_BUF))
        .handshake(TokioIo::new(stream))
        .await
        .map_err(std::io::Error::other)?;
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    Ok(sender)
}

/// The read buffer on dockerd's side: a stream's bytes come in reads of up to this much (hyper's
/// adaptive buffer starts at 8 KiB; a 1 GiB `docker cp` then takes ten times more reads).
const READ_BUF: usize = 256 << 10;

/// How long a build's record may outlive a front door that stopped during the build.
const BUILD_RECORD_DAYS: u64 = 7;

/// Removes the records of containers dockerd no longer has (a container removed by
/// `--rm`, by `docker rm` or by an admin on dockerd's socket), and builds' records a stopped
/// front door left. Run at start and every hour; a record is read before the list is asked
/// for, so a container created meanwhile is never swept.
pub async fn sweep(shared: &Shared) -> std::io::Result<usize> {
    let dir = &shared.settings.verified_dir;
    let entries: Vec<(String, std::fs::Metadata)> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(|e| {
                let e = e.ok()?;
                Some((e.file_name().into_string().ok()?, e.metadata().ok()?))
            })
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut sender = dial(&shared.settings.upstream).await?;
    let mut req = Request::new(full(Bytes::new()));
    *req.uri_mut() = Uri::from_static("/containers/json?all=1");
    req.headers_mut().insert(HOST, HeaderValue::from_static("docker"));
    let resp = sender.send_request(req).await.map_err(std::io::Error::other)?;
    if resp.status() != StatusCode::OK {
        return Err(std::io::Error::other(format!("dockerd answered {}", resp.status())));
    }
    let bytes = resp.into_body().collect().await.map_err(std::io::Error::other)?.to_bytes();
    let list: Value = serde_json::from_slice(&bytes).map_err(std::io::Error::other)?;
    let live: std::collections::HashSet<&str> =
        list.as_array().into_iter().flatten().filter_map(|c| c.get("Id")?.as_str()).collect();
    let old = std::time::SystemTime::now() - Duration::from_secs(BUILD_RECORD_DAYS * 86_400);
    let mut removed = 0;
    for (name, meta) in entries {
        let stale = if name.starts_with("build-") {
            meta.modified().is_ok_and(|t| t < old)
        } else {
            name.len() == 64 && !live.contains(name.as_str())
        };
        if stale {
            verified::remove(dir, &name);
            removed += 1;
        }
    }
    Ok(removed)
}

/// [`sweep`] now and every hour.
pub async fn sweep_hourly(shared: Arc<Shared>) {
    loop {
        if let Err(e) = sweep(&shared).await {
            eprintln!("ds01-front-door: sweeping {}: {e}", shared.settings.verified_dir.display());
        }
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
}

/// A body Go's `FormValue` would read as parameters: a POST, PUT or PATCH whose Content-Type is
/// `application/x-www-form-urlencoded` or `multipart/form-data` (any case, any parameters).
fn is_form(req: &Request<Incoming>) -> bool {
    matches!(req.method().as_str(), "POST" | "PUT" | "PATCH")
        && req.headers().get_all(CONTENT_TYPE).iter().any(|v| {
            let v = String::from_utf8_lossy(v.as_bytes());
            let media = v.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
            media == "application/x-www-form-urlencoded" || media == "multipart/form-data"
        })
}

/// The request with its path replaced (the query kept).
fn with_path(req: Request<Incoming>, path: &str) -> Result<Request<Incoming>, Answer> {
    let (mut parts, body) = req.into_parts();
    let uri = match parts.uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path.to_owned(),
    };
    parts.uri = uri.parse().map_err(|e| Answer::refused(format!("ds01: bad path: {e}")))?;
    Ok(Request::from_parts(parts, body))
}

/// The request with its query replaced.
fn with_query(req: Request<Incoming>, query: &str) -> Result<Request<Incoming>, Answer> {
    let (mut parts, body) = req.into_parts();
    let uri = format!("{}?{query}", parts.uri.path());
    parts.uri = uri.parse().map_err(|e| Answer::refused(format!("ds01: bad query: {e}")))?;
    Ok(Request::from_parts(parts, body))
}

/// A body read whole up to `max` bytes; over it, the caller is told the limit.
async fn read_limited(body: Incoming, max: usize) -> Result<Bytes, Answer> {
    match Limited::new(body, max).collect().await {
        Ok(b) => Ok(b.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(Answer {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            message: format!("ds01: the request body is over {max} bytes (front_door.max_create_body)"),
        }),
        Err(e) => Err(Answer {
            status: StatusCode::BAD_REQUEST,
            message: format!("ds01: reading the request: {e}"),
        }),
    }
}

/// 128 random bits as hex.
fn random_token() -> std::io::Result<String> {
    let mut b = [0u8; 16];
    let n = unsafe {
        // SAFETY: getrandom writes at most `b.len()` bytes into the buffer it is given.
        libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0)
    };
    if n != b.len() as isize {
        return Err(std::io::Error::last_os_error());
    }
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// Removes a build's record when dropped.
struct Forget {
    dir: PathBuf,
    key: String,
}

impl Drop for Forget {
    fn drop(&mut self) {
        verified::remove(&self.dir, &self.key);
    }
}

/// A body that keeps its guard until it is done or dropped.
struct Guarded {
    inner: Body,
    _guard: Forget,
}

impl HttpBody for Guarded {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
