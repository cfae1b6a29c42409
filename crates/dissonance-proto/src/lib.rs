//! dissonance-proto: the wire codec of Dissonance (the Unity voice-chat asset) on its own.
//! Decode and encode every message byte-exactly in both byte orders, compute room ids, and
//! sort room names as .NET does. No I/O and no dependencies; `dissonance-tools` builds the
//! capture, dissecting, printing and networking layers on top of it.

pub mod codec;
pub mod collate;
