//! The DNS a private deployment sees, answered from the workspace file alone: a private
//! endpoint's fqdn and aliases resolve to the guard's own address for that endpoint; any other
//! name is REFUSED, so no query carries data out. The guard never asks another resolver.
//!
//! [`answer`] is the decision; [`respond`] turns one DNS message into its reply; the servers
//! below carry them over UDP and TCP (a TCP connection takes one of the deployment's places
//! and is held to its time limits).

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

use crate::names;
use crate::scope::{Admitted, Limits};

/// Names and the guard address each resolves to (names canonical).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Zone {
    pub entries: Vec<(String, Ipv4Addr)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    Address(Ipv4Addr),
    /// The name exists but has no record of that type (AAAA, TXT, ...).
    NoData,
    Refused,
}

pub const TTL: u32 = 60;

pub fn answer(zone: &Zone, name: &str, kind: RecordType) -> Answer {
    let Some(name) = names::canonical(name) else { return Answer::Refused };
    match zone.entries.iter().find(|(n, _)| *n == name) {
        Some((_, ip)) if matches!(kind, RecordType::A | RecordType::ANY) => Answer::Address(*ip),
        Some(_) => Answer::NoData,
        None => Answer::Refused,
    }
}

/// One query as the decision log records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Asked {
    pub name: String,
    pub kind: RecordType,
    pub answer: Answer,
}

/// The reply to one DNS message, and what was asked (None for what is not a query).
pub fn respond(zone: &Zone, request: &[u8]) -> Option<(Vec<u8>, Asked)> {
    let request = Message::from_vec(request).ok()?;
    if request.metadata.message_type != MessageType::Query {
        return None;
    }
    let mut reply = Message::response(request.metadata.id, request.metadata.op_code);
    reply.metadata.recursion_desired = request.metadata.recursion_desired;
    reply.metadata.authoritative = true;
    let Some(query) = request.queries.first().cloned() else {
        reply.metadata.response_code = ResponseCode::FormErr;
        let asked = Asked { name: String::new(), kind: RecordType::Unknown(0), answer: Answer::Refused };
        return reply.to_vec().ok().map(|bytes| (bytes, asked));
    };
    let name = query.name().to_ascii();
    let kind = query.query_type();
    let decided = if request.metadata.op_code == OpCode::Query && request.queries.len() == 1 {
        answer(zone, &name, kind)
    } else {
        Answer::Refused
    };
    reply.add_query(query.clone());
    match decided {
        Answer::Address(ip) => {
            reply.add_answer(Record::from_rdata(query.name().clone(), TTL, RData::A(A(ip))));
        }
        Answer::NoData => {}
        Answer::Refused => reply.metadata.response_code = ResponseCode::Refused,
    }
    let bytes = reply.to_vec().ok()?;
    Some((bytes, Asked { name, kind, answer: decided }))
}

/// Told about every query: who asked, what, and the answer.
pub type OnQuery = Arc<dyn Fn(SocketAddr, &Asked) + Send + Sync>;

/// Serves UDP queries on `socket` until the task is dropped.
pub async fn serve_udp(socket: UdpSocket, zone: Arc<Zone>, on_query: OnQuery) {
    let mut buf = vec![0u8; 4096];
    loop {
        let Ok((n, from)) = socket.recv_from(&mut buf).await else { continue };
        if let Some((reply, asked)) = respond(&zone, &buf[..n]) {
            on_query(from, &asked);
            let _ = socket.send_to(&reply, from).await;
        }
    }
}

/// Takes a place for a connection from this address, or None when there is none.
pub type Admit = Arc<dyn Fn(SocketAddr) -> Option<Admitted> + Send + Sync>;

/// Serves TCP queries (length-prefixed) on `listener` until the task is dropped. Each message
/// must come whole within `limits.handshake`; a connection quiet for `limits.idle` between
/// them is closed.
pub async fn serve_tcp(
    listener: TcpListener,
    zone: Arc<Zone>,
    on_query: OnQuery,
    admit: Admit,
    limits: Limits,
) {
    loop {
        let (stream, from) = crate::sockets::accept(&listener).await;
        let Some(admitted) = admit(from) else { continue };
        let (zone, on_query) = (zone.clone(), on_query.clone());
        tokio::spawn(async move {
            queries(stream, from, &zone, &on_query, limits).await;
            drop(admitted);
        });
    }
}

async fn queries(mut stream: TcpStream, from: SocketAddr, zone: &Zone, on_query: &OnQuery, limits: Limits) {
    loop {
        let mut len = [0u8; 2];
        match tokio::time::timeout(limits.idle, stream.read_exact(&mut len[..1])).await {
            Ok(Ok(_)) => {}
            _ => return,
        }
        let mut message = Vec::new();
        let whole = async {
            stream.read_exact(&mut len[1..]).await?;
            message.resize(usize::from(u16::from_be_bytes(len)), 0);
            stream.read_exact(&mut message).await
        };
        if !matches!(tokio::time::timeout(limits.handshake, whole).await, Ok(Ok(_))) {
            return;
        }
        let Some((reply, asked)) = respond(zone, &message) else { return };
        on_query(from, &asked);
        let Ok(reply_len) = u16::try_from(reply.len()) else { return };
        let mut framed = reply_len.to_be_bytes().to_vec();
        framed.extend_from_slice(&reply);
        if !matches!(tokio::time::timeout(limits.handshake, stream.write_all(&framed)).await, Ok(Ok(()))) {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::Query;
    use hickory_proto::rr::Name;

    fn zone() -> Zone {
        Zone { entries: vec![("crdemo.azurecr.io".into(), Ipv4Addr::new(172, 20, 255, 254))] }
    }

    fn query(name: &str, kind: RecordType) -> Vec<u8> {
        let mut m = Message::query();
        m.metadata.id = 4242;
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(Name::from_ascii(name).expect("name"), kind));
        m.to_vec().expect("bytes")
    }

    #[test]
    fn an_endpoint_name_resolves_to_the_guard_in_any_case() {
        let (reply, asked) = respond(&zone(), &query("CRDemo.AzureCR.io.", RecordType::A)).expect("reply");
        assert_eq!(asked.answer, Answer::Address(Ipv4Addr::new(172, 20, 255, 254)));
        let reply = Message::from_vec(&reply).expect("message");
        assert_eq!((reply.metadata.id, reply.metadata.response_code), (4242, ResponseCode::NoError));
        assert_eq!(reply.answers.len(), 1);
    }

    #[test]
    fn other_names_are_refused_and_other_types_have_no_data() {
        for (name, kind, want) in [
            ("example.com.", RecordType::A, Answer::Refused),
            ("exfil-deadbeefcafebabe0123456789.attacker.example.", RecordType::TXT, Answer::Refused),
            ("crdemo.azurecr.io.attacker.example.", RecordType::A, Answer::Refused),
            ("crdemo.azurecr.io.", RecordType::AAAA, Answer::NoData),
            ("crdemo.azurecr.io.", RecordType::TXT, Answer::NoData),
        ] {
            let (reply, asked) = respond(&zone(), &query(name, kind)).expect("reply");
            assert_eq!(asked.answer, want, "{name} {kind}");
            let reply = Message::from_vec(&reply).expect("message");
            let code = if want == Answer::Refused { ResponseCode::Refused } else { ResponseCode::NoError };
            assert_eq!((reply.metadata.response_code, reply.answers.len()), (code, 0), "{name} {kind}");
        }
    }

    #[test]
    fn garbage_gets_no_reply() {
        assert!(respond(&zone(), b"\x00\x01garbage").is_none());
    }
}
