//! Listeners shared by the `http` sources of a process: the first source
//! on an address binds it, later ones add their routes, and the listener
//! stops when its last route is removed. A request is matched by exact path,
//! then method.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock, Weak};

use http::{Method, StatusCode};
use hyper::body::Incoming;
use hyper::Request;

use super::invoke::Admission;
use super::respond;
use super::serve::{self, Handler, ResponseFuture, ServeOptions, StopServer};

/// One route: a path, a method (or any) and where its requests go.
struct Route {
    id: u64,
    path: String,
    method: Option<Method>,
    admission: Arc<Admission>,
}

/// A bound address and its routes.
struct Listener {
    address: SocketAddr,
    tls: bool,
    routes: RwLock<Vec<Route>>,
    stop: Mutex<Option<StopServer>>,
}

/// Every live listener of the process, by address.
static LISTENERS: Mutex<Vec<(SocketAddr, Weak<Listener>)>> = Mutex::new(Vec::new());

/// Binds without waiting (so it can happen under the registry's lock).
fn bind(address: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = match address {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(1024)
}

/// Removes its route when dropped; the last one stops the listener.
pub(crate) struct RouteGuard {
    listener: Arc<Listener>,
    id: u64,
}

/// The address actually bound (port 0 resolved) and the guard of the route.
pub(crate) struct Registered {
    /// The route; drop it to remove the route.
    #[expect(dead_code, reason = "held for its Drop")]
    pub(crate) guard: RouteGuard,
    /// The listener's bound address.
    pub(crate) bound: SocketAddr,
}

/// Adds a route for `admission` on `address`, binding the address if no
/// source of this process listens there yet.
pub(crate) fn register(
    address: SocketAddr,
    path: &str,
    method: Option<Method>,
    options: ServeOptions,
    admission: Arc<Admission>,
) -> Result<Registered, String> {
    let tls = options.tls.is_some();
    // lookup, bind and publish under one lock: sources start in parallel
    let (listener, unstarted) = {
        let mut all = LISTENERS.lock().unwrap_or_else(|p| p.into_inner());
        all.retain(|(_, l)| l.strong_count() > 0);
        let existing = all
            .iter()
            .find(|(a, _)| *a == address && address.port() != 0)
            .and_then(|(_, l)| l.upgrade());
        match existing {
            Some(listener) => {
                if listener.tls != tls {
                    return Err(format!(
                        "{address} is already served {} by another http source; sources sharing an address must agree on `tls`",
                        if listener.tls { "with TLS" } else { "without TLS" }
                    ));
                }
                (listener, None)
            }
            None => {
                let socket =
                    bind(address).map_err(|e| format!("cannot listen on {address}: {e}"))?;
                let bound = socket.local_addr().map_err(|e| e.to_string())?;
                let listener = Arc::new(Listener {
                    address: bound,
                    tls,
                    routes: RwLock::new(Vec::new()),
                    stop: Mutex::new(None),
                });
                all.push((bound, Arc::downgrade(&listener)));
                (listener, Some(socket))
            }
        }
    };
    static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let id = NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    {
        let mut routes = listener.routes.write().unwrap_or_else(|p| p.into_inner());
        if routes.iter().any(|r| {
            r.path == path && (r.method.is_none() || method.is_none() || r.method == method)
        }) {
            return Err(format!(
                "another http source already serves {} {path} on {address}",
                method.as_ref().map_or("*", Method::as_str)
            ));
        }
        routes.push(Route {
            id,
            path: path.to_string(),
            method,
            admission,
        });
    }
    if let Some(socket) = unstarted {
        // accepting starts once the first route is in place (no 404 race)
        let stop = serve::spawn(
            socket,
            options,
            Arc::new(Dispatcher(Arc::downgrade(&listener))),
        );
        *listener.stop.lock().unwrap_or_else(|p| p.into_inner()) = Some(stop);
    }
    let bound = listener.address;
    Ok(Registered {
        guard: RouteGuard { listener, id },
        bound,
    })
}

impl Drop for RouteGuard {
    fn drop(&mut self) {
        let empty = {
            let mut routes = self
                .listener
                .routes
                .write()
                .unwrap_or_else(|p| p.into_inner());
            routes.retain(|r| r.id != self.id);
            routes.is_empty()
        };
        if empty {
            // the listener's last route: stop accepting and close connections
            self.listener
                .stop
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take();
        }
    }
}

/// A dispatcher over a listener of one route that is bound nowhere (the
/// fuzz target serves it on an in-memory connection); the listener lives
/// as long as the dispatcher.
pub(crate) fn dispatcher_for(
    path: &str,
    method: Option<Method>,
    admission: Arc<Admission>,
) -> Arc<impl Handler> {
    let listener = Arc::new(Listener {
        address: SocketAddr::from(([127, 0, 0, 1], 0)),
        tls: false,
        routes: RwLock::new(vec![Route {
            id: 0,
            path: path.to_string(),
            method,
            admission,
        }]),
        stop: Mutex::new(None),
    });
    Arc::new(Owning {
        dispatcher: Arc::new(Dispatcher(Arc::downgrade(&listener))),
        _listener: listener,
    })
}

/// A [`Dispatcher`] that keeps its listener alive.
struct Owning {
    dispatcher: Arc<Dispatcher>,
    _listener: Arc<Listener>,
}

impl Handler for Owning {
    fn handle(self: Arc<Self>, request: Request<Incoming>, remote: SocketAddr) -> ResponseFuture {
        Arc::clone(&self.dispatcher).handle(request, remote)
    }
}

/// Routes a request of a listener to its source's admission.
struct Dispatcher(Weak<Listener>);

impl Handler for Dispatcher {
    fn handle(self: Arc<Self>, request: Request<Incoming>, remote: SocketAddr) -> ResponseFuture {
        let Some(listener) = self.0.upgrade() else {
            return Box::pin(async { respond::unavailable("the server is stopping") });
        };
        let admission = {
            let routes = listener.routes.read().unwrap_or_else(|p| p.into_inner());
            let path = request.uri().path();
            let mut on_path = routes.iter().filter(|r| r.path == path).peekable();
            if on_path.peek().is_none() {
                return Box::pin(async {
                    respond::plain(StatusCode::NOT_FOUND, "no route for this path\n")
                });
            }
            let method = request.method();
            let mut allowed = Vec::new();
            let mut found = None;
            for r in on_path {
                match &r.method {
                    None => found = Some(Arc::clone(&r.admission)),
                    Some(m) if m == method => found = Some(Arc::clone(&r.admission)),
                    Some(m) => allowed.push(m.to_string()),
                }
                if found.is_some() {
                    break;
                }
            }
            match found {
                Some(a) => a,
                None => {
                    let allow = allowed.join(", ");
                    return Box::pin(async move { respond::method_not_allowed(&allow) });
                }
            }
        };
        Box::pin(async move { admission.invoke(request, remote).await })
    }
}
