//! Socket addresses as Python objects, the same objects the `socket` module makes (CPython's
//! `makesockaddr`), for the families the native datagram transport serves:
//!
//! - `AF_INET`: `(host, port)`, the host as `inet_ntop` writes it;
//! - `AF_INET6`: `(host, port, flowinfo, scope_id)`;
//! - `AF_UNIX`: the path as a `str` (decoded with the filesystem encoding, so undecodable bytes
//!   are surrogate-escaped), or on Linux an abstract name as `bytes` with its leading NUL;
//! - no address at all (an unbound Unix sender): `None`;
//! - any other family: `(family, sa_data)`, as CPython's fallback.

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString, PyTuple};

use crate::ffi;
use crate::sys;
use crate::sys::net::{AddrView, SockAddr};

/// The Python form of `addr` (see the module docs).
pub fn to_python<'py>(py: Python<'py>, addr: &SockAddr) -> PyResult<Bound<'py, PyAny>> {
    match addr.view() {
        AddrView::Empty => Ok(py.None().into_bound(py)),
        AddrView::V4 { ip, port } => {
            let items = [ipv4_text(py, ip).into_any(), port.into_pyobject(py)?.into_any()];
            Ok(PyTuple::new(py, items)?.into_any())
        }
        AddrView::V6 {
            ip,
            port,
            flowinfo,
            scope_id,
        } => {
            let host = sys::net::ipv6_text(&ip).map_err(crate::errors::os_error)?;
            let items = [
                PyString::new(py, &host).into_any(),
                port.into_pyobject(py)?.into_any(),
                flowinfo.into_pyobject(py)?.into_any(),
                scope_id.into_pyobject(py)?.into_any(),
            ];
            Ok(PyTuple::new(py, items)?.into_any())
        }
        AddrView::Unix(path) => {
            if cfg!(target_os = "linux") && path.first() == Some(&0) {
                return Ok(PyBytes::new(py, path).into_any());
            }
            let end = path.iter().position(|&b| b == 0).unwrap_or(path.len());
            ffi::decode_fs(py, &path[..end])
        }
        AddrView::Other { family, data } => {
            let items = [family.into_pyobject(py)?.into_any(), PyBytes::new(py, data).into_any()];
            Ok(PyTuple::new(py, items)?.into_any())
        }
    }
}

/// An IPv4 address in dotted-quad form, as `inet_ntop` writes it. Written digit by digit: the
/// formatting machinery costs several times as much, once per address of every connection.
fn ipv4_text(py: Python<'_>, ip: std::net::Ipv4Addr) -> Bound<'_, PyString> {
    let mut buf = [0u8; 15];
    let mut used = 0;
    for (i, octet) in ip.octets().into_iter().enumerate() {
        if i > 0 {
            buf[used] = b'.';
            used += 1;
        }
        if octet >= 100 {
            buf[used] = b'0' + octet / 100;
            used += 1;
        }
        if octet >= 10 {
            buf[used] = b'0' + octet / 10 % 10;
            used += 1;
        }
        buf[used] = b'0' + octet % 10;
        used += 1;
    }
    PyString::new(py, std::str::from_utf8(&buf[..used]).expect("digits and dots"))
}

/// The native form of a Python address for a datagram socket of `family`, when it is one the
/// `socket` module would turn into the same `sockaddr` without a lookup: for `AF_INET`, a
/// `(host, port)` tuple of a dotted-quad `str` (what `inet_pton` accepts) and an `int` port.
/// Anything else is `None` and is left to the socket's own `sendto`, with its checks and errors.
pub fn from_python(family: libc::c_int, addr: &Bound<'_, PyAny>) -> Option<SockAddr> {
    if family != libc::AF_INET {
        return None;
    }
    let tuple = addr.cast_exact::<PyTuple>().ok()?;
    if tuple.len() != 2 {
        return None;
    }
    let host = tuple.get_item(0).ok()?;
    let host = host.cast_exact::<PyString>().ok()?;
    let port = tuple.get_item(1).ok()?;
    if !port.is_exact_instance_of::<pyo3::types::PyInt>() {
        return None;
    }
    let port: u16 = port.extract().ok()?;
    let ip: std::net::Ipv4Addr = host.to_str().ok()?.parse().ok()?;
    Some(SockAddr::v4(ip, port))
}
