//! The server name a TLS client asks for, read from its ClientHello without decrypting or
//! answering anything, so the guard can refuse a TLS connection that names another host.

/// What the first bytes of a connection are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hello {
    /// Not TLS (or not yet enough bytes to tell): plain TCP.
    NotTls,
    /// A ClientHello that is not all here yet.
    Incomplete,
    /// A ClientHello, and the name it asks for (None: no server_name extension).
    Tls(Option<String>),
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn u8(&mut self) -> Option<usize> {
        self.take(1).map(|b| usize::from(b[0]))
    }

    fn u16(&mut self) -> Option<usize> {
        self.take(2).map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
    }

    fn u24(&mut self) -> Option<usize> {
        self.take(3).map(|b| usize::from(b[0]) << 16 | usize::from(b[1]) << 8 | usize::from(b[2]))
    }
}

pub fn client_hello(bytes: &[u8]) -> Hello {
    // A TLS record: handshake (22), version 3.x, length.
    if bytes.first() != Some(&22) || bytes.get(1).is_some_and(|&v| v != 3) {
        return Hello::NotTls;
    }
    let mut record = Reader(bytes);
    let Some(header) = record.take(5) else { return Hello::Incomplete };
    let length = usize::from(u16::from_be_bytes([header[3], header[4]]));
    let Some(body) = record.take(length) else { return Hello::Incomplete };
    match server_name(body) {
        Some(name) => Hello::Tls(name),
        None => Hello::NotTls,
    }
}

/// Walks a ClientHello to its server_name extension; None when it is not a ClientHello.
fn server_name(body: &[u8]) -> Option<Option<String>> {
    let mut r = Reader(body);
    if r.u8()? != 1 {
        return None;
    }
    let length = r.u24()?;
    let mut hello = Reader(r.take(length)?);
    hello.take(2 + 32)?; // version, random
    let session = hello.u8()?;
    hello.take(session)?;
    let suites = hello.u16()?;
    hello.take(suites)?;
    let compression = hello.u8()?;
    hello.take(compression)?;
    let Some(total) = hello.u16() else { return Some(None) };
    let mut extensions = Reader(hello.take(total)?);
    while let (Some(kind), Some(len)) = (extensions.u16(), extensions.u16()) {
        let data = extensions.take(len)?;
        if kind != 0 {
            continue;
        }
        let mut list = Reader(data);
        let list_len = list.u16()?;
        let mut names = Reader(list.take(list_len)?);
        while let (Some(name_type), Some(name_len)) = (names.u8(), names.u16()) {
            let name = names.take(name_len)?;
            if name_type == 0 {
                return Some(std::str::from_utf8(name).ok().map(str::to_string));
            }
        }
    }
    Some(None)
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// A minimal ClientHello asking for `name`.
    pub fn hello(name: Option<&str>) -> Vec<u8> {
        let mut extensions = Vec::new();
        if let Some(name) = name {
            let mut entry = vec![0u8];
            entry.extend((name.len() as u16).to_be_bytes());
            entry.extend(name.as_bytes());
            let mut list = (entry.len() as u16).to_be_bytes().to_vec();
            list.extend(entry);
            extensions.extend([0, 0]);
            extensions.extend((list.len() as u16).to_be_bytes());
            extensions.extend(list);
        }
        let mut body = vec![3, 3];
        body.extend([7u8; 32]);
        body.extend([0, 0, 2, 0x13, 0x01, 1, 0]);
        body.extend((extensions.len() as u16).to_be_bytes());
        body.extend(extensions);
        let mut handshake = vec![1];
        handshake.extend(&(body.len() as u32).to_be_bytes()[1..]);
        handshake.extend(body);
        let mut record = vec![22, 3, 1];
        record.extend((handshake.len() as u16).to_be_bytes());
        record.extend(handshake);
        record
    }

    #[test]
    fn the_server_name_is_read_from_a_client_hello() {
        assert_eq!(
            client_hello(&hello(Some("crdemo.azurecr.io"))),
            Hello::Tls(Some("crdemo.azurecr.io".into()))
        );
        assert_eq!(client_hello(&hello(None)), Hello::Tls(None));
    }

    #[test]
    fn partial_hellos_wait_and_other_bytes_are_plain_tcp() {
        let full = hello(Some("crdemo.azurecr.io"));
        assert_eq!(client_hello(&full[..20]), Hello::Incomplete);
        assert_eq!(client_hello(&full[..3]), Hello::Incomplete);
        assert_eq!(client_hello(b"GET / HTTP/1.1\r\n"), Hello::NotTls);
        assert_eq!(client_hello(b"SSH-2.0-OpenSSH"), Hello::NotTls);
        assert_eq!(
            client_hello(&[22, 3, 1, 0, 4, 2, 0, 0, 0]),
            Hello::NotTls,
            "a handshake that is not a ClientHello"
        );
    }
}
