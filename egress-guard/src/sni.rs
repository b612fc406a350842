//! The server name a TLS client asks for, read from its ClientHello without decrypting or
//! answering anything, so the guard can refuse a TLS connection that names another host.
//!
//! A ClientHello may come split across TLS records and TCP segments, and be large (post-quantum
//! key shares, padding): [`Reassembly`] takes the bytes as they arrive, each byte once, and
//! decides when the whole handshake message is there. Anything else that could leave the name
//! in doubt (another record type first, a second server_name, a message beyond
//! [`MAX_HELLO`]) is not a ClientHello the guard will pass.

/// The largest ClientHello handshake message the guard reads (header included).
pub const MAX_HELLO: usize = 16 * 1024;
/// The most bytes read to find it: the message, and the record headers around it.
pub const MAX_OPENING: usize = MAX_HELLO + 4 * 1024;
/// TLS's own bound on a record's plaintext.
const MAX_RECORD: usize = 16 * 1024;

/// What the first bytes of a connection are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hello {
    /// Not a TLS ClientHello the guard can judge.
    NotTls,
    /// A ClientHello that is not all here yet.
    Incomplete,
    /// Larger than [`MAX_HELLO`] (or [`MAX_OPENING`] bytes without one).
    TooLarge,
    /// A ClientHello, and the name it asks for (None: no server_name extension).
    Tls(Option<String>),
}

/// A ClientHello put back together from the records it came in.
#[derive(Debug, Default)]
pub struct Reassembly {
    /// Bytes fed so far.
    seen: usize,
    /// The current record's header, as much of it as has come.
    header: [u8; 5],
    header_len: usize,
    /// Payload bytes of the current record still to come.
    payload_left: usize,
    /// The handshake bytes of the records so far.
    handshake: Vec<u8>,
    decided: Option<Hello>,
}

impl Reassembly {
    /// Takes the next bytes of the connection; what is known after them.
    pub fn feed(&mut self, mut bytes: &[u8]) -> Hello {
        if let Some(decided) = &self.decided {
            return decided.clone();
        }
        while !bytes.is_empty() {
            if self.seen >= MAX_OPENING {
                return self.decide(Hello::TooLarge);
            }
            if self.header_len < 5 {
                let take = (5 - self.header_len).min(bytes.len());
                self.header[self.header_len..self.header_len + take].copy_from_slice(&bytes[..take]);
                self.header_len += take;
                self.seen += take;
                bytes = &bytes[take..];
                // A handshake record (22) of TLS 1.x (3.x), of a length TLS allows.
                if self.header[0] != 22 || (self.header_len >= 2 && self.header[1] != 3) {
                    return self.decide(Hello::NotTls);
                }
                if self.header_len == 5 {
                    self.payload_left = usize::from(u16::from_be_bytes([self.header[3], self.header[4]]));
                    if self.payload_left == 0 || self.payload_left > MAX_RECORD {
                        return self.decide(Hello::NotTls);
                    }
                }
                continue;
            }
            let take = self.payload_left.min(bytes.len()).min(MAX_OPENING - self.seen);
            self.seen += take;
            self.handshake.extend_from_slice(&bytes[..take]);
            self.payload_left -= take;
            bytes = &bytes[take..];
            if self.payload_left == 0 {
                self.header_len = 0;
            }
            if let Some(hello) = self.judge_handshake() {
                return self.decide(hello);
            }
        }
        if self.seen >= MAX_OPENING { self.decide(Hello::TooLarge) } else { Hello::Incomplete }
    }

    /// Once the handshake message's header is in: its type and length; once all of it is: the name.
    fn judge_handshake(&self) -> Option<Hello> {
        let h = &self.handshake;
        if h.is_empty() {
            return None;
        }
        if h[0] != 1 {
            return Some(Hello::NotTls);
        }
        if h.len() < 4 {
            return None;
        }
        let length = 4 + (usize::from(h[1]) << 16 | usize::from(h[2]) << 8 | usize::from(h[3]));
        if length > MAX_HELLO {
            return Some(Hello::TooLarge);
        }
        if h.len() < length {
            return None;
        }
        Some(match server_name(&h[4..length]) {
            Some(name) => Hello::Tls(name),
            None => Hello::NotTls,
        })
    }

    fn decide(&mut self, hello: Hello) -> Hello {
        self.handshake = Vec::new();
        self.decided = Some(hello.clone());
        hello
    }
}

/// What `bytes`, the first of a connection, are.
pub fn client_hello(bytes: &[u8]) -> Hello {
    Reassembly::default().feed(bytes)
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
}

/// Walks a ClientHello's body to its server_name extension; None when it is malformed or
/// names its host more than once (a server might honour another one than the guard read).
fn server_name(body: &[u8]) -> Option<Option<String>> {
    let mut hello = Reader(body);
    hello.take(2 + 32)?; // version, random
    let session = hello.u8()?;
    hello.take(session)?;
    let suites = hello.u16()?;
    hello.take(suites)?;
    let compression = hello.u8()?;
    hello.take(compression)?;
    let Some(total) = hello.u16() else { return Some(None) };
    let mut extensions = Reader(hello.take(total)?);
    let mut found = None;
    while !extensions.0.is_empty() {
        let kind = extensions.u16()?;
        let len = extensions.u16()?;
        let data = extensions.take(len)?;
        if kind != 0 {
            continue;
        }
        if found.is_some() {
            return None;
        }
        let mut list = Reader(data);
        let list_len = list.u16()?;
        let mut names = Reader(list.take(list_len)?);
        let mut host = None;
        while !names.0.is_empty() {
            let name_type = names.u8()?;
            let name_len = names.u16()?;
            let name = names.take(name_len)?;
            if name_type == 0 {
                if host.is_some() {
                    return None;
                }
                host = Some(std::str::from_utf8(name).ok()?.to_string());
            }
        }
        found = Some(host?);
    }
    Some(found)
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// A minimal ClientHello asking for `name`, its body padded with `pad` bytes of an
    /// unknown extension.
    pub fn hello_padded(name: Option<&str>, pad: usize) -> Vec<u8> {
        let handshake = handshake(name, pad);
        records(&handshake, handshake.len())
    }

    pub fn hello(name: Option<&str>) -> Vec<u8> {
        hello_padded(name, 0)
    }

    /// The handshake message alone.
    pub fn handshake(name: Option<&str>, pad: usize) -> Vec<u8> {
        let mut extensions = Vec::new();
        if let Some(name) = name {
            extensions.extend(server_name_extension(name));
        }
        if pad > 0 {
            extensions.extend([0x44, 0x44]);
            extensions.extend((pad as u16).to_be_bytes());
            extensions.extend(std::iter::repeat_n(0u8, pad));
        }
        let mut body = vec![3, 3];
        body.extend([7u8; 32]);
        body.extend([0, 0, 2, 0x13, 0x01, 1, 0]);
        body.extend((extensions.len() as u16).to_be_bytes());
        body.extend(extensions);
        let mut handshake = vec![1];
        handshake.extend(&(body.len() as u32).to_be_bytes()[1..]);
        handshake.extend(body);
        handshake
    }

    fn server_name_extension(name: &str) -> Vec<u8> {
        let mut entry = vec![0u8];
        entry.extend((name.len() as u16).to_be_bytes());
        entry.extend(name.as_bytes());
        let mut list = (entry.len() as u16).to_be_bytes().to_vec();
        list.extend(entry);
        let mut extension = vec![0, 0];
        extension.extend((list.len() as u16).to_be_bytes());
        extension.extend(list);
        extension
    }

    /// `handshake` in TLS records of at most `per_record` bytes each.
    pub fn records(handshake: &[u8], per_record: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for chunk in handshake.chunks(per_record.max(1)) {
            out.extend([22, 3, 1]);
            out.extend((chunk.len() as u16).to_be_bytes());
            out.extend(chunk);
        }
        out
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
    fn partial_hellos_wait_and_other_bytes_are_not_tls() {
        let full = hello(Some("crdemo.azurecr.io"));
        assert_eq!(client_hello(&full[..20]), Hello::Incomplete);
        assert_eq!(client_hello(&full[..3]), Hello::Incomplete);
        assert_eq!(client_hello(b"GET / HTTP/1.1\r\n"), Hello::NotTls);
        assert_eq!(client_hello(b"SSH-2.0-OpenSSH"), Hello::NotTls);
        assert_eq!(client_hello(&[22, 3, 1, 0, 4, 2, 0, 0, 0]), Hello::NotTls, "a ServerHello");
        assert_eq!(client_hello(&[22, 3, 1, 0, 0]), Hello::NotTls, "an empty record");
        assert_eq!(client_hello(&[22, 3, 1, 0x48, 1]), Hello::NotTls, "a record longer than TLS allows");
    }

    #[test]
    fn a_hello_split_across_records_and_segments_is_put_back_together() {
        let handshake = handshake(Some("crdemo.azurecr.io"), 0);
        for per_record in [1, 2, 7, 40, handshake.len()] {
            let bytes = records(&handshake, per_record);
            for segment in [1, 3, 64, bytes.len()] {
                let mut r = Reassembly::default();
                let mut last = Hello::Incomplete;
                for part in bytes.chunks(segment) {
                    assert_eq!(last, Hello::Incomplete, "decided before the end: {per_record}/{segment}");
                    last = r.feed(part);
                }
                assert_eq!(last, Hello::Tls(Some("crdemo.azurecr.io".into())), "{per_record}/{segment}");
            }
        }
    }

    #[test]
    fn large_hellos_pass_up_to_the_limit_and_no_further() {
        let big = hello_padded(Some("crdemo.azurecr.io"), 12 * 1024);
        assert_eq!(client_hello(&big), Hello::Tls(Some("crdemo.azurecr.io".into())), "12 KiB of padding");
        let huge = handshake(Some("crdemo.azurecr.io"), MAX_HELLO);
        assert_eq!(client_hello(&records(&huge, 16 * 1024)[..9]), Hello::TooLarge, "told by its header");
        // Tiny records: the headers alone would take more than the opening allows.
        let small = handshake(Some("crdemo.azurecr.io"), 8 * 1024);
        assert_eq!(client_hello(&records(&small, 1)), Hello::TooLarge);
    }

    #[test]
    fn a_hello_that_names_its_host_twice_or_badly_is_not_passed() {
        let mut twice = handshake(None, 0);
        let mut extensions = server_name_extension("crdemo.azurecr.io");
        extensions.extend(server_name_extension("evil.example"));
        let at = twice.len() - 2;
        twice.truncate(at);
        twice.extend((extensions.len() as u16).to_be_bytes());
        twice.extend(extensions);
        let length = (twice.len() - 4) as u32;
        twice[1..4].copy_from_slice(&length.to_be_bytes()[1..]);
        assert_eq!(client_hello(&records(&twice, twice.len())), Hello::NotTls);
        let alert = [21, 3, 3, 0, 2, 2, 40];
        assert_eq!(client_hello(&alert), Hello::NotTls, "an alert record first");
    }
}
