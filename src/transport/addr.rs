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

use crate::sys;
use crate::sys::net::SockAddr;

/// The Python form of `addr` (see the module docs).
pub fn to_python<'py>(py: Python<'py>, addr: &SockAddr) -> PyResult<Bound<'py, PyAny>> {
    if addr.len == 0 {
        return Ok(py.None().into_bound(py));
    }
    let storage = &addr.storage;
    let ptr = storage as *const libc::sockaddr_storage;
    match i32::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: the kernel wrote a sockaddr_in for this family; storage is large and
            // aligned enough for every sockaddr type.
            let sin = unsafe { &*(ptr as *const libc::sockaddr_in) };
            let host = ipv4_text(py, std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)));
            Ok(PyTuple::new(
                py,
                [
                    host.into_any(),
                    u16::from_be(sin.sin_port).into_pyobject(py)?.into_any(),
                ],
            )?
            .into_any())
        }
        libc::AF_INET6 => {
            // SAFETY: as above, for sockaddr_in6.
            let sin6 = unsafe { &*(ptr as *const libc::sockaddr_in6) };
            let host = ntop(py, libc::AF_INET6, (&sin6.sin6_addr as *const libc::in6_addr).cast())?;
            let items = [
                host.into_any(),
                u16::from_be(sin6.sin6_port).into_pyobject(py)?.into_any(),
                u32::from_be(sin6.sin6_flowinfo).into_pyobject(py)?.into_any(),
                sin6.sin6_scope_id.into_pyobject(py)?.into_any(),
            ];
            Ok(PyTuple::new(py, items)?.into_any())
        }
        libc::AF_UNIX => {
            // SAFETY: as above, for sockaddr_un.
            let sun = unsafe { &*(ptr as *const libc::sockaddr_un) };
            let offset = std::mem::offset_of!(libc::sockaddr_un, sun_path);
            let used = (addr.len as usize).saturating_sub(offset).min(sun.sun_path.len());
            // SAFETY: sun_path is an array of c_char, which has the layout of u8.
            let path = unsafe { std::slice::from_raw_parts(sun.sun_path.as_ptr().cast::<u8>(), used) };
            if cfg!(target_os = "linux") && path.first() == Some(&0) {
                return Ok(PyBytes::new(py, path).into_any());
            }
            let end = path.iter().position(|&b| b == 0).unwrap_or(path.len());
            decode_fs(py, &path[..end])
        }
        family => {
            // SAFETY: every sockaddr starts with the generic header.
            let generic = unsafe { &*(ptr as *const libc::sockaddr) };
            // SAFETY: sa_data is an array of c_char, which has the layout of u8.
            let data =
                unsafe { std::slice::from_raw_parts(generic.sa_data.as_ptr().cast::<u8>(), generic.sa_data.len()) };
            Ok(PyTuple::new(
                py,
                [family.into_pyobject(py)?.into_any(), PyBytes::new(py, data).into_any()],
            )?
            .into_any())
        }
    }
}

/// An IPv4 address in dotted-quad form, as `inet_ntop` writes it.
fn ipv4_text(py: Python<'_>, ip: std::net::Ipv4Addr) -> Bound<'_, PyString> {
    use std::io::Write;
    let mut buf = [0u8; 15];
    let mut out = &mut buf[..];
    let [a, b, c, d] = ip.octets();
    write!(out, "{a}.{b}.{c}.{d}").expect("a dotted quad fits in 15 bytes");
    let used = 15 - out.len();
    // SAFETY: only ASCII digits and dots were written.
    PyString::new(py, unsafe { std::str::from_utf8_unchecked(&buf[..used]) })
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

/// The text form of the address at `src`, as a `str`.
fn ntop<'py>(py: Python<'py>, family: libc::c_int, src: *const libc::c_void) -> PyResult<Bound<'py, PyString>> {
    // SAFETY: callers pass the address field of a sockaddr of `family`.
    let text = unsafe { sys::net::ntop(family, src) }.map_err(crate::errors::os_error)?;
    Ok(PyString::new(py, &text))
}

/// Bytes of a path decoded as `os.fsdecode` does.
fn decode_fs<'py>(py: Python<'py>, bytes: &[u8]) -> PyResult<Bound<'py, PyAny>> {
    // SAFETY: the GIL is held; the pointer and length describe `bytes`.
    unsafe {
        let obj =
            pyo3::ffi::PyUnicode_DecodeFSDefaultAndSize(bytes.as_ptr().cast(), bytes.len() as pyo3::ffi::Py_ssize_t);
        Bound::from_owned_ptr_or_err(py, obj)
    }
}
