//! `socketio` check against the reference Socket.IO server (npm `socket.io`, installed by
//! `scripts/test-deps/socketio.sh`).

mod check;
pub(crate) mod codec_corpus;
mod peer;
