//! One file per message type: its fields, decode and encode side by side.

mod client_state;
mod delta_channel_state;
mod handshake;
mod relay;
mod simple;
mod text_data;
mod voice_data;

pub use client_state::{ClientState, RoomsEncoding};
pub use delta_channel_state::DeltaChannelState;
pub use handshake::{HandshakeRequest, HandshakeResponse, ResponseRoom};
pub use relay::{RelayVerdict, ServerRelay, ALWAYS_SEND};
pub use simple::{ErrorWrongSession, HandshakeP2P, RemoveClient};
pub use text_data::TextData;
pub use voice_data::VoiceData;
