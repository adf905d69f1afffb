//! The `AgentSync` service on the wire, by hand where tonic's generated server would copy:
//! a node's `Desired` is its set's files, encoded once per set and shared by every stream
//! that sends that set, behind a few bytes of its own (revision, nonce, the lengths).
//!
//! With tonic's generated server every stream encoded its whole message into a buffer of
//! its own: 10,000 nodes given a 13 KiB profile meant 10,000 copies in flight at once,
//! 460 MiB of fresh memory and a third of a first rollout's time in page faults
//! (`seccomp-bench converge`, `perf`). Here a stream's message is two chunks: its own
//! header (a few dozen bytes) and the set's encoded files, one reference-counted buffer per
//! set. The bytes on the wire are exactly what prost encodes for the whole message (a test
//! checks it), so agents decode it with the generated client as before.
//!
//! The request side (the agent's messages) and everything the stream does are those of
//! [`AgentSyncGrpc::open`].

use std::collections::HashMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};

use http_body::Frame;
use prost::Message as _;
use prost::bytes::{BufMut as _, Bytes, BytesMut};
use seccomp_proto::agent::v1 as agent;
use seccomp_rollout::fileset::EffectiveSet;
use tokio_stream::Stream;
use tonic::Status;
use tonic::codec::Streaming;
use tonic::server::NamedService;

use super::agent_sync::AgentSyncGrpc;
use super::convert::desired_files;
use crate::hub::{DesiredMsg, Outbound};

/// The one method.
const SYNC: &str = "/seccomp.agent.v1.AgentSync/Sync";

/// Largest message an agent may send (tonic's default).
const MAX_AGENT_MESSAGE: usize = 4 << 20;

/// The encoded files of every set being sent, by set (an `Arc<EffectiveSet>` is shared by
/// every node the fleet gave that set).
#[derive(Default)]
pub struct EncodedSets {
    sets: Mutex<HashMap<usize, (Weak<EffectiveSet>, Bytes)>>,
}

impl EncodedSets {
    /// The `files` fields of `set`'s `Desired`, encoded once.
    fn files(&self, set: &Arc<EffectiveSet>) -> Bytes {
        let key = Arc::as_ptr(set) as usize;
        let mut sets = self.sets.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((weak, bytes)) = sets.get(&key)
            && weak.upgrade().is_some_and(|s| Arc::ptr_eq(&s, set))
        {
            return bytes.clone();
        }
        let bytes = Bytes::from(
            agent::Desired {
                revision: String::new(),
                nonce: String::new(),
                files: desired_files(set),
            }
            .encode_to_vec(),
        );
        // Sets no node holds any more go (the map is only ever as large as the sets in use,
        // give or take the ones dropped since the last insert).
        if sets.len() >= 64 {
            sets.retain(|_, (weak, _)| weak.strong_count() > 0);
        }
        sets.insert(key, (Arc::downgrade(set), bytes.clone()));
        bytes
    }
}

/// One `DistributorMessage { desired }` as a gRPC frame: the header of this node's message
/// (the frame's prefix, the oneof's tag and length, revision and nonce) and the set's
/// shared encoded files.
fn frame(d: &DesiredMsg, sets: &EncodedSets) -> [Bytes; 2] {
    let files = sets.files(&d.set);
    let own = agent::Desired {
        revision: d.revision.clone(),
        nonce: d.nonce.clone(),
        files: Vec::new(),
    }
    .encode_to_vec();
    let desired_len = own.len() + files.len();
    // DistributorMessage: field 1 (desired), wire type 2 (length-delimited).
    let mut message_head = Vec::with_capacity(16);
    prost::encoding::encode_key(
        1,
        prost::encoding::WireType::LengthDelimited,
        &mut message_head,
    );
    prost::encoding::encode_varint(desired_len as u64, &mut message_head);
    let message_len = message_head.len() + desired_len;
    let mut head = BytesMut::with_capacity(5 + message_head.len() + own.len());
    // gRPC's length-prefixed message: not compressed, then the length.
    head.put_u8(0);
    head.put_u32(u32::try_from(message_len).unwrap_or(u32::MAX));
    head.put_slice(&message_head);
    head.put_slice(&own);
    [head.freeze(), files]
}

/// The response body of one agent stream: a frame per `Desired` the hub queues, then the
/// trailers (ABORTED when a newer stream replaced this one, OK when the session closed).
struct DesiredBody {
    out: Pin<Box<dyn Stream<Item = Option<Outbound>> + Send>>,
    replaced: String,
    sets: Arc<EncodedSets>,
    pending: Option<Bytes>,
    done: bool,
}

impl DesiredBody {
    fn trailers(status: &Status) -> Frame<Bytes> {
        let mut map = http::HeaderMap::new();
        if status.add_header(&mut map).is_err() {
            // The message did not fit a header: say only the code.
            let _ = Status::new(status.code(), "").add_header(&mut map);
        }
        Frame::trailers(map)
    }
}

impl http_body::Body for DesiredBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        if let Some(rest) = self.pending.take() {
            return Poll::Ready(Some(Ok(Frame::data(rest))));
        }
        if self.done {
            return Poll::Ready(None);
        }
        loop {
            let next = match self.out.as_mut().poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(next) => next,
            };
            match next {
                Some(Some(Outbound::Desired(d))) => {
                    let [head, files] = frame(&d, &self.sets);
                    self.pending = Some(files);
                    return Poll::Ready(Some(Ok(Frame::data(head))));
                }
                Some(Some(Outbound::Replaced)) => {
                    self.done = true;
                    let status = Status::aborted(format!(
                        "a newer stream for node \"{}\" replaced this one",
                        self.replaced
                    ));
                    return Poll::Ready(Some(Ok(Self::trailers(&status))));
                }
                Some(None) => continue,
                None => {
                    self.done = true;
                    return Poll::Ready(Some(Ok(Self::trailers(&Status::ok("")))));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.pending.is_none()
    }
}

/// `seccomp.agent.v1.AgentSync` as a tower service (in place of the generated server).
#[derive(Clone)]
pub struct AgentSyncService {
    inner: Arc<AgentSyncGrpc>,
    sets: Arc<EncodedSets>,
}

impl AgentSyncService {
    /// The service over `inner`.
    pub fn new(inner: AgentSyncGrpc) -> Self {
        AgentSyncService {
            inner: Arc::new(inner),
            sets: Arc::default(),
        }
    }
}

impl NamedService for AgentSyncService {
    const NAME: &'static str = seccomp_proto::agent::v1::agent_sync_server::SERVICE_NAME;
}

type Request = http::Request<tonic::body::Body>;
type Response = http::Response<tonic::body::Body>;

impl tower::Service<Request> for AgentSyncService {
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let inner = Arc::clone(&self.inner);
        let sets = Arc::clone(&self.sets);
        Box::pin(async move {
            if request.uri().path() != SYNC {
                return Ok(Status::unimplemented(format!(
                    "{} has no method {}",
                    AgentSyncService::NAME,
                    request.uri().path()
                ))
                .into_http());
            }
            let principal = request
                .extensions()
                .get::<seccomp_server::auth::Principal>()
                .cloned()
                .unwrap_or(seccomp_server::auth::Principal::Anonymous { claimed: None });
            // The generated code's codec (small first buffers), as the generated server used.
            let mut codec = seccomp_proto::codec::SmallBuffers::<
                agent::DistributorMessage,
                agent::AgentMessage,
            >::default();
            let incoming = Streaming::new_request(
                tonic::codec::Codec::decoder(&mut codec),
                request.into_body(),
                None,
                Some(MAX_AGENT_MESSAGE),
            );
            match inner.open(principal, incoming).await {
                Ok((out, node)) => {
                    let body = DesiredBody {
                        out,
                        replaced: node,
                        sets,
                        pending: None,
                        done: false,
                    };
                    let mut response = http::Response::new(tonic::body::Body::new(body));
                    response.headers_mut().insert(
                        http::header::CONTENT_TYPE,
                        http::HeaderValue::from_static("application/grpc"),
                    );
                    Ok(response)
                }
                Err(status) => Ok(status.into_http()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use seccomp_rollout::fileset::Fleet;
    use seccomp_rollout::nci::{self, ProfileRef, Target};

    fn set(content: &[u8], path: Option<&str>) -> Arc<EffectiveSet> {
        let mut target = Target::new(Default::default());
        if let Some(p) = path {
            target.path = Some(p.to_owned());
        }
        let nci = nci::render(
            ProfileRef {
                name: "web",
                version: 1,
                content,
            },
            &target,
            None,
            Some("r1"),
        )
        .unwrap();
        let fleet = Fleet::new(&[nci]).unwrap();
        Arc::new(fleet.effective_for("n1", &Default::default()))
    }

    #[test]
    fn a_frame_is_exactly_what_prost_encodes_for_the_whole_message() {
        let sets = EncodedSets::default();
        for s in [
            set(b"{\"defaultAction\":\"SCMP_ACT_LOG\"}", None),
            set(
                &vec![b' '; 200_000],
                Some("/var/lib/kubelet/seccomp/big.json"),
            ),
        ] {
            let d = DesiredMsg {
                revision: s.revision.clone(),
                nonce: "12345".into(),
                set: Arc::clone(&s),
            };
            let whole = agent::DistributorMessage {
                message: Some(agent::distributor_message::Message::Desired(
                    agent::Desired {
                        revision: d.revision.clone(),
                        nonce: d.nonce.clone(),
                        files: desired_files(&s),
                    },
                )),
            }
            .encode_to_vec();
            let [head, files] = frame(&d, &sets);
            let mut wire = head.to_vec();
            wire.extend_from_slice(&files);
            assert_eq!(wire[0], 0, "not compressed");
            assert_eq!(
                u32::from_be_bytes(wire[1..5].try_into().unwrap()) as usize,
                whole.len()
            );
            assert_eq!(&wire[5..], &whole[..]);
            // The same set again: the same shared bytes, not a new encoding.
            let [_, again] = frame(&d, &sets);
            assert_eq!(again.as_ptr(), files.as_ptr());
        }
    }
}
