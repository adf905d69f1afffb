//! The codec of every generated client and server: prost's, with a smaller first buffer.
//!
//! tonic gives every stream an encode and a decode buffer of 8 KiB each, allocated when the
//! stream opens. A distributor holds one `AgentSync` stream per node, and nearly all it
//! carries are acknowledgements and heartbeats of a few hundred bytes: 16 KiB a stream was
//! most of the distributor's memory per idle agent (`seccomp-bench converge`). Buffers still
//! grow to the largest message they carry.

use std::marker::PhantomData;

use tonic::codec::{BufferSettings, Codec};
use tonic_prost::{ProstDecoder, ProstEncoder};

/// First size of each stream's buffers.
const BUFFER: usize = 1024;
/// tonic's default: how much an encoder buffers before it yields.
const YIELD: usize = 32 * 1024;

/// prost's codec with [`BUFFER`]-byte first buffers.
#[derive(Debug, Clone, Copy)]
pub struct SmallBuffers<T, U>(PhantomData<fn() -> (T, U)>);

impl<T, U> Default for SmallBuffers<T, U> {
    fn default() -> Self {
        SmallBuffers(PhantomData)
    }
}

impl<T, U> Codec for SmallBuffers<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(BufferSettings::new(BUFFER, YIELD))
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder::new(BufferSettings::new(BUFFER, YIELD))
    }
}
